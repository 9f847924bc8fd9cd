"""Event ids: deterministic UUIDs, so a re-sent event or a re-imported line is recognised as the one
already stored. The client's id when it is a UUID; else uuid5 of the source and the client's id;
else a time-ordered UUIDv8 of the source's natural key or the file and line (ingestion.cleaning
decides which)."""

import binascii
import hashlib
import uuid

import numpy as np
import pandas as pd

EVENT_NAMESPACE = uuid.UUID("5b0c3c1e-6f7a-4d8e-9a51-3f1e2d4c5b6a")

UUID_PATTERN = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


def _hex_ids(raw: np.ndarray) -> np.ndarray:
    """(n, 16) uint8 → n UUIDs as 32 lowercase hex digits (a form PostgreSQL's uuid accepts)."""
    text = binascii.hexlify(np.ascontiguousarray(raw).tobytes())
    return np.frombuffer(text, dtype="S32").astype("U32").astype(object)


def _sha1_prefixes(names, length: int, prefix: bytes = b"") -> np.ndarray:
    joined = b"".join(hashlib.sha1(prefix + name.encode()).digest()[:length] for name in names)
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, length)


def uuid5_hex(names) -> np.ndarray:
    """RFC 4122 uuid5 in EVENT_NAMESPACE, vectorised after hashing."""
    raw = _sha1_prefixes(names, 16, prefix=EVENT_NAMESPACE.bytes).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return _hex_ids(raw)


def time_ordered_hex(names, occurred_at: pd.Series) -> np.ndarray:
    """Derived ids as RFC 9562 UUIDv8: 48-bit Unix milliseconds, then SHA-1 bits of the name.
    Deterministic like uuid5, but time-ordered like UUIDv7, so primary-key inserts of time-ordered
    files land on neighbouring index pages instead of random ones."""
    millis = (occurred_at.astype("int64").to_numpy() // 1000).clip(0, (1 << 48) - 1).astype(">u8")
    raw = np.empty((len(millis), 16), dtype=np.uint8)
    raw[:, :6] = millis.view(np.uint8).reshape(-1, 8)[:, 2:]
    raw[:, 6:] = _sha1_prefixes(names, 10)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x80
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return _hex_ids(raw)
