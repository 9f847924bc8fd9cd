"""Which tables a Citus cluster shards by customer, which it copies to every node, and which stay
on the coordinator (README "Scale-out", docs/scale-out.md). The shape test checks the schema
against these lists; `manage.py citus_distribute` applies them."""

# table → its distribution column: every row belongs to one customer, every unique constraint
# holds that column, and it never changes in place (a trigger refuses it on a single node)
CUSTOMER_KEYED = {
    "ingestion_customer": "id",
    "ingestion_event": "customer_id",
    "ingestion_socialedge": "source_customer_id",
    "ingestion_customergroundtruth": "customer_id",
    "profiles_profile": "customer_id",
    "profiles_customervalue": "customer_id",
    "crm_customerprediction": "customer_id",
    "segments_segmentmembership": "customer_id",
}

# the key → customer lookup: sharded by the key itself (its own co-location group), so finding a
# customer by pseudonymous key is one shard's primary-key read
KEY_LOOKUP = {"ingestion_customerkey": "key"}

# small tables the customer-keyed ones join or reference: a copy on every node
REFERENCE = (
    "ingestion_item",
    "profiles_featureset",
    "training_trainingrun",
    "training_modelversion",
    "training_itemembedding",
    "crm_clvfit",
    "segments_segment",
)
