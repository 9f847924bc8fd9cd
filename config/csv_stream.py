"""CSV for downloads: one encoded line per row, so a StreamingHttpResponse never holds the whole
file, and no cell a spreadsheet would run as a formula. Every CSV the product writes goes through
csv_lines (tests/config/test_csv_injection.py)."""

import csv
from collections.abc import Iterable, Iterator

# Spreadsheets evaluate a cell that starts with one of these (OWASP "CSV Injection"); tab and carriage
# return can hide the formula character after them.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Line:
    """A file-like object whose write returns the line instead of storing it."""

    def write(self, value: str) -> str:
        return value


def csv_cell_safe(value):
    """`value`, with a leading apostrophe if it is text a spreadsheet would take for a formula.
    Numbers stay numbers: a negative amount is data, not a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_lines(header: list[str], rows: Iterable) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow([csv_cell_safe(cell) for cell in header])
    for row in rows:
        yield writer.writerow([csv_cell_safe(cell) for cell in row])
