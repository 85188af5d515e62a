"""The events endpoint's quick validation (escalation.api.serializers.QuickValidation) against DRF's own.

Whatever the quick path accepts, DRF accepts with the same values; whatever DRF refuses, the quick path
leaves to DRF, so the errors are DRF's.
"""

import itertools
import random

import pytest
from rest_framework import serializers

from escalation.api.fields import REVALIDATE, QuickListField, StrictCharField
from escalation.api.serializers import EventInputSerializer, _quick_values

TEXTS = [
    "abc",
    "  padded  ",
    "",
    "   ",
    "\t\n",
    "\u3000wide space\u3000",
    "x" * 9,
    "x" * 10,
    "x" * 11,
    " " + "x" * 10 + " ",
    "nul\x00inside",
    "lone \ud800 surrogate",
    "naïve ünïcode ✓",
    5,
    1.5,
    True,
    None,
    ["a list"],
    {"a": "dict"},
]
FIELD_OPTIONS = [
    {"max_length": 10},
    {"max_length": 10, "allow_blank": True},
    {"max_length": 10, "trim_whitespace": False},
    {"max_length": 10, "allow_blank": True, "trim_whitespace": False},
    {"min_length": 3, "allow_blank": True},
    {},
]


def quick_accepted(field, values: list) -> int:
    """Check ``field.quick`` against ``field.run_validation`` on each value; how many it accepted itself."""
    assert field.checks_are_drfs()
    accepted = 0
    for data in values:
        quick = field.quick(data)
        try:
            validated = field.run_validation(data)
        except serializers.ValidationError:
            assert quick is REVALIDATE, data
            continue
        if quick is not REVALIDATE:
            assert quick == validated, data
            accepted += 1
    return accepted


@pytest.mark.parametrize("options", FIELD_OPTIONS)
def test_a_quick_check_returns_what_run_validation_returns_or_leaves_the_value_to_it(options):
    assert quick_accepted(StrictCharField(**options), TEXTS) >= 4  # it does accept the common strings


def test_a_field_with_validators_of_its_own_never_takes_the_quick_check():
    field = StrictCharField(max_length=10, validators=[lambda value: None])
    assert not field.checks_are_drfs()


LISTS = [
    [],
    ["a.py"],
    [" a.py ", "b.txt"],
    ["x" * 11],
    ["ok", ""],
    ["ok", None],
    ["ok", 5],
    "a.py",
    None,
    {"a": 1},
    ("a",),
]


@pytest.mark.parametrize(
    "options", [{"max_length": 2}, {"allow_empty": False}, {"min_length": 1, "allow_null": True}, {}]
)
def test_a_quick_list_check_returns_what_run_validation_returns_or_leaves_the_value_to_it(options):
    assert quick_accepted(QuickListField(child=StrictCharField(max_length=10), **options), LISTS) >= 2
    assert not QuickListField(child=serializers.CharField()).checks_are_drfs()


class DrfOnly(EventInputSerializer):
    """The same fields, validated by DRF's loop alone."""

    _quick_plan_once = None


POOLS = {
    "source": ["github-actions", " jenkins ", "", 7, None],
    "repository": ["acme/shop", "acme/" + "r" * 251, "acme/" + "r" * 260, "  "],
    "branch": ["main", "release/2.4", "", "feature/\x00"],
    "commit": ["9f1c2e7", "a" * 64, "a" * 65],
    "commit_author": ["dev@example.com", "", "  ", None],
    "run_id": ["1001", " 1001 ", 1001],
    "attempt": [1, 2, 0, "2", 2**31, True],
    "job": ["unit-tests", "test / unit (py3.12)", ""],
    "status": ["failure", "success", "FAILURE", "cancelled"],
    "step": ["pytest", "", "\ud83d"],
    "type": ["unit_test", "", "not-a-type", "t" * 33],
    "log_excerpt": ["FAILED tests/test_cart.py::test_total\n", "  indented\n", "", "\x00", 12],
    "url": ["https://ci.example.com/run/1", "", "not a url", "ftp://example.com/x"],
    "runner": ["linux-x64-large", ""],
    "changed_files": [["src/a.py", "b.txt"], [], None, ["x" * 1001], "src/a.py", [1]],
    "started_at": ["2026-11-24T10:00:00Z", None, "yesterday"],
    "finished_at": ["2026-11-24T10:05:00+01:00", None, "2026-13-01T00:00:00Z"],
    "idempotency_key": ["delivery-1", "", "k" * 256],
}
REQUIRED = {"source", "repository", "branch", "commit", "run_id", "job", "status"}


def payloads(count: int):
    rng = random.Random(20261125)
    for _ in range(count):
        body = {}
        for name, pool in POOLS.items():
            if name in REQUIRED or rng.random() < 0.7:
                body[name] = rng.choice(pool[:2] if rng.random() < 0.9 else pool)
        if rng.random() < 0.1:
            body.pop(rng.choice(sorted(REQUIRED)))
        yield body


def test_the_serializer_validates_every_body_as_drf_does():
    quick_accepted = refused = 0
    for body in itertools.islice(payloads(3000), 3000):
        ours, drf = EventInputSerializer(data=body), DrfOnly(data=body)
        assert ours.is_valid() == drf.is_valid(), body
        if drf.errors:
            assert ours.errors == drf.errors, body
            refused += 1
        else:
            assert ours.validated_data == drf.validated_data, body
            quick_accepted += _quick_values(EventInputSerializer()._quick_plan(), body) is not None
    assert quick_accepted > 300 and refused > 300  # both paths were taken many times
