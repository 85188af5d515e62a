import datetime
import decimal
import json

import pytest
from django.core.serializers.json import DjangoJSONEncoder

from escalation.choices import FailureStatus
from portal.json_text import json_text

AT = datetime.datetime(2026, 3, 4, 10, 11, 12, 345678, tzinfo=datetime.UTC)


def test_json_text_writes_what_json_dumps_writes():
    value = {"status": FailureStatus.OPEN, "at": AT, "n": [1, 2.5, None, True], "nested": {"k": ("a", "b")}}
    text = json_text(value, default=str)
    assert json.loads(text) == {
        "status": "open",
        "at": AT.isoformat(),
        "n": [1, 2.5, None, True],
        "nested": {"k": ["a", "b"]},
    }


def test_json_text_writes_dates_by_the_default_when_asked():
    encoder = DjangoJSONEncoder()
    value = {"at": AT, "day": datetime.date(2026, 3, 5), "amount": decimal.Decimal("1.10")}
    text = json_text(value, default=encoder.default, datetimes_by_default=True)
    assert json.loads(text) == json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    assert json.loads(text)["at"] == "2026-03-04T10:11:12.345Z"  # Django's format, not orjson's


def test_json_text_writes_what_orjson_refuses_through_the_standard_library():
    value = {"big": 2**70, 3: "an integer key"}
    assert json.loads(json_text(value, default=str)) == {"big": 2**70, "3": "an integer key"}


def test_json_text_raises_for_what_the_default_cannot_write():
    def refuse(value):
        raise TypeError(f"cannot write {type(value).__name__}")

    with pytest.raises(TypeError, match="cannot write object"):
        json_text({"x": object()}, default=refuse)
