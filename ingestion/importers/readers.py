"""Streaming readers: a file in, chunks of raw string columns out, in constant memory.

Every chunk carries each row's line number in the file (`_line`) and the lines that could not be
split into fields at all (`malformed`), so that nothing is dropped without a trace. Line numbers
count records: CSV values containing newlines are not supported and surface as malformed lines.
"""

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingestion.cleaning import RowError

BLOCK_BYTES = 4 * 1024 * 1024


@dataclass
class SourceChunk:
    frame: pd.DataFrame  # the source's own columns, as strings, plus `_line`
    bytes_done: int
    malformed: list[RowError] = field(default_factory=list)
    blank_lines: int = 0
    raw_lines: list[str] | None = None  # verbatim text per row where the reader has it
    delimiter: str = ","

    def raw(self, positions) -> list[str]:
        if self.raw_lines is not None:
            return [self.raw_lines[p] for p in positions]
        columns = [c for c in self.frame.columns if c != "_line"]
        if not columns or not len(positions):
            return [""] * len(positions)
        rows = self.frame.iloc[np.asarray(positions, dtype=np.int64)]
        texts = [rows[c].astype("str").where(rows[c].notna(), "").reset_index(drop=True) for c in columns]
        return texts[0].str.cat(texts[1:], sep=self.delimiter).tolist() if len(texts) > 1 else texts[0].tolist()


class Utf8LineGuard(io.RawIOBase):
    """A binary file that passes valid UTF-8 through unchanged and replaces each line that is not
    valid UTF-8 with its U+FFFD-substituted text, remembering the line so the reader can quarantine
    it (a CSV from a GBK system should lose one line, not the whole import). Reads end on line
    boundaries, so line numbers stay exact."""

    def __init__(self, handle):
        super().__init__()
        self._handle = handle
        self._next_line = 1
        self.bad_lines: dict[int, str] = {}

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._handle.tell()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size) if size and size > 0 else self._handle.read()
        if data and not data.endswith(b"\n"):
            data += self._handle.readline()
        first_line = self._next_line
        self._next_line += data.count(b"\n")
        try:
            data.decode("utf-8")
            return data
        except UnicodeDecodeError:
            pass
        lines = data.split(b"\n")
        for offset, line in enumerate(lines):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                text = line.decode("utf-8", errors="replace")
                self.bad_lines[first_line + offset] = text.rstrip("\r")
                lines[offset] = text.encode("utf-8")
        return b"\n".join(lines)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _line_numbers(first_line: int, start_index: int, count: int, skipped: np.ndarray) -> np.ndarray:
    """Line numbers of valid records start_index .. start_index+count (0-based among valid ones).

    `skipped` holds the sorted line numbers the parser set aside (malformed or blank). The g-th
    valid record sits on line first_line + g + (number of skipped lines before it).
    """
    g = np.arange(start_index, start_index + count, dtype=np.int64)
    if skipped.size == 0:
        return g + first_line
    valid_before_skip = skipped - first_line - np.arange(skipped.size)
    return g + first_line + np.searchsorted(valid_before_skip, g, side="right")


def _blank_rows(batch: pa.RecordBatch) -> np.ndarray:
    """Rows whose every field is empty, column by column over the rows still in question."""
    blank = np.ones(batch.num_rows, dtype=bool)
    for column in batch.columns:
        rows = np.flatnonzero(blank)
        if not len(rows):
            break
        values = column if len(rows) == batch.num_rows else column.take(rows)
        blank[rows] = pc.equal(values, "").to_numpy(zero_copy_only=False)
    return blank


def read_delimited(
    path: Path,
    *,
    delimiter: str = ",",
    column_names: list[str] | None = None,
    encoding: str = "utf8",
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[SourceChunk]:
    """CSV/TSV through pyarrow's streaming reader. `column_names` given means the file has no header."""
    skipped_lines: list[int] = []
    malformed: list[RowError] = []
    blank = [0]

    def on_invalid_row(row) -> str:
        skipped_lines.append(row.number)
        if row.text.strip() == "":
            blank[0] += 1
        else:
            malformed.append(
                RowError(
                    line=row.number,
                    errors={"row": [f"expected {row.expected_columns} fields, found {row.actual_columns}"]},
                    raw=row.text,
                )
            )
        return "skip"

    header_lines = 0
    if column_names is None:
        with open(path, "rb") as raw:  # only the header: later lines may be undecodable
            first = raw.readline().decode(encoding, errors="replace")
        column_names = next(csv.reader([first], delimiter=delimiter), [])
        header_lines = 1
    if not column_names:
        return
    handle = open(path, "rb")
    guard = Utf8LineGuard(handle) if encoding.replace("-", "").lower() == "utf8" else None
    read_options = pacsv.ReadOptions(
        block_size=block_bytes, use_threads=False, encoding=encoding, column_names=column_names, skip_rows=header_lines
    )
    parse_options = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid_row, ignore_empty_lines=False)
    convert_options = pacsv.ConvertOptions(column_types={name: pa.string() for name in column_names}, strings_can_be_null=False)
    first_line = header_lines + 1
    try:
        reader = pacsv.open_csv(pa.PythonFile(guard or handle, mode="r"), read_options=read_options,
                                parse_options=parse_options, convert_options=convert_options)
        seen_valid = 0
        reported = 0
        reported_blank = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            frame = batch.to_pandas()
            lines = _line_numbers(first_line, seen_valid, len(frame), np.array(sorted(skipped_lines), dtype=np.int64))
            seen_valid += len(frame)
            frame["_line"] = lines
            # pyarrow reads an empty line as a record of empty fields: count it, don't import it
            blank_rows = _blank_rows(batch)
            if blank_rows.any():
                blank[0] += int(blank_rows.sum())
                frame = frame.loc[~blank_rows].reset_index(drop=True)
            if guard is not None and guard.bad_lines:
                not_utf8 = frame["_line"].isin(list(guard.bad_lines)).to_numpy()
                for line in frame.loc[not_utf8, "_line"]:
                    malformed.append(RowError(line=int(line), errors={"row": ["not valid UTF-8"]},
                                              raw=guard.bad_lines.pop(int(line))))
                frame = frame.loc[~not_utf8].reset_index(drop=True)
            new_malformed = malformed[reported:]
            reported = len(malformed)
            yield SourceChunk(frame=frame, bytes_done=handle.tell(), malformed=new_malformed,
                              blank_lines=blank[0] - reported_blank, delimiter=delimiter)
            reported_blank = blank[0]
        if reported < len(malformed) or reported_blank < blank[0]:
            yield SourceChunk(frame=pd.DataFrame({"_line": np.array([], dtype=np.int64)}), bytes_done=handle.tell(),
                              malformed=malformed[reported:], blank_lines=blank[0] - reported_blank, delimiter=delimiter)
    finally:
        handle.close()


