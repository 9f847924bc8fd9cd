"""CSV for streamed downloads: one encoded line per row, so a StreamingHttpResponse never holds
the whole file."""

import csv
from collections.abc import Iterable, Iterator


class _Line:
    """A file-like object whose write returns the line instead of storing it."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow(row)
