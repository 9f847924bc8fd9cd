"""Rejected rows are encrypted and written a chunk at a time: the batch encryption makes standard
Fernet tokens (exactly AES-CBC under each token's IV), and the COPY keeps every row, reason and
subject token intact, whatever characters they hold."""

import base64
import csv

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.conf import settings

from ingestion.import_jobs import import_job_create, import_job_run
from ingestion.models import QuarantinedRow
from ingestion.pseudonyms import customer_key, pii_decrypt, pii_decrypt_bytes, pii_encrypt_many
from privacy.suppression_tokens import customer_suppression_token

VALUES = [b"", b"x", b"a" * 15, b"b" * 16, b"c" * 17, "1001,男,是,\t\\,\n".encode(), bytes(range(256)) * 4]


def test_batch_encryption_makes_fernet_tokens_that_are_exactly_aes_cbc():
    tokens = pii_encrypt_many(VALUES)

    assert [pii_decrypt_bytes(t) for t in tokens] == VALUES
    key = base64.urlsafe_b64decode(settings.PII_ENCRYPTION_KEYS[0])
    for value, token in zip(VALUES, tokens, strict=True):
        raw = base64.urlsafe_b64decode(token)
        assert raw[0] == 0x80
        iv, ciphertext = raw[9:25], raw[25:-32]
        pad = 16 - len(value) % 16
        reference = Cipher(algorithms.AES(key[16:]), modes.CBC(iv)).encryptor()
        assert ciphertext == reference.update(value + bytes((pad,)) * pad) + reference.finalize()
    assert len({base64.urlsafe_b64decode(t)[9:25] for t in tokens}) == len(VALUES)  # a fresh IV each
    assert pii_encrypt_many([]) == []


@pytest.mark.django_db(transaction=True)
def test_a_file_whose_every_line_is_bad_is_quarantined_whole_with_reasons_and_subjects(tmp_path):
    path = tmp_path / "orders.csv"
    rows = [[f"c{n % 7}", "2025-03-01T10:00:00Z", "teleport" if n % 2 else "a\tb\\c"] for n in range(3000)]
    rows.append(["", "2025-03-01T10:00:00Z", "view"])  # names nobody: no subject token
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "timestamp", "status"])
        writer.writerows(rows)

    job = import_job_run(job_id=import_job_create(path=path, fmt="csv", source="shop", options={
        "mapping": {"event_type": "status"}, "value_maps": {"event_type": {"view": "view", "teleport": "teleport"}},
    }).pk)

    assert (job.rows_read, job.rows_inserted, job.rows_rejected) == (3001, 0, 3001)
    stored = {q.line_number: q for q in QuarantinedRow.objects.filter(job=job)}
    assert len(stored) == 3001
    assert stored[2].reason == "event_type: 'a\\tb\\\\c' is not in the value map"
    assert pii_decrypt(stored[2].raw_encrypted) == "c0,2025-03-01T10:00:00Z,a\tb\\c"
    assert stored[3].reason == "event_type: unknown type"
    token = customer_suppression_token(customer_key=customer_key(source="shop", external_id="c1"))
    assert stored[3].subject_tokens == [token]
    assert stored[3002].subject_tokens == [] and stored[3002].reason.startswith("customer_id: required")
