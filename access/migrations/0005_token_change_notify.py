"""Every change to access_apitoken but a new token or a new stamp of use, whoever makes it, notifies the channel on which each web process
listens to drop its cached tokens (access.token_cache)."""

from django.db import migrations

from access.token_cache import CHANNEL

NOTIFY = f"""
CREATE FUNCTION portrait_api_token_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END
$$;
-- the stamp of use every request may refresh (once a minute) changes nothing a cached token answers
CREATE TRIGGER access_apitoken_changed AFTER UPDATE ON access_apitoken FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'last_used_at') IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at'))
    EXECUTE FUNCTION portrait_api_token_changed();
CREATE TRIGGER access_apitoken_removed AFTER DELETE OR TRUNCATE ON access_apitoken
    FOR EACH STATEMENT EXECUTE FUNCTION portrait_api_token_changed();
"""
DROP = """
DROP TRIGGER IF EXISTS access_apitoken_changed ON access_apitoken;
DROP TRIGGER IF EXISTS access_apitoken_removed ON access_apitoken;
DROP FUNCTION IF EXISTS portrait_api_token_changed();
"""


class Migration(migrations.Migration):
    dependencies = [("access", "0004_privacy_budget")]

    operations = [migrations.RunSQL(NOTIFY, DROP)]
