"""Cleaning and validation of event rows, shared by every entrance (API, files, generator).

Input: a pandas DataFrame whose columns are canonical field names (see FIELDS) holding raw values
as they came from the source, plus `_line` (line or row number in the source). Output: the rows
that pass, typed and normalised for the store; every refused row with each field's reason; and
one counter per cleaning rule for the import report. Vectorised: no per-row Python on the hot
path except for the (few) rejected rows and the distinct JSON contexts; values that repeat
(numbers, types, currencies, contexts) are judged once per distinct value.
"""

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ingestion.event_ids import UUID_PATTERN, time_ordered_hex, uuid5_hex
from ingestion.models import EventFlag, EventType
from ingestion.normalise import currency_normalise

FIELDS = (
    "event_id",
    "customer_id",
    "item_id",
    "event_type",
    "timestamp",
    "quantity",
    "value",
    "currency",
    "rating",
    "session_id",
    "channel",
    "device",
    "order_id",
    "context",
)

EVENT_TYPE_ALIASES: dict[str, int] = {
    **{t.name.lower(): t.value for t in EventType},
    "page_view": EventType.VIEW,
    "pageview": EventType.VIEW,
    "detail_view": EventType.VIEW,
    "cart": EventType.ADD_TO_CART,
    "addtocart": EventType.ADD_TO_CART,
    "add-to-cart": EventType.ADD_TO_CART,
    "remove_cart": EventType.REMOVE_FROM_CART,
    "order": EventType.PURCHASE,
    "buy": EventType.PURCHASE,
    "transaction": EventType.PURCHASE,
    "return": EventType.REFUND,
    "cancellation": EventType.CANCEL,
    "rate": EventType.RATING,
    "review": EventType.RATING,
}
# A repeat of one of these within seconds is noise (double clicks, reloads), not behaviour.
NOISY_TYPES = (EventType.VIEW, EventType.CLICK, EventType.SEARCH)
ITEM_REQUIRED_TYPES = (EventType.VIEW, EventType.ADD_TO_CART, EventType.REMOVE_FROM_CART, EventType.RATING)
VALUE_REQUIRED_TYPES = (EventType.PURCHASE, EventType.REFUND)
TEXT_LIMITS = {"customer_id": 256, "item_id": 128, "session_id": 64, "channel": 16, "device": 16, "order_id": 64}
EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")
_OFFSET_RE = r"(?:Z|[+-]\d{2}:?\d{2})$"
ISO_CODE = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class CleaningRules:
    """Thresholds and source conventions; every one is reported in the README."""

    source: str
    default_currency: str = "USD"
    timezone: str = "UTC"
    timestamp_format: str | None = None  # None: ISO 8601; "unix", "unix_ms", or a strftime format
    near_duplicate_seconds: int = 5
    bot_events_per_minute: int = 60
    max_unit_price: float = 100_000.0
    # How an event gets its id when the source has none: "line" (file identity + line number,
    # for ledgers) or a tuple of fields forming a natural key; a content hash is the last resort.
    derive_event_id: str | tuple[str, ...] = "line"
    file_identity: str = ""


@dataclass
class RowError:
    line: int
    errors: dict[str, list[str]]
    raw: str = ""

    @property
    def reason(self) -> str:
        return "; ".join(f"{f}: {', '.join(m)}" for f, m in self.errors.items())


@dataclass
class CleanedEvents:
    events: pd.DataFrame
    counts: Counter = field(default_factory=Counter)
    duplicates: int = 0  # exact repeats of an event id inside the batch
    removed: int = 0  # near-duplicates and repeated order lines dropped as noise
    flagged: int = 0
    rejected_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # in the input
    rejected_lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rejected_customer_ids: list = field(default_factory=list)  # the external id each names, or None
    problems: "_Problems | None" = None

    @cached_property
    def rejected(self) -> list[RowError]:
        """Every refused row with its errors by field (API answers, previews)."""
        if not len(self.rejected_positions):
            return []
        by_row = self.problems.errors_for(self.rejected_positions)
        return [RowError(line=int(line), errors=by_row[int(p)])
                for p, line in zip(self.rejected_positions, self.rejected_lines, strict=True)]

    def rejected_reasons(self) -> list[str]:
        """The reason of each refused row as RowError.reason words it, built column-wise: a file
        whose every line is bad costs no per-row dictionaries."""
        if not len(self.rejected_positions):
            return []
        return self.problems.reasons_for(self.rejected_positions)


