"""Adapters from source formats to canonical event chunks (see ingestion.cleaning.FIELDS).

Each adapter knows how to read its files, how its columns map to canonical fields, how its
events get deterministic ids, and which customers/items it brings besides events.
"""

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from django.conf import settings

from ingestion.cleaning import FIELDS, CleaningRules
from ingestion.normalise import CUSTOMER_FIELDS
from ingestion.importers import readers
from ingestion.importers.readers import SourceChunk


class SourceError(ValueError):
    """The file or its options cannot be imported at all (nothing was written)."""


@dataclass
class CatalogueRows:
    customers: list[dict] = field(default_factory=list)  # fields of services.CustomerRow
    items: list[dict] = field(default_factory=list)


@dataclass
class EventSource:
    rules: CleaningRules
    bytes_total: int
    chunks: Iterator[tuple[pd.DataFrame, SourceChunk]]
    catalogue: CatalogueRows = field(default_factory=CatalogueRows)
    value_maps: dict[str, dict[str, str]] = field(default_factory=dict)  # field → {source value: ours}
    customer_fields: tuple[str, ...] = ()  # customer attributes the rows carry beside their events


def file_identity(path: Path) -> str:
    """Identity of a ledger file: a hash of its first 64 KiB, so an appended file keeps its identity
    (old lines keep their ids) and the same file under another name is still recognised."""
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(65536)).hexdigest()[:24]


def _canonical(chunk: SourceChunk, mapping: dict[str, str], constants: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {canonical: chunk.frame[column] for canonical, column in mapping.items() if column in chunk.frame},
        index=chunk.frame.index,
    )
    for canonical, value in constants.items():
        frame[canonical] = value
    frame["_line"] = chunk.frame["_line"]
    return frame


EVENT_FILE_FIELDS = (*FIELDS, *CUSTOMER_FIELDS)  # what a column of an event file can fill


def _check_mapping(mapping: dict[str, str], constants: dict[str, str], value_maps: dict | None = None) -> None:
    unknown = (set(mapping) | set(constants) | set(value_maps or {})) - set(EVENT_FILE_FIELDS)
    if unknown:
        raise SourceError(f"unknown target field(s) {sorted(unknown)}; known: {', '.join(EVENT_FILE_FIELDS)}")
    value_maps_check(value_maps)


def value_maps_check(value_maps) -> None:
    """A value map is an object of strings to strings per field."""
    if not isinstance(value_maps or {}, dict):
        raise SourceError("value_maps must be an object: field → {source value: our value}")
    for name, table in (value_maps or {}).items():
        if not isinstance(table, dict) or not table or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
            raise SourceError(f"the value map of {name} must be a non-empty object of source values to ours (strings)")


def cleaning_rules(*, source: str, options: dict, **overrides) -> CleaningRules:
    """Cleaning thresholds from settings (INGEST_*), overridden by a job's options, then by the adapter."""
    from django.conf import settings

    values = dict(
        source=source,
        default_currency=options.get("default_currency", settings.INGEST_DEFAULT_CURRENCY),
        timezone=options.get("timezone", "UTC"),
        timestamp_format=options.get("timestamp_format"),
        near_duplicate_seconds=int(options.get("near_duplicate_seconds", settings.INGEST_NEAR_DUPLICATE_SECONDS)),
        bot_events_per_minute=int(options.get("bot_events_per_minute", settings.INGEST_BOT_EVENTS_PER_MINUTE)),
        max_unit_price=float(options.get("max_unit_price", settings.INGEST_MAX_UNIT_PRICE)),
    )
    values.update(overrides)
    return CleaningRules(**values)


