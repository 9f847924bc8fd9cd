"""Where an erased subject could still be named: every database column of a text, JSON, bytes, array
or extension type (ciphertext decrypted before it is searched, a zip's members opened), Redis keys
and values in the broker and cache databases, files under media and models, and the in-process
pseudonym caches."""

import inspect
import io
import zipfile
from pathlib import Path

import redis
from cryptography.fernet import InvalidToken
from django.db import connection

from config.celery import app as celery_app
from ingestion import pseudonyms
from ingestion.pseudonyms import pii_decrypt_bytes


def _decrypted(data: bytes) -> bytes | None:
    """The plaintext when `data` is a Fernet token under the PII keys, else None."""
    try:
        return pii_decrypt_bytes(data)
    except (InvalidToken, ValueError, TypeError):
        return None


def _clear(data: bytes) -> bytes:
    """The bytes as stored, decrypted too when they are ciphertext, and a zip's members
    uncompressed (an access export is both)."""
    plain = _decrypted(data)
    found = data if plain is None else data + b"\n" + plain
    opened = plain if plain is not None else data
    if opened.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(opened)) as archive:
            found += b"".join(archive.read(name) for name in archive.namelist())
    return found


def _redis_values(client: redis.Redis, key: bytes) -> list[bytes]:
    kind = client.type(key)
    if kind == b"string":
        return [client.get(key) or b""]
    if kind == b"list":
        return client.lrange(key, 0, -1)
    if kind == b"hash":
        return list(client.hgetall(key).values())
    if kind == b"set":
        return list(client.smembers(key))
    return []


def residue_found(needles: list[str], settings) -> list[str]:
    """Every place any needle still appears."""
    found = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                       "WHERE table_schema = 'public' AND data_type IN "
                       "('text', 'character varying', 'json', 'jsonb', 'bytea', 'ARRAY', 'USER-DEFINED')")
        for table, column, data_type in cursor.fetchall():
            expression = f'"{column}"' if data_type == "bytea" else f'convert_to("{column}"::text, \'UTF8\')'
            cursor.execute(f'SELECT {expression} FROM "{table}" WHERE "{column}" IS NOT NULL')  # noqa: S608
            for (value,) in cursor.fetchall():
                text = _clear(bytes(value))
                found += [f"{table}.{column}: {n}" for n in needles if n.encode() in text]
    for url in {celery_app.conf.broker_url, settings.CACHES["default"]["LOCATION"]}:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter():
            values = [key, *_redis_values(client, key)]
            found += [f"redis {key!r}: {n}" for n in needles if any(n.encode() in v for v in values)]
    for root in (Path(settings.MEDIA_ROOT), Path(settings.MODELS_DIR)):
        for path in root.rglob("*"):
            if path.is_file():
                found += [f"{path}: {n}" for n in needles if n.encode() in _clear(path.read_bytes())]
    memoised = [name for name, function in vars(pseudonyms).items()
                if hasattr(function, "cache_info") and inspect.signature(function).parameters
                and function.cache_info().currsize]
    found += [f"in-process cache ingestion.pseudonyms.{name}" for name in memoised]
    return found