class _Problems:
    """Collects (row mask, field, message) triples; combined into per-row errors at the end."""

    def __init__(self, n: int):
        self.n = n
        self.items: list[tuple[np.ndarray, str, str]] = []
        self._settled: dict[str, np.ndarray] = {}  # rows whose field already has its reason

    def add(self, mask, field_name: str, message: str, *, settles: bool = False) -> None:
        """`settles`: this reason is the field's whole story for these rows (a value the value map
        lacks is not also "required" once the map has emptied it)."""
        mask = np.asarray(mask, dtype=bool)
        if not settles and field_name in self._settled:
            mask = mask & ~self._settled[field_name]
        if mask.any():
            self.items.append((mask, field_name, message))
            if settles:
                self._settled[field_name] = self._settled.get(field_name, np.zeros(self.n, dtype=bool)) | mask

    def any_mask(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for mask, _, _ in self.items:
            out |= mask
        return out

    def reasons_for(self, positions: np.ndarray) -> list[str]:
        """"field: message, message; field: message" per position, fields in the order first met."""
        by_field: dict[str, pd.Series] = {}
        for mask, field_name, message in self.items:
            hit = mask[positions]
            if not hit.any():
                continue
            current = by_field.get(field_name)
            if current is None:
                by_field[field_name] = pd.Series(np.where(hit, message, None), dtype="object")
            else:
                joined = current.where(current.isna(), current + ", " + message).where(~current.isna(), message)
                by_field[field_name] = joined.where(hit, current)
        reason = pd.Series(np.full(len(positions), None), dtype="object")
        for field_name, messages in by_field.items():
            part = field_name + ": " + messages
            joined = reason.where(reason.isna(), reason + "; " + part).where(~reason.isna(), part)
            reason = joined.where(messages.notna(), reason)
        return reason.tolist()

    def errors_for(self, positions: np.ndarray) -> dict[int, dict[str, list[str]]]:
        result: dict[int, dict[str, list[str]]] = {int(p): {} for p in positions}
        for mask, field_name, message in self.items:
            for p in np.flatnonzero(mask):
                result[int(p)].setdefault(field_name, []).append(message)
        return result


def _text(frame: pd.DataFrame, name: str) -> pd.Series:
    """The column as stripped strings with empty → missing; an all-missing column if absent."""
    if name not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype="str")
    col = frame[name]
    if col.dtype.kind in "iuf":
        text = col.astype("str").where(col.notna())
        # integers read as floats (pyarrow/JSON) must not become "12.0"
        if col.dtype.kind == "f":
            text = text.str.replace(r"\.0$", "", regex=True)
        return text
    text = col.astype("str")
    if text.dtype.storage == "pyarrow":  # .str.strip() and .where(!= "") in one Arrow pass, no pandas round trips
        stripped = pc.utf8_trim_whitespace(pa.array(text.array))
        stripped = pc.if_else(pc.equal(stripped, ""), pa.scalar(None, stripped.type), stripped)
        return pd.Series(pd.array(stripped, dtype=text.dtype), index=text.index, name=text.name)
    text = text.str.strip()
    return text.where(text != "")


class _Columns:
    """The chunk's raw columns, each turned into stripped text at most once."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self._texts: dict[str, pd.Series] = {}

    def text(self, name: str) -> pd.Series:
        if name not in self._texts:
            self._texts[name] = _text(self.frame, name)
        return self._texts[name]


def _arrow_chunks(text: pd.Series) -> list[pa.Array] | None:
    """The Arrow arrays behind a text column (pandas' default "str" dtype); None for other columns."""
    if not isinstance(text.dtype, pd.StringDtype) or text.dtype.storage != "pyarrow":
        return None
    arrow = pa.array(text.array)
    return arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]


