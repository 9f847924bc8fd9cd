"""Pseudonymous customer keys (keyed HMAC-SHA256 under the PSEUDONYM_KEYS ring) and encryption of PII
at rest (Fernet)."""

import base64
import hashlib
import hmac
import os
import struct
import time
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


@cache
def _fernet() -> MultiFernet:
    # MultiFernet encrypts with the first key and decrypts with any: keys rotate without downtime.
    return MultiFernet([Fernet(k.encode()) for k in settings.PII_ENCRYPTION_KEYS])


def anonymous_source(source: str) -> str:
    """The namespace of a source's anonymous visitors: an anonymous id is never the same customer
    as a known external id that happens to be spelled alike."""
    return f"{source}:anonymous"


def pseudonym_key_id() -> str:
    """The id of the newest pseudonym key, the one new customers' keys are made under."""
    return settings.PSEUDONYM_KEYS[0][0]


def pseudonym_key_ids() -> list[str]:
    return [key_id for key_id, _ in settings.PSEUDONYM_KEYS]


def _hmac(secret: str, source: str, external_id: str) -> str:
    return hmac.new(secret.encode(), f"{source}\x1f{external_id}".encode(), hashlib.sha256).hexdigest()


def customer_key(*, source: str, external_id: str) -> str:
    """The customer's pseudonym under the newest key of PSEUDONYM_KEYS: stable per (source
    namespace, external id), not reversible. The key a new customer gets; a customer made under an
    older key keeps its key (apps hold it), so a lookup by external id tries `customer_keys`.

    Deliberately not memoised per process: such a cache would keep raw external ids, an erased
    subject's among them, for the life of every worker. An import resolves each customer once per
    job (ingestion.bulk.ReferenceIds), which keeps the HMAC off the hot path."""
    return _hmac(settings.PSEUDONYM_KEYS[0][1], source, external_id)


def customer_keys(*, source: str, external_id: str) -> list[str]:
    """The pseudonym under every key of the ring, newest first: a stored customer has one of them."""
    return [_hmac(secret, source, external_id) for _, secret in settings.PSEUDONYM_KEYS]


def pii_encrypt(value: str | None) -> bytes | None:
    if value is None or value == "":
        return None
    return _fernet().encrypt(value.encode())


def pii_decrypt(token: bytes | memoryview | None) -> str | None:
    if token is None:
        return None
    return _fernet().decrypt(bytes(token)).decode()


def pii_encrypt_bytes(data: bytes) -> bytes:
    """A whole file's bytes under the PII key (access exports at rest)."""
    return _fernet().encrypt(data)


def pii_encrypt_many(values: list[bytes]) -> list[bytes]:
    """Each value encrypted under the newest PII key, as `pii_encrypt_bytes` would: one standard
    Fernet token per value (github.com/fernet/spec: 0x80, time, a random IV, AES-128-CBC with PKCS7
    padding, HMAC-SHA256, URL-safe base64), which any Fernet decrypts.

    Made for the thousands of rejected rows of one import chunk, where Fernet.encrypt costs ~40 µs a
    row, most of it building a new cipher context per token. Here CBC runs across all the values
    at once: values of the same length in blocks form a matrix, and block j of every value is
    C_j = AES(P_j xor C_(j-1)) (C_0 the value's own IV) with one AES-ECB context over the whole
    column. That is exactly CBC, value by value (tests compare it with the library's CBC mode);
    only the order in which blocks go through AES differs."""
    import numpy as np
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if not values:
        return []
    key = base64.urlsafe_b64decode(settings.PII_ENCRYPTION_KEYS[0])
    signing_key, encryption_key = key[:16], key[16:]
    header = b"\x80" + struct.pack(">Q", int(time.time()))
    ivs = os.urandom(16 * len(values))
    blocks_of = [len(v) // 16 + 1 for v in values]  # PKCS7 always adds 1..16 bytes
    groups: dict[int, list[int]] = {}
    for index, blocks in enumerate(blocks_of):
        groups.setdefault(blocks, []).append(index)
    aes = Cipher(algorithms.AES(encryption_key), modes.ECB()).encryptor()  # noqa: S305 (CBC built on it, see above)
    tokens: list[bytes] = [b""] * len(values)
    for blocks, members in groups.items():
        padded = b"".join(values[i] + bytes((16 * blocks - len(values[i]),)) * (16 * blocks - len(values[i]))
                          for i in members)
        plain = np.frombuffer(padded, dtype=np.uint8).reshape(len(members), blocks, 16)
        previous = np.frombuffer(b"".join(ivs[16 * i:16 * i + 16] for i in members), dtype=np.uint8).reshape(-1, 16)
        cipher = np.empty_like(plain)
        for j in range(blocks):
            previous = np.frombuffer(aes.update(np.bitwise_xor(plain[:, j, :], previous).tobytes()),
                                     dtype=np.uint8).reshape(-1, 16)
            cipher[:, j, :] = previous
        for row, i in enumerate(members):
            parts = header + ivs[16 * i:16 * i + 16] + cipher[row].tobytes()
            tokens[i] = base64.urlsafe_b64encode(parts + hmac.digest(signing_key, parts, "sha256"))
    aes.finalize()
    return tokens


def pii_decrypt_bytes(token: bytes) -> bytes:
    return _fernet().decrypt(token)


def pii_rotate(token: bytes | memoryview) -> bytes:
    """The token re-encrypted under the newest key. A token already under the newest key comes back
    unchanged, so a rotation that is run again (or resumed) rewrites nothing."""
    token = bytes(token)
    try:
        Fernet(settings.PII_ENCRYPTION_KEYS[0].encode()).decrypt(token)
        return token
    except InvalidToken:
        return _fernet().rotate(token)
