"""Value maps and the built-in normalisation of enumerated fields, applied to a mapped chunk before
validation (README "Value maps and normalisation").

A value map is the operator's dictionary from a source's values to ours for one field
(`{"event_type": {"Completed": "purchase", "Cancelled": "cancellation"}}`); a field with a map
takes only the values it lists. The built-in normalisers know common spellings of gender,
yes/no, age bands and currencies. Both refuse what they do not know: the row is quarantined with
the field and the value named, never guessed. Pure pandas, vectorised over the chunk.
"""

import re

import numpy as np
import pandas as pd

# Customer attributes an event file may carry beside its events (the customer is the event's
# customer_id). The names are CustomerRow's; none collides with an event field.
CUSTOMER_FIELDS = (
    "email", "name", "phone", "age", "age_band", "gender", "region", "signup_date", "is_loyalty_member",
    "consent_profiling", "consent_marketing",
)
BOOLEAN_FIELDS = ("is_loyalty_member", "consent_profiling", "consent_marketing")
# the fields whose values come from a short list: the preview counts their values
ENUMERATED_FIELDS = ("event_type", "currency", "channel", "device", "gender", "age_band", *BOOLEAN_FIELDS)

GENDERS = {
    "male": "male", "m": "male", "man": "male", "men": "male", "boy": "male", "男": "male", "男性": "male",
    "female": "female", "f": "female", "woman": "female", "women": "female", "girl": "female", "女": "female",
    "女性": "female",
    "other": "other", "o": "other", "x": "other", "diverse": "other", "non-binary": "other", "nonbinary": "other",
    "其他": "other",
}
BOOLEANS = {
    "yes": True, "y": True, "true": True, "t": True, "1": True, "on": True, "是": True, "有": True, "会员": True,
    "no": False, "n": False, "false": False, "f": False, "0": False, "off": False, "否": False, "无": False,
    "非会员": False,
}
AGE_BANDS = ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_BAND_RANGE = re.compile(r"^(\d{1,3})\s*(?:-|–|—|~|to|至|到)\s*(\d{1,3})\s*(?:岁|years?)?$")
_BAND_BELOW = re.compile(r"^(?:<\s*|under\s*|below\s*|less than\s*)(\d{1,3})\s*(?:岁|years?)?$|^(\d{1,3})\s*岁以下$")
_BAND_ABOVE = re.compile(r"^(\d{1,3})\s*(?:\+|\s*and (?:over|older|above)|\s*or (?:over|older|more)|岁以上|岁及以上)$|^(?:over|>=?)\s*(\d{1,3})$")
CURRENCY_ALIASES = {
    # "$" stays USD as it always was here; "dollar" or "pound" alone is ambiguous and refused
    "$": "USD", "US$": "USD", "USD$": "USD", "US DOLLAR": "USD", "US DOLLARS": "USD", "美元": "USD",
    "€": "EUR", "EURO": "EUR", "EUROS": "EUR", "欧元": "EUR",
    "£": "GBP", "POUND STERLING": "GBP", "英镑": "GBP",
    "¥": "CNY", "￥": "CNY", "RMB": "CNY", "YUAN": "CNY", "元": "CNY", "人民币": "CNY", "CN¥": "CNY",
    "JP¥": "JPY", "YEN": "JPY", "円": "JPY", "日元": "JPY",
    "HK$": "HKD", "港币": "HKD", "港元": "HKD", "NT$": "TWD", "A$": "AUD", "C$": "CAD", "S$": "SGD",
    "₩": "KRW", "₹": "INR",
}

Problem = tuple[np.ndarray, str, str]  # (row mask, field, message), as cleaning's problems


def value_map_parse(text: str) -> dict[str, str]:
    """`Completed=purchase,Cancelled=cancellation` → {"Completed": "purchase", ...}. Values that
    hold ',' or '=' need the mapping JSON."""
    pairs = {}
    for part in text.split(","):
        if not part.strip():
            continue
        source, sep, ours = part.partition("=")
        if not sep:
            raise ValueError(f"{part.strip()!r} is not SOURCE=OURS")
        pairs[source.strip()] = ours.strip()
    if not pairs:
        raise ValueError("an empty value map")
    return pairs


