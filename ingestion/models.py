"""The raw store: customers, items, behavioural events, social edges, and the import ledger."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex, GinIndex
from django.db import models, transaction
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from ingestion.pseudonyms import pseudonym_key_id


class Customer(models.Model):
    """A shopper, known only by a keyed pseudonym of the source's external id; PII encrypted.
    `key_id` names the key of PSEUDONYM_KEYS the pseudonym was made under: a key stays in the ring
    while customers have it (their keys cannot be re-made without the external ids)."""

    # Unique through CustomerKey, not here: with customers sharded by id, a unique index on the key
    # alone could not be enforced across shards (every unique constraint holds the customer id).
    key = models.CharField(_("pseudonymous key"), max_length=64, db_index=True, help_text=_("HMAC-SHA256 of source and external id"))
    key_id = models.CharField(_("key id"), max_length=16, default=pseudonym_key_id,
                              help_text=_("The pseudonym key the key was made under"))
    source = models.CharField(_("source"), max_length=32)
    email_encrypted = models.BinaryField(null=True, editable=False)
    name_encrypted = models.BinaryField(null=True, editable=False)
    phone_encrypted = models.BinaryField(null=True, editable=False)
    age = models.PositiveSmallIntegerField(_("age"), null=True, blank=True)
    age_band = models.CharField(_("age band"), max_length=16, blank=True, db_default="")
    gender = models.CharField(_("gender"), max_length=16, blank=True, db_default="")
    region = models.CharField(_("region"), max_length=64, blank=True, db_default="")
    signup_date = models.DateField(_("signup date"), null=True, blank=True)
    is_loyalty_member = models.BooleanField(_("loyalty member"), default=False, db_default=False)
    consent_profiling = models.BooleanField(_("consents to profiling"), default=True, db_default=True)
    consent_marketing = models.BooleanField(_("consents to marketing"), default=False, db_default=False)
    attributes = models.JSONField(_("attributes"), default=dict, blank=True, db_default={})
    # no database constraint: a reference between two customers crosses shards (pipeline.sharding)
    merged_into = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="merged_identities", db_constraint=False,
        verbose_name=_("merged into"), help_text=_("Set while this identity's events belong to another customer"),
    )
    created_at = models.DateTimeField(_("created at"), db_default=Now(), editable=False)
    updated_at = models.DateTimeField(_("updated at"), db_default=Now(), editable=False)

    class Meta:
        verbose_name = _("customer")
        verbose_name_plural = _("customers")
        permissions = [("view_pii", _("Can see customers' personal data unmasked (every reveal is audited)"))]

    def __str__(self) -> str:
        return f"{self.source}:{self.key[:12]}"

    def save(self, *args, **kwargs):
        """A customer made one at a time (the admin, a test) gets its key lookup row with it; bulk
        paths create both in SQL (ingestion.bulk.customers_create)."""
        if not self._state.adding:
            return super().save(*args, **kwargs)
        with transaction.atomic(using=kwargs.get("using")):
            super().save(*args, **kwargs)
            CustomerKey.objects.using(kwargs.get("using")).create(key=self.key, customer=self)


class CustomerKey(models.Model):
    """The key → customer lookup that keeps a pseudonymous key unique when customers are sharded by
    id: its own table with the key as primary key (a table sharded by key in a Citus cluster), so
    finding or creating a customer by key touches one row, and two imports of the same new key
    create one customer."""

    key = models.CharField(_("pseudonymous key"), max_length=64, primary_key=True)
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, db_constraint=False, related_name="key_entries", verbose_name=_("customer")
    )

    class Meta:
        verbose_name = _("customer key")
        verbose_name_plural = _("customer keys")

    def __str__(self) -> str:
        return self.key[:12]


class Item(models.Model):
    sku = models.CharField(_("SKU"), max_length=128, unique=True)
    title = models.CharField(_("title"), max_length=500, blank=True, db_default="")
    category_path = models.CharField(_("category path"), max_length=255, blank=True, db_default="", help_text=_("Levels separated by '/'"))
    brand = models.CharField(_("brand"), max_length=128, blank=True, db_default="")
    price = models.DecimalField(_("price"), max_digits=12, decimal_places=2, null=True, blank=True)
    currency = models.CharField(_("currency"), max_length=3, blank=True, db_default="")
    attributes = models.JSONField(_("attributes"), default=dict, blank=True, db_default={})
    created_at = models.DateTimeField(_("created at"), db_default=Now(), editable=False)
    updated_at = models.DateTimeField(_("updated at"), db_default=Now(), editable=False)

    class Meta:
        verbose_name = _("item")
        verbose_name_plural = _("items")

    def __str__(self) -> str:
        return self.title or self.sku


class EventType(models.IntegerChoices):
    VIEW = 1, _("view")
    SEARCH = 2, _("search")
    CLICK = 3, _("click")
    ADD_TO_CART = 4, _("add to cart")
    REMOVE_FROM_CART = 5, _("remove from cart")
    PURCHASE = 6, _("purchase")
    REFUND = 7, _("refund")
    CANCEL = 8, _("cancel")
    RATING = 9, _("rating")
    SHARE = 10, _("share")


class EventFlag(models.IntegerChoices):
    """Bits of Event.flags: kept rows that cleaning found suspicious."""

    BOT_RATE = 1, _("events per minute above the bot threshold")
    PRICE_OUTLIER = 2, _("unit price outside the plausible range")


ARRIVAL_SEQUENCE = "ingestion_event_arrival_seq"
# the sequence steps by this much: one draw reserves a block of arrival numbers (migration 0011)
ARRIVAL_BLOCK = 1024
ARRIVAL_NEXT = models.Func(models.Value(ARRIVAL_SEQUENCE), function="nextval", output_field=models.BigIntegerField())


class Event(models.Model):
    """One behavioural event. `event_id` is deterministic so every re-import is idempotent.

    Sized for billions of rows, in the shape a Citus cluster shards (README "Scale-out"): the table
    is hash-partitioned by customer (EVENT_PARTITIONS partitions, fixed when the table is created)
    and its primary key, (customer_id, event_id), is the idempotency key: an event re-sent for the
    same customer is a duplicate, ids only need to be unique per customer. Each partition has a
    (customer, occurred_at) B-tree for per-customer time-ordered reads and a BRIN on the time for
    time-range scans. Django's state says `event_id` is the key (the admin cannot show models
    with a composite key in Django 5.2); migration 0010 made the database's.
    """

    event_id = models.UUIDField(primary_key=True)
    # No database-level foreign keys on this table: per-row RI triggers cost more than the whole
    # merge (measured, README "Storage"). The import resolves customers and items first, so every reference
    # exists when written; the ORM still cascades deletes, raw SQL must remove events first.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, db_index=False, db_constraint=False, related_name="events"
    )
    item = models.ForeignKey(
        Item, on_delete=models.PROTECT, null=True, blank=True, db_index=False, db_constraint=False, related_name="events"
    )
    event_type = models.PositiveSmallIntegerField(_("type"), choices=EventType.choices)
    occurred_at = models.DateTimeField(_("occurred at"))
    quantity = models.IntegerField(_("quantity"), default=1)
    value = models.DecimalField(_("value"), max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(_("currency"), max_length=3, blank=True)
    rating = models.FloatField(_("rating"), null=True, blank=True)
    session_id = models.CharField(_("session"), max_length=64, blank=True)
    channel = models.CharField(_("channel"), max_length=16, blank=True)
    device = models.CharField(_("device"), max_length=16, blank=True)
    order_id = models.CharField(_("order id"), max_length=64, blank=True)
    context = models.JSONField(_("context"), null=True, blank=True)
    flags = models.PositiveSmallIntegerField(_("flags"), default=0)
    import_job = models.ForeignKey(
        "ImportJob", on_delete=models.SET_NULL, null=True, blank=True, db_index=False, db_constraint=False
    )
    ingested_at = models.DateTimeField(_("ingested at"), db_default=Now(), editable=False)
    # Arrival order, from a database sequence: the bulk import draws it in file-line order and the
    # API in batch order, so events at the same instant keep the order they came in (the training
    # read orders by customer, time, arrival). Moving an event between customers keeps it.
    arrival = models.BigIntegerField(_("arrival"), db_default=ARRIVAL_NEXT, editable=False)

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        indexes = [
            models.Index(fields=["customer", "occurred_at"], name="event_customer_time"),
            BrinIndex(fields=["occurred_at"], name="event_time_brin"),
        ]


class SocialRelation(models.IntegerChoices):
    FOLLOW = 1, _("follows")
    REFERRAL = 2, _("referred")
    SHARE = 3, _("shared with")


class SocialEdge(models.Model):
    """Sharded with its source customer: the database's primary key is (source_customer_id, id)
    (migration 0010), and the target's reference has no database constraint (it crosses shards)."""

    source_customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="edges_out")
    target_customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="edges_in", db_constraint=False)
    relation = models.PositiveSmallIntegerField(_("relation"), choices=SocialRelation.choices)
    occurred_at = models.DateTimeField(_("occurred at"), null=True, blank=True)
    weight = models.FloatField(_("weight"), default=1.0)

    class Meta:
        verbose_name = _("social edge")
        verbose_name_plural = _("social edges")
        constraints = [
            models.UniqueConstraint(fields=["source_customer", "target_customer", "relation"], name="socialedge_unique"),
            models.CheckConstraint(condition=~models.Q(source_customer=models.F("target_customer")), name="socialedge_not_self"),
        ]


class ImportStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    RUNNING = "running", _("running")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")


class ImportFormat(models.TextChoices):
    CSV = "csv", _("CSV with column mapping")
    JSONL = "jsonl", _("JSON lines with column mapping")
    PARQUET = "parquet", _("Parquet with column mapping")
    CDNOW = "cdnow", _("CDNOW transactions")
    MOVIELENS = "movielens", _("MovieLens (atomic .inter/.user/.item or u.data/u.user/u.item)")
    SYNTHETIC = "synthetic", _("Synthetic generator")
    API = "api", _("REST API batch")


class ImportJob(models.Model):
    """One run of an import: what came in, what landed, what was refused and why."""

    source = models.CharField(_("source"), max_length=32, help_text=_("Namespace of the external ids"))
    format = models.CharField(_("format"), max_length=16, choices=ImportFormat.choices)
    file_path = models.CharField(_("file"), max_length=1024, blank=True)
    options = models.JSONField(_("options"), default=dict, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=ImportStatus.choices, default=ImportStatus.PENDING)
    rows_read = models.BigIntegerField(_("rows read"), default=0)
    rows_inserted = models.BigIntegerField(_("rows inserted"), default=0)
    rows_duplicate = models.BigIntegerField(_("duplicates"), default=0)
    rows_rejected = models.BigIntegerField(_("rejected"), default=0)
    rows_flagged = models.BigIntegerField(_("flagged"), default=0)
    rows_removed = models.BigIntegerField(_("removed by cleaning"), default=0)
    progress_total = models.BigIntegerField(_("work total"), default=0, help_text=_("Bytes for files, events for the generator"))
    progress_done = models.BigIntegerField(_("work done"), default=0)
    report = models.JSONField(_("cleaning report"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, verbose_name=_("created by")
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last progress at"), null=True, blank=True)

    class Meta:
        verbose_name = _("import job")
        verbose_name_plural = _("import jobs")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.format} {self.file_path or self.source}"

    @property
    def progress(self) -> float:
        return min(1.0, self.progress_done / self.progress_total) if self.progress_total else 0.0

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class ImportChunk(models.Model):
    """A chunk of an import file, recorded in the transaction that stored its events, quarantined
    rows and counts: a job resumed after its worker or database went away skips the chunks it finds
    here (same number, same lines) instead of storing them again."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="chunks")
    number = models.PositiveIntegerField(_("chunk"))
    last_line = models.BigIntegerField(_("last line"))
    lines = models.PositiveIntegerField(_("lines"))
    report = models.JSONField(_("counts"), default=dict)
    committed_at = models.DateTimeField(_("committed at"), auto_now_add=True)

    class Meta:
        verbose_name = _("import chunk")
        verbose_name_plural = _("import chunks")
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="import_chunk_once")]


class QuarantinedRow(models.Model):
    """A row an import refused, with its line number and the reason. The row itself can hold
    personal data, so it is kept only encrypted under the PII key (clear for Compliance alone) and
    only for QUARANTINE_RETENTION_DAYS; `subject_tokens` are the customer tokens (as on the
    suppression list) of the subjects the row names, by which erasure finds it."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="quarantined_rows")
    line_number = models.BigIntegerField(_("line"))
    raw_encrypted = models.BinaryField(editable=False)
    subject_tokens = ArrayField(models.CharField(max_length=64), default=list, blank=True, editable=False)
    reason = models.TextField(_("reason"))
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("quarantined row")
        verbose_name_plural = _("quarantined rows")
        ordering = ["job", "line_number"]
        indexes = [GinIndex(fields=["subject_tokens"], name="quarantinedrow_subjects")]

    def __str__(self) -> str:
        return f"#{self.job_id}:{self.line_number}"


class RefreshOutbox(models.Model):
    """Customers whose new events (or attributes) still owe a profile refresh: written in the same
    transaction as the events, deleted once the refresh is on the broker. A batch stored while the
    broker (Redis) is away stays here until a drain queues it (profiles.tasks.refresh_outbox_queue:
    the next batch, the worker's start, Celery beat)."""

    customer_ids = ArrayField(models.BigIntegerField(), verbose_name=_("customers"))
    bulk = models.BooleanField(_("bulk"), default=False, help_text=_("Came from a file import"))
    created_at = models.DateTimeField(_("created at"), db_default=Now(), editable=False, db_index=True)
    attempts = models.PositiveIntegerField(_("failed attempts to queue"), default=0)
    last_error = models.TextField(_("last error"), blank=True, db_default="")

    class Meta:
        verbose_name = _("refresh outbox entry")
        verbose_name_plural = _("refresh outbox")
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"#{self.pk} ({len(self.customer_ids)})"


class CustomerGroundTruth(models.Model):
    """What the synthetic generator made a customer be, so tests can check profiles recover it."""

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, primary_key=True, related_name="ground_truth")
    segment = models.CharField(_("latent segment"), max_length=32)
    churned_at = models.DateTimeField(_("churned at"), null=True, blank=True)
    parameters = models.JSONField(_("parameters"), default=dict)

    class Meta:
        verbose_name = _("synthetic ground truth")
        verbose_name_plural = _("synthetic ground truth")
