"""DATABASE_REPLICA_URLS becomes one read-only database alias per replica; without it there is only
the primary and the router sends everything there."""

import json
import subprocess
import sys

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

from config.db_router import ReplicaRouter, replica_choose

PRINT_DATABASES = (
    "import django, json; django.setup(); from django.conf import settings; "
    "print(json.dumps({'replicas': settings.DATABASE_REPLICAS, 'max_lag': settings.DATABASE_REPLICA_MAX_LAG_S, "
    "'databases': {a: {k: d[k] for k in ('HOST', 'PORT', 'NAME', 'OPTIONS', 'TEST')} for a, d in settings.DATABASES.items()"
    " if a != 'default'}}))"
)


def _settings_with(**env) -> dict:
    import os

    result = subprocess.run([sys.executable, "-c", PRINT_DATABASES], cwd=settings.BASE_DIR,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_each_replica_url_is_a_read_only_alias_that_tests_mirror_to_the_primary():
    loaded = _settings_with(DATABASE_REPLICA_URLS="postgres://u@10.0.0.2:5433/portrait,postgres://u@10.0.0.3/portrait",
                            DATABASE_REPLICA_MAX_LAG_S="2.5")

    assert loaded["replicas"] == ["replica1", "replica2"] and loaded["max_lag"] == 2.5
    first, second = loaded["databases"]["replica1"], loaded["databases"]["replica2"]
    assert (first["HOST"], first["PORT"], first["NAME"]) == ("10.0.0.2", 5433, "portrait")
    assert second["HOST"] == "10.0.0.3"
    for replica in (first, second):
        assert replica["OPTIONS"]["options"] == "-c default_transaction_read_only=on"
        assert replica["OPTIONS"]["connect_timeout"] == 2
        assert replica["TEST"]["MIRROR"] == "default"  # a test run creates no database on a replica


def test_without_replicas_everything_reads_and_writes_the_primary_and_migrates_there_only():
    assert _settings_with(DATABASE_REPLICA_URLS="")["replicas"] == []
    router = ReplicaRouter()

    assert settings.DATABASE_REPLICAS == []
    assert replica_choose(client="token:1") == (None, "no replica configured")
    assert router.db_for_read(object) == router.db_for_write(None) == DEFAULT_DB_ALIAS
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "profiles") and not router.allow_migrate("replica1", "profiles")