def generic_source(path: Path, fmt: str, source: str, options: dict) -> EventSource:
    """CSV / JSONL / Parquet whose columns are named by `options['mapping']` (canonical → column);
    columns already named like a canonical field map themselves; `constants` fill fields the file lacks."""
    mapping = {f: f for f in FIELDS}
    mapping.update(options.get("mapping") or {})
    constants = dict(options.get("constants") or {})
    value_maps = dict(options.get("value_maps") or {})
    _check_mapping(mapping, constants, value_maps)
    # JSONL and Parquet: rows per chunk (one transaction each) when a job asks (CSV chunks by bytes, pyarrow's blocks)
    sized = {"chunk_rows": int(options["chunk_rows"])} if options.get("chunk_rows") else {}
    if fmt == "csv":
        delimiter = options.get("delimiter", ",")
        with open(path, encoding="utf-8", errors="replace") as handle:
            header = handle.readline().rstrip("\r\n").split(delimiter)
        header = [h.strip().strip('"') for h in header]
        missing = {c: m for c, m in (options.get("mapping") or {}).items() if m not in header}
        if missing:
            raise SourceError(f"mapped column(s) not in the file header: {missing}; header: {header}")
        raw_chunks = readers.read_delimited(path, delimiter=delimiter, block_bytes=settings.INGEST_CSV_BLOCK_BYTES)
    elif fmt == "jsonl":
        raw_chunks = readers.read_jsonl(path, **sized)
    elif fmt == "parquet":
        raw_chunks = readers.read_parquet(path, **sized)
    else:
        raise SourceError(f"unknown format {fmt!r}")
    identity = options.get("file_identity") or file_identity(path)
    rules = cleaning_rules(source=source, options=options, file_identity=identity)
    return EventSource(
        rules=rules,
        bytes_total=path.stat().st_size,
        chunks=((_canonical(c, mapping, constants), c) for c in raw_chunks),
        value_maps=value_maps,
        customer_fields=tuple(f for f in CUSTOMER_FIELDS if f in mapping or f in constants),
    )


CDNOW_MASTER_COLUMNS = ["customer_id", "date", "number_of_cds", "dollar_value"]
CDNOW_SAMPLE_COLUMNS = ["customer_id", "sample_customer_id", "date", "number_of_cds", "dollar_value"]