def value_map_option_parse(text: str) -> tuple[str, str | None, dict[str, str]]:
    """`--value-map FIELD=[COLUMN:]SOURCE=OURS,...` → (field, column or None, map). A column name
    with ':' or '=' can be quoted: event_type='"Order: Status"':Completed=purchase."""
    field, sep, rest = text.partition("=")
    if not sep or not field.strip():
        raise ValueError(f"expects FIELD=[COLUMN:]SOURCE=OURS,...; got {text!r}")
    column = None
    rest = rest.strip()
    if rest[:1] in "\"'" and rest[:1] and rest.find(rest[0], 1) > 0:
        end = rest.find(rest[0], 1)
        column, rest = rest[1:end], rest[end + 1:]
        if not rest.startswith(":"):
            raise ValueError(f"expects ':' after the quoted column in {text!r}")
        rest = rest[1:]
    else:
        colon, equals = rest.find(":"), rest.find("=")
        if 0 <= colon < equals:
            column, rest = rest[:colon].strip(), rest[colon + 1:]
    return field.strip(), column, value_map_parse(rest)


def _present(frame: pd.DataFrame, name: str) -> tuple[pd.Series, np.ndarray]:
    """The column as stripped text, and where it holds a value."""
    column = frame[name]
    text = column.astype("str").str.strip()
    present = column.notna().to_numpy() & (text != "").to_numpy()
    return text.where(present, ""), present


def _kept(values: pd.Series, keep: np.ndarray) -> pd.Series:
    """An object column of `values` where `keep`, None elsewhere (pandas' `where` would put NaN)."""
    return pd.Series(np.where(keep, values.to_numpy(dtype=object), None), index=values.index, dtype="object")


def _shown(value) -> str:
    return repr(str(value)[:60])


def _lookup(text: pd.Series, present: np.ndarray, table: dict) -> tuple[pd.Series, np.ndarray]:
    """Map through `table` matching exactly, then ignoring case; where nothing matches: unknown."""
    exact = text.map(table)
    folded = {str(k).casefold(): v for k, v in table.items()}
    mapped = exact.where(exact.notna(), text.str.casefold().map(folded))
    unknown = present & mapped.isna().to_numpy()
    return mapped, unknown


def _refuse(problems: list[Problem], unknown: np.ndarray, text: pd.Series, field: str, what: str) -> None:
    """One problem per distinct bad value, so the row's reason names the value it holds."""
    if not unknown.any():
        return
    bad = text[unknown]
    for value in bad.unique()[:1000]:
        problems.append(((text == value).to_numpy() & unknown, field, f"{_shown(value)} {what}"))
    if bad.nunique() > 1000:  # a column of free text: name the rest in one message
        listed = set(bad.unique()[:1000])
        rest = unknown & ~text.isin(listed).to_numpy()
        problems.append((rest, field, what))


def value_maps_apply(frame: pd.DataFrame, value_maps: dict[str, dict[str, str]]) -> list[Problem]:
    """Replace each mapped field's values by the map's (in place). A value the map lacks is a
    problem naming field and value; an empty cell stays empty unless the map has a key ""."""
    problems: list[Problem] = []
    for field, table in (value_maps or {}).items():
        if field not in frame:
            continue
        text, present = _present(frame, field)
        mapped, unknown = _lookup(text, present, table)
        _refuse(problems, unknown, text, field, "is not in the value map")
        if "" in table:
            mapped = pd.Series(np.where(present, mapped.to_numpy(dtype=object), table[""]), index=mapped.index)
            present = np.ones(len(frame), dtype=bool)
        frame[field] = _kept(mapped, present & ~unknown)
    return problems


