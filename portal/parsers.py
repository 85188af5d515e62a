"""A JSON parser that refuses oversized bodies and NUL characters before anything is stored.

Text that is not UTF-8 is refused, except in the fields a view names in ``lenient_text_fields``
(the events API's ``log_excerpt``): CI logs carry whatever bytes the tools printed, so there each
invalid byte sequence, or lone surrogate escape, becomes U+FFFD instead of failing the event.
"""

import json
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from portal.errors import NulByte, PayloadTooLarge

# A \uD800-\uDFFF escape may decode to a lone surrogate, which no UTF-8 encoder accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


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
            suspect = _SURROGATE_ESCAPE.search(text) is not None
        except UnicodeDecodeError:
            text, suspect = raw.decode("utf-8", errors="surrogateescape"), True  # bad bytes become lone surrogates
        try:
            data = json.loads(text)
        except RecursionError:
            raise ParseError("malformed JSON: nested too deeply") from None
        except ValueError as exc:
            raise ParseError(f"malformed JSON: {exc}") from None
        if "\\u0000" in text and _has_nul(data):  # JSON writes a NUL only as this escape (raw ones are refused)
            raise NulByte("a value contains a NUL character (\\u0000)")
        if not suspect:
            return data
        view = (parser_context or {}).get("view")
        return _undecodable_replaced(data, lenient=frozenset(getattr(view, "lenient_text_fields", ())))


def _undecodable_replaced(data, *, lenient: frozenset[str]):
    """Replace undecodable text in the lenient top-level fields; refuse it anywhere else."""
    from escalation.services.log_text import has_undecodable, log_text_decode

    if isinstance(data, dict):
        for key in lenient:
            if isinstance(data.get(key), str) and has_undecodable(data[key]):
                data[key] = log_text_decode(data[key])
    where = _undecodable_at(data)
    if where is not None:
        raise ParseError(f"the body is not UTF-8: {where} holds bytes or escapes that are not valid UTF-8 text")
    return data


def _undecodable_at(value) -> str | None:
    """Where the first string that cannot be UTF-8 encoded sits, walked without recursion."""
    from escalation.services.log_text import has_undecodable

    stack = [("the body", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if has_undecodable(item):
                return where
        elif isinstance(item, dict):
            for key, inner in item.items():
                stack.append((f"a key of {where}", key))
                stack.append((f"{key!r}" if where == "the body" else f"{where}.{key}", inner))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", inner) for i, inner in enumerate(item))
    return None


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