def _may_hold_nul(text: pd.Series) -> bool:
    """False when no value of the text column holds a NUL: one pass over its UTF-8 bytes instead of a
    search per value (bytes of missing values may count, which only costs that search)."""
    chunks = _arrow_chunks(text)
    if chunks is None:
        return True
    for chunk in chunks:
        data = chunk.buffers()[2]
        if data is None:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64 if pa.types.is_large_string(chunk.type) else np.int32)
        start, end = offsets[chunk.offset], offsets[chunk.offset + len(chunk)]
        if not np.frombuffer(data, dtype=np.uint8)[start:end].all():
            return True
    return False


def _may_exceed(text: pd.Series, limit: int) -> bool:
    """False when no value is longer than `limit` characters, known from the longest in UTF-8 bytes."""
    chunks = _arrow_chunks(text)
    if chunks is None:
        return True
    return any(len(chunk) and (pc.max(pc.binary_length(chunk)).as_py() or 0) > limit for chunk in chunks)


def _parsed_numbers(text: pd.Series) -> pd.Series:
    """pd.to_numeric(text, errors="coerce") as float64, parsed once per distinct text: quantities,
    ratings and prices repeat a few values. pandas decides int or float parsing from the set of
    values present, so the distinct ones go in with a missing value exactly when the column has one."""
    codes, uniques = pd.factorize(text)
    if len(uniques) > len(text) // 2:
        return pd.to_numeric(text, errors="coerce").astype("float64")
    if (codes < 0).any():
        uniques = pd.Series(uniques).reindex(range(len(uniques) + 1))
        codes = np.where(codes < 0, len(uniques) - 1, codes)
    parsed = pd.to_numeric(pd.Series(uniques), errors="coerce").astype("float64").to_numpy()
    return pd.Series(parsed[codes], index=text.index, name=text.name)


def _number(cols: _Columns, name: str, problems: _Problems) -> pd.Series:
    frame = cols.frame
    if name not in frame:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    raw = frame[name]
    if raw.dtype.kind in "iuf":
        return raw.astype("float64")
    text = cols.text(name)
    number = _parsed_numbers(text)
    problems.add((text.notna() & number.isna()).to_numpy(), name, "not a number")
    bad_inf = np.isinf(number.to_numpy())
    problems.add(bad_inf, name, "not a finite number")
    return number.where(~bad_inf)


