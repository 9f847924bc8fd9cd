"""Model fields shared by the apps.

PipelineJSONField: Django's JSONField read with orjson instead of the standard library's json. A profile
request decodes ~8 KB of JSON (the feature set's population table, the profile's traits and explanation,
the prediction's drivers and the fit's thresholds): 200–250 µs with json.loads against 28–42 µs with
orjson on the bench's data (issue 20). Only for columns the pipeline itself writes: orjson reads an
integer beyond 64 bits as a float where json keeps it exact, and the pipeline writes Python floats and
64-bit integers only. Whatever orjson refuses (an integer overflowing a double, say) is read by Django's
own path, as before. Writes are Django's, unchanged."""

import orjson
from django.db import models


class PipelineJSONField(models.JSONField):
    def from_db_value(self, value, expression, connection):
        if isinstance(value, str) and self.decoder is None:
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        return super().from_db_value(value, expression, connection)
