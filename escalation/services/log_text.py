"""Log text as the portal keeps it: valid UTF-8, at most PORTAL_LOG_EXCERPT_LIMIT bytes, the tail kept.

CI logs are whatever the tools printed: Latin-1 from an old compiler, a cut multi-byte character at
a buffer edge, a lone surrogate from a JSON encoder. None of that is a reason to refuse a failure,
so undecodable text is replaced with U+FFFD and an excerpt over the limit keeps its end, where the
error is.
"""

import re

from django.conf import settings

REPLACEMENT = "\ufffd"


def log_text_decode(raw: bytes | str) -> str:
    """Text that PostgreSQL and every encoder accept: invalid UTF-8 and lone surrogates become U+FFFD; NUL too."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="replace")
    else:
        text = raw if not has_undecodable(raw) else _SURROGATES.sub(_replace_run, raw)
    return text.replace("\x00", REPLACEMENT) if "\x00" in text else text


_SURROGATES = re.compile("[\ud800-\udfff]+")


def _replace_run(match: re.Match) -> str:
    """Surrogate-escaped bytes decode as their bytes would have (one U+FFFD per invalid sequence); other
    lone surrogates (JSON escapes) become one U+FFFD each."""
    run = match.group()
    try:
        return run.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
        return REPLACEMENT * len(run)


def log_excerpt_clip(raw: bytes | str, *, limit: int | None = None) -> str:
    """The excerpt as stored: decoded with replacement, then cut to its last ``limit`` UTF-8 bytes.

    The cut falls on a character boundary, so the kept tail is never a broken character.
    """
    limit = settings.PORTAL_LOG_EXCERPT_LIMIT if limit is None else limit
    text = log_text_decode(raw)
    if len(text) <= limit // 4:  # four bytes per character at most: surely under the limit
        return text
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    tail = data[-limit:]
    start = 0
    while start < len(tail) and (tail[start] & 0xC0) == 0x80:  # skip continuation bytes of a cut character
        start += 1
    return tail[start:].decode("utf-8")


def has_undecodable(text: str) -> bool:
    """True when ``text`` holds lone surrogates (JSON escapes or surrogateescape'd bytes), i.e. is not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
