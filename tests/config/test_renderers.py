"""config.renderers: plain JSON answers written by orjson, everything else by DRF as before. What an app
reads is the same value either way; the one difference of substance (a NaN is null, not a 500) is
pinned here."""

import datetime
import decimal
import json
import math
import uuid

import numpy as np
import pytest
from django.utils.translation import gettext_lazy
from rest_framework import renderers

from config.renderers import JSONRenderer

ANSWER = {
    "key": "ab" * 32, "similarity": 0.123456, "small": 1e-05, "count": 2**62, "none": None, "flags": [True, False],
    "nested": {"list": [1, 2.5, "three"], "tuple": (1, 2)}, 3: "an int key",
    "at": datetime.datetime(2026, 12, 1, 10, 30, 15, 123456, tzinfo=datetime.UTC),
    "day": datetime.date(2026, 12, 1), "decimal": decimal.Decimal("12.50"), "id": uuid.UUID(int=7),
    "label": gettext_lazy("likely to churn"), "numpy": np.float64(0.25), "array": np.arange(3),
    "text": "中文 and a line\u2028separator\u2029",
}


def _drf(data, media_type="application/json"):
    return renderers.JSONRenderer().render(data, media_type)


def test_a_plain_json_answer_reads_as_drf_writes_it():
    written = JSONRenderer().render(ANSWER, "application/json")

    assert json.loads(written) == json.loads(_drf(ANSWER))
    read = json.loads(written)
    assert read["at"] == "2026-12-01T10:30:15.123456Z"  # DRF's encoder: Z for UTC
    assert read["3"] == "an int key" and read["decimal"] == 12.5 and read["label"] == "likely to churn"
    # JSON that is also JavaScript, as DRF writes it; UTF-8, not \u escapes, for the rest
    assert b"\\u2028" in written and b"\\u2029" in written and "中文".encode() in written


def test_a_float_that_is_not_a_number_is_null_instead_of_a_failed_request():
    with pytest.raises(ValueError):
        _drf({"x": math.nan})

    assert json.loads(JSONRenderer().render({"x": math.nan, "y": math.inf}, "application/json")) == {"x": None, "y": None}


def test_what_orjson_cannot_write_and_indented_answers_go_through_drf():
    huge = {"n": 2**70}
    assert json.loads(JSONRenderer().render(huge, "application/json")) == huge  # exact, as DRF writes it

    indented = JSONRenderer().render({"a": [1]}, "application/json; indent=2")
    assert indented == _drf({"a": [1]}, "application/json; indent=2") and b"\n  " in indented
    assert JSONRenderer().render(None, "application/json") == b""
