"""A JSON parser that refuses oversized bodies and NUL characters before anything is stored."""

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from portal.errors import NulByte, PayloadTooLarge


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.PORTAL_MAX_EVENT_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        if b"\x00" in raw:
            raise NulByte("the body contains a NUL byte")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"the body is not UTF-8: {exc}") from None
        try:
            data = json.loads(text)
        except RecursionError:
            raise ParseError("malformed JSON: nested too deeply") from None
        except ValueError as exc:
            raise ParseError(f"malformed JSON: {exc}") from None
        if _has_nul(data):
            raise NulByte("a value contains a NUL character (\\u0000)")
        return data


def _has_nul(value) -> bool:
    """Walks without recursion: a body nested as deep as json.loads allows must not overflow the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