def _timestamps(cols: _Columns, rules: CleaningRules, problems: _Problems, counts: Counter) -> pd.Series:
    frame = cols.frame
    raw = frame["timestamp"] if "timestamp" in frame else pd.Series(pd.NA, index=frame.index)
    fmt = rules.timestamp_format
    if isinstance(raw.dtype, pd.DatetimeTZDtype):  # already typed (generator, Parquet)
        parsed = raw.dt.tz_convert("UTC")
    elif fmt in ("unix", "unix_ms"):
        numbers = pd.to_numeric(raw, errors="coerce")
        problems.add((raw.notna() & numbers.isna()).to_numpy(), "timestamp", "not a unix time")
        # beyond ±2^53 the float is meaningless and pandas would overflow
        numbers = numbers.where(numbers.abs() < 2**53)
        parsed = pd.to_datetime(numbers, unit="s" if fmt == "unix" else "ms", utc=True, errors="coerce")
    else:
        text = cols.text("timestamp")
        if rules.timezone == "UTC":
            parsed = pd.to_datetime(text, format=fmt or "ISO8601", utc=True, errors="coerce")
        else:
            has_offset = text.str.contains(_OFFSET_RE, regex=True, na=False)
            aware = pd.to_datetime(text.where(has_offset), format=fmt or "ISO8601", utc=True, errors="coerce")
            naive = pd.to_datetime(text.where(~has_offset), format=fmt or "ISO8601", errors="coerce")
            local = naive.dt.tz_localize(rules.timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
            parsed = aware.where(has_offset, local)
            counts["timestamp_localised_to_utc"] += int((~has_offset & local.notna()).sum())
        problems.add((text.notna() & parsed.isna()).to_numpy(), "timestamp", "not a valid date/time")
    missing = raw.isna().to_numpy() if raw.dtype.kind not in "O" else cols.text("timestamp").isna().to_numpy()
    problems.add(missing, "timestamp", "required")
    latest = pd.Timestamp(datetime.now(UTC) + timedelta(days=1))
    out_of_range = (parsed.notna() & ((parsed < EARLIEST) | (parsed > latest))).to_numpy()
    problems.add(out_of_range, "timestamp", "outside 1990-01-01 .. tomorrow")
    return parsed.astype("datetime64[us, UTC]")


def _context(frame: pd.DataFrame, problems: _Problems) -> pd.Series:
    """JSON objects as text for jsonb. Text that already parses to an object is kept as sent
    (PostgreSQL normalises it); dicts (JSONL, API) are serialised."""
    if "context" not in frame:
        return pd.Series(np.full(len(frame), None, dtype=object), index=frame.index, dtype="object")
    column = frame["context"]
    codes = None
    if isinstance(column.dtype, pd.StringDtype):
        # text only (CSV): a file repeats a few contexts, so each distinct one is judged once
        codes, uniques = pd.factorize(column)
        column = pd.Series(uniques, dtype="object")
    out, bad, nul = _contexts_judged(column)
    if codes is not None:  # -1 (missing) takes the appended last value
        out, bad, nul = (np.append(a, blank)[codes] for a, blank in ((out, None), (bad, False), (nul, False)))
    problems.add(bad, "context", "not a JSON object")
    problems.add(nul, "context", "contains a NUL character (jsonb cannot store it)")
    return pd.Series(out, index=frame.index, dtype="object")


def _contexts_judged(column: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each value as text for jsonb (None where there is none) and whether it is not an object or
    holds a NUL."""
    out = np.full(len(column), None, dtype=object)
    values = column.to_numpy(dtype=object)
    present = np.flatnonzero(column.notna().to_numpy())
    bad = np.zeros(len(column), dtype=bool)
    nul = np.zeros(len(column), dtype=bool)
    for pos in present:
        value = values[pos]
        if isinstance(value, str):
            if value == "":
                continue
            try:
                parsed = json.loads(value)
            except ValueError:
                bad[pos] = True
                continue
            if not isinstance(parsed, dict):
                bad[pos] = True
            elif "\x00" in value or "\\u0000" in value:
                nul[pos] = True
            else:
                out[pos] = value
        elif isinstance(value, dict):
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            if "\\u0000" in text:
                nul[pos] = True
            else:
                out[pos] = text
        else:
            bad[pos] = True
    return out, bad, nul


_HEX_POSITIONS = [p for p in range(36) if p not in (8, 13, 18, 23)]


def _dashed_uuids(given: pd.Series) -> tuple[np.ndarray, bool] | None:
    """When every value is a UUID in its usual 36-character form (what files send), the ids as 32
    lowercase hex digits, read from the column's bytes in a few NumPy passes instead of a regex,
    a lower() and a replace() per value; and whether they are known to be distinct (distinct
    fingerprints). None when any value is otherwise: the general path decides."""
    chunks = _arrow_chunks(given)
    if chunks is None or len(chunks) != 1 or not len(given) or chunks[0].null_count:
        return None
    arrow = chunks[0]
    offsets = np.frombuffer(arrow.buffers()[1], dtype=np.int64 if pa.types.is_large_string(arrow.type) else np.int32)
    offsets = offsets[arrow.offset:arrow.offset + len(arrow) + 1]
    if not (np.diff(offsets) == 36).all():
        return None
    chars = np.frombuffer(arrow.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].reshape(-1, 36)
    if not (chars[:, [8, 13, 18, 23]] == ord("-")).all():
        return None
    digits = np.ascontiguousarray(chars[:, _HEX_POSITIONS])
    upper = (digits >= ord("A")) & (digits <= ord("F"))
    if not (((digits >= ord("0")) & (digits <= ord("9"))) | ((digits >= ord("a")) & (digits <= ord("f"))) | upper).all():
        return None
    digits[upper] += ord("a") - ord("A")
    words = digits.view(np.uint64)  # (n, 4): equal ids have equal words, so equal fingerprints
    fingerprint = words[:, 0].copy()
    for column, odd in ((1, 0x9E3779B97F4A7C15), (2, 0xC2B2AE3D27D4EB4F), (3, 0x165667B19E3779F9)):
        fingerprint ^= words[:, column] * np.uint64(odd)
    hex_digits = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), len(digits), [None, pa.py_buffer(digits)])
    ids = hex_digits.cast(pa.string()).to_numpy(zero_copy_only=False)
    return ids, pd.Series(fingerprint).is_unique


def _event_ids(cols: _Columns, cleaned: pd.DataFrame, rules: CleaningRules, problems: _Problems) -> tuple[pd.Series, bool]:
    """Deterministic UUIDs: the client's id, else the source's natural key, else file+line. Also
    whether the ids are known to be distinct (every row sent a UUID, none twice)."""
    frame = cols.frame
    given = cols.text("event_id")
    ids = np.full(len(frame), None, dtype=object)
    distinct = False
    dashed = _dashed_uuids(given)
    if dashed is not None:
        ids, distinct = dashed
        is_uuid = np.ones(len(frame), dtype=bool)
    else:
        is_uuid = given.str.fullmatch(UUID_PATTERN, na=False).to_numpy()
        if is_uuid.all():
            normalised = given.str.lower().str.replace("-", "", regex=False)
            distinct = normalised.is_unique  # on Arrow text: cheaper than hashing the objects later
            ids = normalised.to_numpy(dtype=object)
        elif is_uuid.any():
            ids[is_uuid] = given[is_uuid].str.lower().str.replace("-", "", regex=False).to_numpy(dtype=object)
    too_long = (given.str.len() > 128).fillna(False).to_numpy()
    problems.add(too_long, "event_id", "longer than 128 characters")
    prefix = f"{rules.source}\x1f"
    other = given.notna().to_numpy() & ~is_uuid & ~too_long
    if other.any():
        ids[other] = uuid5_hex(prefix + v for v in given[other].to_numpy(dtype=object))
    missing = given.isna().to_numpy()
    if missing.any():
        if isinstance(rules.derive_event_id, tuple):
            parts = [cleaned.loc[missing, c].astype("str").fillna("") for c in rules.derive_event_id]
            names = parts[0].str.cat(parts[1:], sep="\x1f") if len(parts) > 1 else parts[0]
        else:
            names = f"{rules.file_identity}:" + frame.loc[missing, "_line"].astype("str")
        occurred = cleaned.loc[missing, "occurred_at"].fillna(pd.Timestamp(0, tz="UTC"))
        ids[missing] = time_ordered_hex((prefix + v for v in names.to_numpy(dtype=object)), occurred)
    return pd.Series(ids, index=frame.index, dtype="object"), distinct


def events_clean(frame: pd.DataFrame, *, rules: CleaningRules, prior: list | None = None) -> CleanedEvents:
    """Validate and normalise one chunk. Rows keep their order; `_line` identifies each one.
    `prior`: (row mask, field, message) problems found before cleaning (value maps, customer
    columns of the same rows), so such a row is refused whole with every reason."""
    frame = frame.reset_index(drop=True)
    cols = _Columns(frame)
    n = len(frame)
    problems = _Problems(n)
    for mask, field_name, message in prior or ():
        problems.add(mask, field_name, message, settles=True)
    counts: Counter = Counter()
    out = pd.DataFrame(index=frame.index)
    out["_line"] = frame["_line"].astype("int64")

    customer = cols.text("customer_id")
    problems.add(customer.isna().to_numpy(), "customer_id", "required")
    out["customer_id"] = customer

    # looked up once per distinct spelling; -1: missing or unknown
    codes, spellings = pd.factorize(cols.text("event_type").str.lower())
    event_type = np.array([EVENT_TYPE_ALIASES.get(t, -1) for t in spellings] + [-1], dtype=np.int64)[codes]
    problems.add(codes < 0, "event_type", "required")
    problems.add((codes >= 0) & (event_type < 0), "event_type", "unknown type")
    out["event_type"] = pd.arrays.IntegerArray(event_type.astype(np.int16), mask=event_type < 0)

    item = cols.text("item_id")
    needs_item = np.isin(event_type, [int(t) for t in ITEM_REQUIRED_TYPES])
    problems.add(needs_item & item.isna().to_numpy(), "item_id", "required for this event type")
    out["item_id"] = item

    out["occurred_at"] = _timestamps(cols, rules, problems, counts)

    quantity = _number(cols, "quantity", problems)
    counts["quantity_defaulted_to_1"] += int((quantity.isna() & cols.text("quantity").isna()).sum())
    quantity = quantity.fillna(1.0)
    problems.add((quantity != np.floor(quantity)).to_numpy(), "quantity", "not a whole number")
    problems.add(((quantity <= 0) | (quantity > 1_000_000)).to_numpy(), "quantity", "must be between 1 and 1,000,000")
    out["quantity"] = quantity.clip(-1e9, 1e9).round().astype("int64")

    value = _number(cols, "value", problems)
    needs_value = np.isin(event_type, [int(t) for t in VALUE_REQUIRED_TYPES])
    problems.add(needs_value & value.isna().to_numpy() & cols.text("value").isna().to_numpy(), "value", "required for purchases and refunds")
    problems.add((value < 0).to_numpy(), "value", "must not be negative (use a refund event)")
    problems.add((value >= 1e12).to_numpy(), "value", "too large")
    out["value"] = value.round(2)

    # normalised and checked once per distinct spelling; rows without one take the default if they have a value
    codes, spellings = pd.factorize(cols.text("currency"))
    normalised = currency_normalise(pd.Series(spellings)).to_numpy(dtype=object)
    defaulted = (codes < 0) & value.notna().to_numpy()
    counts["currency_defaulted"] += int(defaulted.sum())
    is_code = np.array([ISO_CODE.fullmatch(c) is not None for c in normalised] + [True], dtype=bool)[codes]
    problems.add(~is_code | (defaulted & (ISO_CODE.fullmatch(rules.default_currency) is None)), "currency", "not an ISO 4217 code")
    changed = np.append(normalised != spellings.to_numpy(dtype=object), False)[codes]
    counts["currency_normalised"] += int(changed.sum())
    currency = np.append(normalised, "")[codes]
    currency[defaulted] = rules.default_currency
    # object like currency_normalise's answer; text where there was nothing to normalise
    out["currency"] = pd.Series(currency, index=frame.index, dtype="object" if len(spellings) else "str")

    rating = _number(cols, "rating", problems)
    is_rating = event_type == EventType.RATING
    problems.add(is_rating & rating.isna().to_numpy() & cols.text("rating").isna().to_numpy(), "rating", "required for rating events")
    problems.add(((rating < 0) | (rating > 10)).to_numpy(), "rating", "must be between 0 and 10")
    out["rating"] = rating

    for name in ("session_id", "channel", "device", "order_id"):
        text = cols.text(name)
        if name in ("channel", "device"):
            text = text.str.lower()
        out[name] = text.fillna("")
    for name, limit in TEXT_LIMITS.items():
        if _may_exceed(out[name], limit):
            problems.add((out[name].str.len() > limit).fillna(False).to_numpy(), name, f"longer than {limit} characters")

    for name in FIELDS:
        if name in frame and name != "context" and frame[name].dtype.kind not in "iufbM" and _may_hold_nul(cols.text(name)):
            nul = cols.text(name).str.contains("\x00", regex=False, na=False).to_numpy()
            problems.add(nul, name, "contains a NUL byte")

    out["context"] = _context(frame, problems)
    out["event_id"], ids_distinct = _event_ids(cols, out, rules, problems)

    rejected_mask = problems.any_mask()
    positions = np.flatnonzero(rejected_mask)
    for mask, field_name, message in problems.items:
        counts[f"rejected: {field_name} {message}"] += int(mask.sum())
    clean = out.loc[~rejected_mask].reset_index(drop=True)
    clean["flags"] = np.zeros(len(clean), dtype="int16")
    named = customer.iloc[positions]
    result = CleanedEvents(events=clean, counts=counts, rejected_positions=positions,
                           rejected_lines=out["_line"].to_numpy()[positions], problems=problems,
                           rejected_customer_ids=named.astype("object").where(named.notna(), None).tolist())
    _drop_repeats(result, rules, ids_distinct=ids_distinct)
    _flag_outliers(result, rules)
    return result


def _codes(column: pd.Series) -> np.ndarray:
    """Factorised codes with missing values coded as "" (what fillna("") would give them)."""
    codes, uniques = pd.factorize(column)
    empty = np.flatnonzero(np.asarray(uniques == "", dtype=bool))
    return np.where(codes < 0, empty[0] if len(empty) else len(uniques), codes)


def _drop_repeats(result: CleanedEvents, rules: CleaningRules, *, ids_distinct: bool = False) -> None:
    events = result.events
    # the store's idempotency key: the same id for another customer is another event
    if ids_distinct:
        repeated_id = np.zeros(len(events), dtype=bool)
    else:
        repeated_id = events.duplicated(["customer_id", "event_id"]).to_numpy()
    result.duplicates = int(repeated_id.sum())
    result.counts["duplicate_event_id_in_batch"] += result.duplicates

    # Same view/click/search of the same thing within seconds: keep the first. Grouped by codes of
    # the key, sorted stably by time within each group: the same order as sorting by the values.
    types = events["event_type"].to_numpy(dtype=np.int64, na_value=-1)
    noisy = np.isin(types, [int(t) for t in NOISY_TYPES]) & ~repeated_id
    near_duplicate = np.zeros(len(events), dtype=bool)
    if noisy.any() and rules.near_duplicate_seconds > 0:
        rows = np.flatnonzero(noisy)
        group = _codes(events["customer_id"])[rows]
        for codes in (types[rows], _codes(events["item_id"])[rows], _codes(events["context"])[rows]):
            group = pd.factorize(group * (int(codes.max()) + 1) + codes)[0]
        micros = events["occurred_at"].astype("int64").to_numpy()[rows]
        order = np.lexsort([micros, group])
        same_key = np.zeros(len(order), dtype=bool)
        same_key[1:] = group[order][1:] == group[order][:-1]
        gap = np.diff(micros[order], prepend=micros[order][:1]) / 1_000_000  # as Timedelta.total_seconds
        repeat = same_key & (gap <= rules.near_duplicate_seconds)
        near_duplicate[rows[order[repeat]]] = True
    result.counts["near_duplicate_removed"] += int(near_duplicate.sum())

    # Purchases are merged only when they share an order id: the same line of the same order
    # delivered twice. Without an order id, identical purchases are separate purchases.
    order_repeat = np.zeros(len(events), dtype=bool)
    is_order_line = (types == EventType.PURCHASE) & (events["order_id"] != "").to_numpy()
    if is_order_line.any():
        sub = events.loc[is_order_line & ~repeated_id, ["customer_id", "order_id", "item_id", "quantity", "value"]]
        dup = sub.duplicated()
        order_repeat[sub.index[dup.to_numpy()]] = True
    result.counts["order_line_repeat_removed"] += int(order_repeat.sum())

    result.removed = int(near_duplicate.sum() + order_repeat.sum())
    drop = repeated_id | near_duplicate | order_repeat
    if drop.any():
        result.events = events.loc[~drop].reset_index(drop=True)


def _flag_outliers(result: CleanedEvents, rules: CleaningRules) -> None:
    events = result.events
    if events.empty:
        return
    flags = events["flags"].to_numpy().copy()
    if events["customer_id"].isna().any() or events["occurred_at"].isna().any():
        minute = events["occurred_at"].dt.floor("min")
        per_minute = events.groupby([events["customer_id"], minute], sort=False)["event_type"].transform("size").to_numpy()
    else:  # the same group sizes by codes (floor division floors the minute like dt.floor)
        minute = pd.factorize(events["occurred_at"].astype("int64").to_numpy() // 60_000_000)[0]
        group = pd.factorize(pd.factorize(events["customer_id"])[0] * (int(minute.max()) + 1) + minute)[0]
        per_minute = np.bincount(group)[group]
    bot = per_minute > rules.bot_events_per_minute
    flags[bot] |= EventFlag.BOT_RATE
    unit_price = (events["value"] / events["quantity"]).to_numpy(dtype="float64", na_value=np.nan)
    outlier = unit_price > rules.max_unit_price
    flags[outlier] |= EventFlag.PRICE_OUTLIER
    events["flags"] = flags
    result.counts["flagged_bot_rate"] += int(bot.sum())
    result.counts["flagged_price_outlier"] += int(outlier.sum())
    result.flagged = int((flags != 0).sum())
