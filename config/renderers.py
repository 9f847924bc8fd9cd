"""How API answers are written: DRF's JSON renderer writing with orjson when the answer is DRF's default
shape (compact, UTF-8, no indent): 49 µs → 4 µs for a profile's answer on the bench's data (issue 20).

The differences from DRF's json.dumps are spelling only (`1e-05` is `1e-5`), and one of substance: a
float that is not a number (NaN, ±inf) is written as `null` where DRF's strict mode would fail the
request with a 500. Datetimes and dataclasses go to DRF's encoder as before (its `Z` for UTC), and an
answer orjson refuses (an integer beyond 64 bits) is written by DRF's path. Any other shape (an
indent asked for in Accept, the browsable API's) is DRF's."""

import orjson
from rest_framework import renderers

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_PLAIN_JSON = "application/json"


class JSONRenderer(renderers.JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        if (data is not None and accepted_media_type == _PLAIN_JSON and self.compact and not self.ensure_ascii
                and (renderer_context or {}).get("indent") is None):
            try:
                written = orjson.dumps(data, default=self.encoder_class().default, option=_ORJSON_OPTIONS)
            except orjson.JSONEncodeError:
                pass
            else:
                # as DRF does: JSON that is also a strict subset of JavaScript
                return written.replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")
        return super().render(data, accepted_media_type, renderer_context)
