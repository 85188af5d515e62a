"""Serializer fields that refuse values of the wrong JSON type instead of coercing them."""

import re

from django.core.validators import MaxLengthValidator, MinLengthValidator, ProhibitNullCharactersValidator
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.validators import ProhibitSurrogateCharactersValidator

_SURROGATE = re.compile("[\ud800-\udfff]")

# StrictCharField.quick's answer when run_validation must decide (and name the problem).
REVALIDATE = object()


class _NoSurrogates(ProhibitSurrogateCharactersValidator):
    """DRF's check, its message and code, as one regular-expression search: DRF's loops over every
    character in Python, which for a log excerpt of a few kilobytes cost more than the rest of the
    event's validation."""

    def __call__(self, value):
        found = _SURROGATE.search(str(value))
        if found:
            raise ValidationError(self.message.format(code_point=ord(found.group())), code=self.code)


class StrictCharField(serializers.CharField):
    default_error_messages = {"invalid": "must be a string"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [
            _NoSurrogates() if type(v) is ProhibitSurrogateCharactersValidator else v for v in self.validators
        ]

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)

    def quick(self, data: object) -> object:
        """What ``run_validation(data)`` returns for a string it accepts, without DRF's calls per check (the
        events endpoint validates a dozen of these per request); REVALIDATE for anything else, which
        ``run_validation`` then accepts or refuses with its own message."""
        if type(data) is not str:
            return REVALIDATE
        value = data.strip() if self.trim_whitespace else data
        if not value:
            return "" if self.allow_blank else REVALIDATE
        if self.max_length is not None and len(value) > self.max_length:
            return REVALIDATE
        if self.min_length is not None and len(value) < self.min_length:
            return REVALIDATE
        if "\x00" in value or _SURROGATE.search(value):
            return REVALIDATE
        return value

    def checks_are_drfs(self) -> bool:
        """Whether the validators are the ones CharField adds, all of which ``quick`` applies itself (use
        ``quick`` only then)."""
        known = (MaxLengthValidator, MinLengthValidator, ProhibitNullCharactersValidator, _NoSurrogates)
        return all(type(validator) in known for validator in self.validators)


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": "must be an integer"}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class QuickListField(serializers.ListField):
    """A ListField with ``quick`` (see StrictCharField.quick) for a list of strings its child accepts quickly."""

    def quick(self, data: object) -> object:
        if type(data) is not list or (not data and not self.allow_empty):
            return REVALIDATE
        if self.max_length is not None and len(data) > self.max_length:
            return REVALIDATE
        if self.min_length is not None and len(data) < self.min_length:
            return REVALIDATE
        values = [self.child.quick(item) for item in data]
        return REVALIDATE if REVALIDATE in values else values

    def checks_are_drfs(self) -> bool:
        """Whether ``quick`` applies every check: a StrictCharField child with DRF's checks, and only the
        length validators ListField adds."""
        child = self.child
        return (
            isinstance(child, StrictCharField)
            and child.checks_are_drfs()
            and all(type(validator) in (MaxLengthValidator, MinLengthValidator) for validator in self.validators)
        )
