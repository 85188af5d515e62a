"""Error signatures: the same error, in any job or repository, gets the same short text.

A signature is the log excerpt's last error line, normalised: colours, timestamps, temporary
paths, CI workspace paths, quoted values, UUIDs, hex ids and numbers are replaced by placeholders,
whitespace is collapsed and the text lower-cased. Test-runner summaries ("3 failed, 41 passed")
are skipped when a more specific error line is there, since every failing run of a tool prints
them. It depends on the log alone, never on the rules, so reclassifying a failure keeps it.
"""

import re

SIGNATURE_CHARS = 255
_SCAN_CHARS = 16 * 1024  # the error is at the end of a log; the last 16 KiB hold it
_LINE_CHARS = 1000

_ERROR_LINE = re.compile(
    r"\b(error|errors|exception|fatal|panic|failed|failure|failures|refused|denied|timed? ?out|timeout"
    r"|cannot|can't|could not|unable to|not found|no such|unreachable|crash\w*|killed|abort\w*|broke|leaks?"
    r"|vulnerabilit\w+|regress\w*|secret\w*|exceeded|violat\w+|mismatch\w*)\b|✖|✗|\bFAIL\b",
    re.IGNORECASE,
)
_SUMMARY_LINE = re.compile(
    r"\b\d+ (failed|passed|errors?|failures?|skipped|tests?|examples?|pending)\b|\bFailures: \d+|\bTests run: \d+",
    re.IGNORECASE,
)

# (pattern, placeholder), applied in order: the longer, more specific shapes first.
_NORMALISERS = [
    (re.compile(r"\x1b\[[0-9;?]*[A-Za-z]"), ""),  # ANSI colours
    (re.compile(r"^\s*\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z?\s+"), ""),  # GitHub Actions line prefix
    (
        re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\b"),
        "<time>",
    ),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b"), "<date>"),
    (re.compile(r"\b\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s?([AP]M)?\b", re.IGNORECASE), "<time>"),
    (
        re.compile(
            r"(/tmp|/var/tmp|/var/folders|/private/var/folders|/private/tmp|[A-Za-z]:\\Users\\[^\\\s]+\\AppData"
            r"\\Local\\Temp|\$TMPDIR|/dev/shm)[^\s:'\"`),]*"
        ),
        "<tmp>",
    ),
    (
        re.compile(r"(/home/runner/work|/builds|/var/lib/jenkins/workspace|/workspace|/github/workspace)/[^\s:'\"`)]*"),
        "<workspace>",
    ),
    (re.compile(r'"[^"\n]*"'), "<str>"),
    (re.compile(r"(?<![\w'])'[^'\n]*'(?![\w'])"), "<str>"),
    (re.compile(r"`[^`\n]*`"), "<str>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE), "<id>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,}\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"\d+(\.\d+)*"), "<n>"),
    (re.compile(r"\s+"), " "),
]


def error_line(log_excerpt: str) -> str:
    """The line that says what went wrong: the last error line that is not a summary, else the last error line,
    else the last line. Read from the end, where the error usually is, so most logs need a few lines read."""
    last_error = last_line = ""
    for raw in reversed(log_excerpt[-_SCAN_CHARS:].splitlines()):
        line = raw.strip()
        if not line:
            continue
        last_line = last_line or line
        if _ERROR_LINE.search(line):
            if not _SUMMARY_LINE.search(line):
                return line[:_LINE_CHARS]
            last_error = last_error or line
    return (last_error or last_line)[:_LINE_CHARS]


def signature_normalise(line: str) -> str:
    """Strip what differs between two occurrences of one error: numbers, ids, times, paths, quoted values."""
    text = line[:_LINE_CHARS]
    for pattern, placeholder in _NORMALISERS:
        text = pattern.sub(placeholder, text)
    return text.strip().lower()[:SIGNATURE_CHARS]


def error_signature(log_excerpt: str) -> str:
    """The failure's error signature; empty when the log is."""
    return signature_normalise(error_line(log_excerpt or ""))