def cdnow_source(path: Path, source: str, options: dict) -> EventSource:
    """CDNOW transactions: one purchase per line, no item, no order id; event id = file + line,
    because identical lines (same customer, day, quantity and amount) are distinct purchases."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            fields = line.split()
            if fields and fields[0].isdigit():
                break
        else:
            raise SourceError("no data lines found in the CDNOW file")
    columns = CDNOW_MASTER_COLUMNS if len(fields) == 4 else CDNOW_SAMPLE_COLUMNS
    mapping = {"customer_id": "customer_id", "timestamp": "date", "quantity": "number_of_cds", "value": "dollar_value"}
    constants = {"event_type": "purchase", "currency": "USD"}
    rules = cleaning_rules(source=source, options=options, timestamp_format="%Y%m%d", file_identity=options.get("file_identity") or file_identity(path))
    return EventSource(
        rules=rules,
        bytes_total=path.stat().st_size,
        chunks=((_canonical(c, mapping, constants), c) for c in readers.read_whitespace(path, column_names=columns)),
    )


MOVIELENS_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


def age_band(age: int | None) -> str:
    if age is None:
        return ""
    for upper, label in ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (65, "55-64")):
        if age < upper:
            return label
    return "65+"


def _movielens_customer(user_id: str, age: str, gender: str, occupation: str, zip_code: str) -> dict:
    age_value = int(age) if age.isdigit() else None
    return {
        "external_id": user_id,
        "age": age_value,
        "age_band": age_band(age_value),
        "gender": {"M": "male", "F": "female"}.get(gender, ""),
        # the first digit of a US ZIP code is a broad region; the full code is a quasi-identifier
        "region": f"US-{zip_code[0]}" if zip_code[:1].isdigit() else "",
        "attributes": {"occupation": occupation},
    }


def _movielens_item(item_id: str, title: str, year: str, genres: list[str]) -> dict:
    genres = [g for g in genres if g and g != "unknown"]
    return {
        "sku": f"ml-{item_id}",
        "title": title,
        "category_path": f"Movies/{genres[0]}" if genres else "Movies",
        "attributes": {"genres": genres, **({"release_year": int(year)} if year.isdigit() else {})},
    }


def movielens_source(path: Path, source: str, options: dict) -> EventSource:
    """MovieLens ratings with users and items: the atomic layout (ml-100k.inter/.user/.item) or the
    original one (u.data/u.user/u.item). `path` is the directory or the interactions file."""
    directory = path if path.is_dir() else path.parent
    atomic = sorted(directory.glob("*.inter"))
    catalogue = CatalogueRows()
    if atomic:
        inter = atomic[0] if not path.is_file() else path
        stem = inter.with_suffix("")
        users, items = stem.with_suffix(".user"), stem.with_suffix(".item")
        if users.exists():
            frame = pd.read_csv(users, sep="\t", dtype=str, keep_default_na=False)
            frame.columns = [c.split(":")[0] for c in frame.columns]
            catalogue.customers = [
                _movielens_customer(r.user_id, r.age, r.gender, r.occupation, r.zip_code) for r in frame.itertuples()
            ]
        if items.exists():
            frame = pd.read_csv(items, sep="\t", dtype=str, keep_default_na=False)
            frame.columns = [c.split(":")[0] for c in frame.columns]
            catalogue.items = [
                _movielens_item(item_id, title, year, genres.split(" "))
                for item_id, title, year, genres in zip(frame["item_id"], frame["movie_title"], frame["release_year"], frame["class"], strict=True)
            ]
        with open(inter, encoding="utf-8") as handle:
            header = handle.readline().rstrip("\n").split("\t")
        by_name = {c.split(":")[0]: c for c in header}
        mapping = {"customer_id": by_name.get("user_id"), "item_id": by_name.get("item_id"),
                   "rating": by_name.get("rating"), "timestamp": by_name.get("timestamp")}
        raw_chunks = readers.read_delimited(inter, delimiter="\t")
    else:
        inter = path if path.is_file() else directory / "u.data"
        if not inter.exists():
            raise SourceError(f"no MovieLens interactions (*.inter or u.data) at {path}")
        users, items = directory / "u.user", directory / "u.item"
        if users.exists():
            frame = pd.read_csv(users, sep="|", header=None, dtype=str, keep_default_na=False,
                                names=["user_id", "age", "gender", "occupation", "zip_code"])
            catalogue.customers = [
                _movielens_customer(r.user_id, r.age, r.gender, r.occupation, r.zip_code) for r in frame.itertuples()
            ]
        if items.exists():
            frame = pd.read_csv(items, sep="|", header=None, dtype=str, keep_default_na=False, encoding="latin-1")
            for row in frame.itertuples(index=False):
                flags = list(row[5:24])
                year = re.search(r"(\d{4})", row[2] or "")
                catalogue.items.append(_movielens_item(
                    row[0], row[1], year.group(1) if year else "", [g for g, f in zip(MOVIELENS_GENRES, flags, strict=False) if f == "1"]
                ))
        header = ["user_id", "item_id", "rating", "timestamp"]
        mapping = {"customer_id": "user_id", "item_id": "item_id", "rating": "rating", "timestamp": "timestamp"}
        raw_chunks = readers.read_delimited(inter, delimiter="\t", column_names=header)

    def with_sku(chunk: SourceChunk) -> pd.DataFrame:
        frame = _canonical(chunk, mapping, {"event_type": "rating"})
        frame["item_id"] = "ml-" + frame["item_id"].astype("str")
        return frame

    # (user, item, time) is MovieLens' natural key: stable across both layouts and any re-sorting.
    rules = cleaning_rules(source=source, options=options, timestamp_format="unix", derive_event_id=("customer_id", "item_id", "occurred_at"))
    return EventSource(
        rules=rules,
        bytes_total=inter.stat().st_size,
        chunks=((with_sku(c), c) for c in raw_chunks),
        catalogue=catalogue,
    )


ADAPTERS = {
    "cdnow": lambda path, source, options: cdnow_source(path, source, options),
    "movielens": lambda path, source, options: movielens_source(path, source, options),
    "csv": lambda path, source, options: generic_source(path, "csv", source, options),
    "jsonl": lambda path, source, options: generic_source(path, "jsonl", source, options),
    "parquet": lambda path, source, options: generic_source(path, "parquet", source, options),
}

DEFAULT_SOURCES = {"cdnow": "cdnow", "movielens": "movielens"}


def open_event_source(*, path: Path, fmt: str, source: str, options: dict) -> EventSource:
    if fmt not in ADAPTERS:
        raise SourceError(f"unknown format {fmt!r}; one of {', '.join(ADAPTERS)}")
    if not path.exists():
        raise SourceError(f"no such file: {path}")
    return ADAPTERS[fmt](path, source, options)