def _decoded_or_quarantined(line: bytes, number: int, encoding: str, malformed: list[RowError]) -> str | None:
    """The line's text without its line break, or None after quarantining an undecodable line."""
    try:
        return line.decode(encoding).rstrip("\r\n")
    except UnicodeDecodeError:
        text = line.decode(encoding, errors="replace").rstrip("\r\n")
        malformed.append(RowError(line=number, errors={"row": [f"not valid {encoding.upper()}"]}, raw=text))
        return None


def read_whitespace(path: Path, *, column_names: list[str], skip_header: bool | None = None,
                    chunk_rows: int = 100_000, encoding: str = "utf-8") -> Iterator[SourceChunk]:
    """Whitespace-separated text (CDNOW). A header is skipped when its first field is not a number."""
    width = len(column_names)
    with open(path, "rb") as handle:
        rows: list[list[str]] = []
        lines: list[int] = []
        raw: list[str] = []
        malformed: list[RowError] = []
        blank = 0
        for number, line_bytes in enumerate(handle, start=1):
            text = _decoded_or_quarantined(line_bytes, number, encoding, malformed)
            if text is None:
                continue
            fields = text.split()
            if number == 1 and fields and (skip_header or (skip_header is None and not fields[0].lstrip("-").isdigit())):
                continue
            if not fields:
                blank += 1
            elif len(fields) != width:
                malformed.append(RowError(line=number, errors={"row": [f"expected {width} fields, found {len(fields)}"]}, raw=text))
            else:
                rows.append(fields)
                lines.append(number)
                raw.append(text)
            if len(rows) >= chunk_rows:
                yield _whitespace_chunk(rows, lines, raw, column_names, handle.tell(), malformed, blank)
                rows, lines, raw, malformed, blank = [], [], [], [], 0
        yield _whitespace_chunk(rows, lines, raw, column_names, handle.tell(), malformed, blank)


def _whitespace_chunk(rows, lines, raw, column_names, bytes_done, malformed, blank) -> SourceChunk:
    frame = pd.DataFrame(rows, columns=column_names, dtype="str") if rows else pd.DataFrame(columns=column_names, dtype="str")
    frame["_line"] = np.array(lines, dtype=np.int64)
    return SourceChunk(frame=frame, bytes_done=bytes_done, malformed=malformed, blank_lines=blank, raw_lines=raw)


def read_jsonl(path: Path, *, chunk_rows: int = 50_000) -> Iterator[SourceChunk]:
    """One JSON object per line. A line that is not a JSON object is malformed."""
    with open(path, "rb") as handle:
        records: list[dict] = []
        lines: list[int] = []
        raw: list[str] = []
        malformed: list[RowError] = []
        blank = 0
        for number, line_bytes in enumerate(handle, start=1):
            text = _decoded_or_quarantined(line_bytes, number, "utf-8", malformed)
            if text is None:
                continue
            text = text.strip()
            if not text:
                blank += 1
                continue
            try:
                record = json.loads(text)
            except ValueError as exc:
                malformed.append(RowError(line=number, errors={"row": [f"invalid JSON ({exc.msg})"]}, raw=text))
                continue
            if not isinstance(record, dict):
                malformed.append(RowError(line=number, errors={"row": ["not a JSON object"]}, raw=text))
                continue
            records.append({k: (json.dumps(v) if isinstance(v, (dict, list)) and k != "context" else v) for k, v in record.items()})
            lines.append(number)
            raw.append(text)
            if len(records) >= chunk_rows:
                yield _records_chunk(records, lines, raw, handle.tell(), malformed, blank)
                records, lines, raw, malformed, blank = [], [], [], [], 0
        yield _records_chunk(records, lines, raw, handle.tell(), malformed, blank)


def _records_chunk(records, lines, raw, bytes_done, malformed, blank) -> SourceChunk:
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    for column in frame.columns:
        if column != "context" and frame[column].dtype == object:
            frame[column] = frame[column].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    frame["_line"] = np.array(lines, dtype=np.int64)
    return SourceChunk(frame=frame, bytes_done=bytes_done, malformed=malformed, blank_lines=blank, raw_lines=raw)


def read_parquet(path: Path, *, chunk_rows: int = 100_000) -> Iterator[SourceChunk]:
    """Parquet row groups; `_line` is the 1-based row number."""
    parquet = pq.ParquetFile(path)
    total_rows = parquet.metadata.num_rows or 1
    size = Path(path).stat().st_size
    done = 0
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        frame = batch.to_pandas()
        frame["_line"] = np.arange(done + 1, done + 1 + len(frame), dtype=np.int64)
        done += len(frame)
        yield SourceChunk(frame=frame, bytes_done=int(size * done / total_rows))
