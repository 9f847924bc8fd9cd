"""The built-in normalisation of enumerated fields and value maps (pure pandas, no database):
every spelling the README lists becomes ours, and what is not known is refused with the field and
the value named, never guessed."""

import pandas as pd
import pytest

from ingestion.normalise import (
    currency_normalise,
    customer_fields_normalise,
    value_map_option_parse,
    value_maps_apply,
)


def normalised(field: str, values: list) -> tuple[list, dict[int, str]]:
    frame = pd.DataFrame({field: pd.Series(values, dtype="object")})
    problems = customer_fields_normalise(frame)
    refused = {int(p): f"{name}: {message}" for mask, name, message in problems for p in mask.nonzero()[0]}
    return frame[field].tolist(), refused


@pytest.mark.parametrize(("spelling", "ours"), [
    ("M", "male"), ("m", "male"), ("Male", "male"), ("MALE", "male"), (" man ", "male"), ("男", "male"), ("男性", "male"),
    ("F", "female"), ("Female", "female"), ("woman", "female"), ("女", "female"), ("女性", "female"),
    ("Other", "other"), ("X", "other"), ("non-binary", "other"), ("其他", "other"),
])
def test_gender_spellings(spelling, ours):
    assert normalised("gender", [spelling]) == ([ours], {})


@pytest.mark.parametrize(("spelling", "ours"), [
    ("Yes", True), ("yes", True), ("Y", True), ("true", True), ("TRUE", True), ("T", True), ("1", True), ("on", True),
    ("是", True), ("No", False), ("N", False), ("false", False), ("0", False), ("off", False), ("否", False),
])
@pytest.mark.parametrize("field", ["is_loyalty_member", "consent_profiling", "consent_marketing"])
def test_yes_no_spellings(field, spelling, ours):
    assert normalised(field, [spelling]) == ([ours], {})


@pytest.mark.parametrize(("spelling", "ours"), [
    ("18-24", "18-24"), ("18–24", "18-24"), ("18 to 24", "18-24"), ("18~24岁", "18-24"), ("25 - 34", "25-34"),
    ("35至44岁", "35-44"), ("<18", "<18"), ("under 18", "<18"), ("18岁以下", "<18"), ("65+", "65+"),
    ("65 and over", "65+"), ("65岁以上", "65+"), ("over 65", "65+"), ("55-64 years", "55-64"),
])
def test_age_band_spellings(spelling, ours):
    assert normalised("age_band", [spelling]) == ([ours], {})


@pytest.mark.parametrize(("spelling", "ours"), [
    ("usd", "USD"), ("$", "USD"), ("US$", "USD"), ("US dollar", "USD"), ("美元", "USD"), ("€", "EUR"), ("euro", "EUR"),
    ("£", "GBP"), ("¥", "CNY"), ("￥", "CNY"), ("RMB", "CNY"), ("元", "CNY"), ("人民币", "CNY"), ("yen", "JPY"),
    ("円", "JPY"), ("HK$", "HKD"), (" eur ", "EUR"),
])
def test_currency_spellings(spelling, ours):
    assert currency_normalise(pd.Series([spelling])).tolist() == [ours]


def test_unknown_spellings_are_refused_with_field_and_value_not_guessed():
    assert normalised("gender", ["Mle", "", None, "M"]) == ([None, None, None, "male"], {
        0: "gender: 'Mle' is not a gender we know (male, female, other)"})  # empty is not an error
    assert normalised("is_loyalty_member", ["maybe"])[1] == {0: "is_loyalty_member: 'maybe' is not yes or no"}
    bands = "<18, 18-24, 25-34, 35-44, 45-54, 55-64, 65+"
    assert normalised("age_band", ["20-29", "over 60"])[1] == {
        0: f"age_band: '20-29' is not one of our age bands ({bands})",
        1: f"age_band: 'over 60' is not one of our age bands ({bands})"}
    assert normalised("age", ["34", "34.0", "-1", "131", "thirty"]) == ([34, 34, None, None, None], {
        2: "age: '-1' is not an age (a whole number 0–130)", 3: "age: '131' is not an age (a whole number 0–130)",
        4: "age: 'thirty' is not an age (a whole number 0–130)"})
    # "dollars" could be any of a dozen currencies: left as it is, for cleaning to refuse
    assert currency_normalise(pd.Series(["dollars", "pound"])).tolist() == ["DOLLARS", "POUND"]


def test_value_map_matches_exactly_then_ignoring_case_and_refuses_the_rest():
    frame = pd.DataFrame({"event_type": ["Completed", "cancelled", " Completed ", "Pending", ""]})

    problems = value_maps_apply(frame, {"event_type": {"Completed": "purchase", "Cancelled": "cancellation"}})

    assert frame["event_type"].tolist() == ["purchase", "cancellation", "purchase", None, None]
    assert [(list(mask.nonzero()[0]), name, message) for mask, name, message in problems] == [
        ([3], "event_type", "'Pending' is not in the value map")]


@pytest.mark.parametrize(("option", "parsed"), [
    ("event_type=Order Status:Completed=purchase,Cancelled=cancellation",
     ("event_type", "Order Status", {"Completed": "purchase", "Cancelled": "cancellation"})),
    ('event_type="Order Status":Completed=purchase', ("event_type", "Order Status", {"Completed": "purchase"})),
    ("gender=H=male, D=female", ("gender", None, {"H": "male", "D": "female"})),
    ("event_type='Status: final':Done=purchase", ("event_type", "Status: final", {"Done": "purchase"})),
])
def test_value_map_option(option, parsed):
    assert value_map_option_parse(option) == parsed


@pytest.mark.parametrize("option", ["event_type", "event_type=Status:", "event_type=Status:Completed"])
def test_value_map_option_refuses_what_it_cannot_read(option):
    with pytest.raises(ValueError):
        value_map_option_parse(option)
