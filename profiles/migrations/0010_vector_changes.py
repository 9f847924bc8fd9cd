"""The log of profile vector changes that each process's in-memory similarity graph follows
(profiles.memory_search): one row per profile whose vectors, feature set or model version changed
(inserted, updated, deleted), with the id of the transaction that changed it. Written by triggers,
so every path that writes profiles (builds, refreshes, merges, erasure, the admin, raw SQL) is
logged in the same transaction as its change, or not at all.

The vectors are compared as text: a dump prints the trigger's condition without naming the schema
of pgvector's `=` operator, and a restore (search_path empty) could not find it
(tests/privacy/test_backup_restore.py); text's operators are always found."""

from django.db import migrations

FORWARD = """
CREATE TABLE profiles_vectorchange (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    logged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profiles_vectorchange_xid ON profiles_vectorchange (xid);
CREATE INDEX profiles_vectorchange_logged_at ON profiles_vectorchange (logged_at);

CREATE FUNCTION profiles_vector_change_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO profiles_vectorchange (customer_id) VALUES (OLD.customer_id);
    ELSE
        INSERT INTO profiles_vectorchange (customer_id) VALUES (NEW.customer_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER profiles_profile_vectors_inserted AFTER INSERT ON profiles_profile
    FOR EACH ROW EXECUTE FUNCTION profiles_vector_change_log();
CREATE TRIGGER profiles_profile_vectors_updated AFTER UPDATE ON profiles_profile
    FOR EACH ROW WHEN (
        OLD.feature_vector::text IS DISTINCT FROM NEW.feature_vector::text
        OR OLD.embedding::text IS DISTINCT FROM NEW.embedding::text
        OR OLD.fused::text IS DISTINCT FROM NEW.fused::text
        OR OLD.feature_set_id IS DISTINCT FROM NEW.feature_set_id
        OR OLD.model_version_id IS DISTINCT FROM NEW.model_version_id
    ) EXECUTE FUNCTION profiles_vector_change_log();
CREATE TRIGGER profiles_profile_vectors_deleted AFTER DELETE ON profiles_profile
    FOR EACH ROW EXECUTE FUNCTION profiles_vector_change_log();
"""

BACKWARD = """
DROP TRIGGER profiles_profile_vectors_deleted ON profiles_profile;
DROP TRIGGER profiles_profile_vectors_updated ON profiles_profile;
DROP TRIGGER profiles_profile_vectors_inserted ON profiles_profile;
DROP FUNCTION profiles_vector_change_log();
DROP TABLE profiles_vectorchange;
"""


class Migration(migrations.Migration):
    dependencies = [("profiles", "0009_hnsw_ef_construction_128")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
