"""Every CSV the product writes neutralises cells a spreadsheet would run as a formula."""

import csv
import io
from pathlib import Path

import pytest

from config.csv_stream import csv_lines


def _cells(lines) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(lines))))


@pytest.mark.parametrize("dangerous", ["=HYPERLINK(\"http://x\")", "+1+2", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_a_text_cell_that_starts_like_a_formula_is_quoted(dangerous):
    header, row = _cells(csv_lines(["raw"], [[dangerous]]))

    assert row == ["'" + dangerous]


def test_numbers_and_plain_text_are_unchanged():
    header, row = _cells(csv_lines(["a", "b", "c", "d"], [[-1.5, 3, "plain", ""]]))

    assert row == ["-1.5", "3", "plain", ""]


def test_every_csv_writer_in_the_product_goes_through_csv_stream():
    root = Path(__file__).resolve().parents[2]
    writers = [
        path.relative_to(root).as_posix()
        for folder in ("access", "config", "crm", "ingestion", "pipeline", "privacy", "profiles", "segments", "training")
        for path in (root / folder).rglob("*.py")
        if "csv.writer(" in path.read_text() or "csv.DictWriter(" in path.read_text()
    ]

    assert writers == ["config/csv_stream.py"]


@pytest.mark.django_db
def test_rejected_rows_download_neutralises_a_formula_in_the_raw_line():
    from ingestion.models import ImportJob, QuarantinedRow
    from ingestion.selectors import import_job_rejects_csv

    from ingestion.pseudonyms import pii_encrypt_bytes

    job = ImportJob.objects.create(source="default", format="csv")
    QuarantinedRow.objects.create(job=job, line_number=2, reason="bad",
                                  raw_encrypted=pii_encrypt_bytes(b'=cmd|" /C calc"!A0'))

    clear = _cells(import_job_rejects_csv(job=job, clear=True))  # Compliance
    masked = _cells(import_job_rejects_csv(job=job))  # Operators: letters and digits masked

    assert clear[1] == ["2", "bad", "'=cmd|\" /C calc\"!A0"]
    assert masked[1][2].startswith("'=")