def currency_normalise(text: pd.Series) -> pd.Series:
    """Upper-cased codes and common symbols and names as ISO 4217 codes; the rest as given (upper-
    cased), for cleaning to refuse if it is not three letters. Looked up once per distinct value."""
    codes, uniques = pd.factorize(text)
    if not len(uniques):
        return text

    def one(value):
        if not isinstance(value, str):
            return value
        upper = value.strip().upper()
        return CURRENCY_ALIASES.get(upper, CURRENCY_ALIASES.get(upper.replace(" ", ""), upper))

    looked_up = np.array([one(v) for v in uniques] + [None], dtype=object)
    return pd.Series(looked_up[codes], index=text.index, dtype="object").where(codes >= 0)


def _age_band(value: str) -> str | None:
    """A band spelled our way or another that means exactly one of ours; None otherwise."""
    text = value.strip().lower()
    if text in AGE_BANDS:
        return text
    if match := _BAND_RANGE.match(text):
        candidate = f"{int(match.group(1))}-{int(match.group(2))}"
        return candidate if candidate in AGE_BANDS else None
    if match := _BAND_BELOW.match(text):
        return "<18" if int(match.group(1) or match.group(2)) == 18 else None
    if match := _BAND_ABOVE.match(text):
        return "65+" if int(match.group(1) or match.group(2)) == 65 else None
    return None


def customer_fields_normalise(frame: pd.DataFrame) -> list[Problem]:
    """Normalise and check the customer attributes present in `frame` (in place): gender, yes/no
    fields, age (a whole number 0–130), age band, and the text fields' shapes and lengths, as the
    customers API would. Returns the problems (rows to quarantine)."""
    problems: list[Problem] = []
    if "gender" in frame:
        text, present = _present(frame, "gender")
        mapped, unknown = _lookup(text, present, GENDERS)
        _refuse(problems, unknown, text, "gender", "is not a gender we know (male, female, other)")
        frame["gender"] = _kept(mapped, present & ~unknown)
    for field in BOOLEAN_FIELDS:
        if field in frame:
            text, present = _present(frame, field)
            mapped, unknown = _lookup(text, present, BOOLEANS)
            _refuse(problems, unknown, text, field, "is not yes or no")
            frame[field] = _kept(mapped, present & ~unknown)
    if "age" in frame:
        text, present = _present(frame, "age")
        number = pd.to_numeric(text.where(present), errors="coerce")
        bad = present & ~(number.notna() & (number == np.floor(number)) & (number >= 0) & (number <= 130)).to_numpy()
        _refuse(problems, bad, text, "age", "is not an age (a whole number 0–130)")
        whole = number.where(pd.Series(present & ~bad, index=number.index), 0).round().astype("int64")
        frame["age"] = _kept(whole.map(int), present & ~bad)
    if "age_band" in frame:
        text, present = _present(frame, "age_band")
        bands = text.where(present).map(lambda v: _age_band(v) if isinstance(v, str) else None)
        unknown = present & bands.isna().to_numpy()
        _refuse(problems, unknown, text, "age_band", f"is not one of our age bands ({', '.join(AGE_BANDS)})")
        frame["age_band"] = _kept(bands, present & ~unknown)
    shapes = {
        "email": (r"[^@\s]+@[^@\s]+\.[^@\s]+", 254, "is not an email address"),
        "phone": (r"\+?[0-9 ()\-]{4,32}", 32, "is not a phone number"),
        "name": (None, 200, ""),
        "region": (None, 64, ""),
    }
    for field, (pattern, limit, message) in shapes.items():
        if field not in frame:
            continue
        text, present = _present(frame, field)
        if pattern:
            bad = present & ~text.str.fullmatch(pattern, na=False).to_numpy()
            problems.append((bad, field, message))
        long = present & (text.str.len() > limit).to_numpy()
        problems.append((long, field, f"longer than {limit} characters"))
        frame[field] = _kept(text, present)
    if "signup_date" in frame:
        text, present = _present(frame, "signup_date")
        dates = pd.to_datetime(text.where(present), format="ISO8601", errors="coerce")
        bad = present & dates.isna().to_numpy()
        _refuse(problems, bad, text, "signup_date", "is not a date (YYYY-MM-DD)")
        frame["signup_date"] = _kept(dates.dt.strftime("%Y-%m-%d"), present & ~bad)
    return [p for p in problems if p[0].any()]
