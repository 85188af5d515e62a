"""The rule engine: every enabled classification rule, compiled once into RE2 sets, matched in linear time.

Precedence (README "Classification"): a valid type hint wins before any rule runs; then the rules
by stage (infrastructure causes in the log, other log patterns, job/step names, changed files and
event fields, generic test-runner summaries), by position within a stage, then by id; nothing
matched gives the fallback type.

Matching a failure is one ``re2.Set`` scan per field (log, job, step, changed files, each event
field) that reports every rule that matches; the engine keeps the one that ranks first and runs
that single rule once more for the evidence line. RE2 has no backtracking, so no pattern can take
more than linear time: a catastrophically backtracking pattern in Python's ``re`` is an ordinary
one here. Patterns RE2 cannot compile (backreferences, look-arounds) are refused with the reason.
"""

import functools
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import re2

from escalation.choices import RuleField
from escalation.exceptions import InvalidRule

EVIDENCE_CHARS = 500
_TAIL_BYTES = 8 * 1024
SAMPLE_BYTES = 64 * 1024
# A rule that does not exist yet (a rule being created) ranks after every rule of its stage and position.
NEW_RULE_ID = 2**62

_SINGLE_MAX_MEM = 8 << 20
# A set's DFA gets more room: when its state cache overflows too often RE2 gives up on the set silently.
_SET_MAX_MEM = 256 << 20


def _options(max_mem: int) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.never_capture = True
    options.log_errors = False
    options.max_mem = max_mem
    return options


def _engine_pattern(pattern: str) -> str:
    """Rules are written per line: ^ and $ match at every line's ends, as in Python's re.MULTILINE."""
    return f"(?m){pattern}"


@dataclass(frozen=True)
class RuleSpec:
    """What the engine needs of a rule: a plain, hashable copy of its row."""

    id: int
    name: str
    version: int
    stage: int
    position: int
    field: str
    event_field: str
    pattern: str
    failure_type: str
    tags: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The text this rule reads: a field name, or ``event:<name>`` for an event field."""
        return f"event:{self.event_field}" if self.field == RuleField.EVENT_FIELD else self.field

    @property
    def rank(self) -> tuple[int, int, int]:
        return (self.stage, self.position, self.id)

    @classmethod
    def of(cls, rule) -> "RuleSpec":
        """From a ClassificationRule row (or a historical model of one in a migration)."""
        return cls(
            id=rule.pk if rule.pk is not None else NEW_RULE_ID,
            name=rule.name,
            version=getattr(rule, "version", 1) or 1,
            stage=rule.stage,
            position=rule.position,
            field=rule.field,
            event_field=rule.event_field or "",
            pattern=rule.pattern,
            failure_type=rule.failure_type,
            tags=tuple(rule.tags or ()),
        )


@dataclass(frozen=True)
class RuleMatch:
    rule: RuleSpec
    evidence: str


def classification_texts(
    *,
    job: str,
    step: str = "",
    log_excerpt: str = "",
    changed_files: Iterable[str] | None = None,
    event_fields: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """The texts rules read, by key (see RuleSpec.key). Changed files are one path a line."""
    texts = {
        RuleField.JOB.value: job or "",
        RuleField.STEP.value: step or "",
        RuleField.LOG.value: log_excerpt or "",
        RuleField.CHANGED_FILES.value: "\n".join(changed_files or ()),
    }
    for name, value in (event_fields or {}).items():
        if value is not None and value != "":
            texts[f"event:{name}"] = value if isinstance(value, str) else str(value)
    return texts


class RuleEngine:
    """The compiled rule set. Thread-safe: RE2 objects may be shared; build one with ``engine_for``.

    Texts are encoded to UTF-8 once and matched as bytes: the sets and the evidence search share the
    encoding, and only the matched line is decoded again.
    """

    def __init__(self, specs: Iterable[RuleSpec]):
        self.rules: tuple[RuleSpec, ...] = tuple(sorted(specs, key=lambda spec: spec.rank))
        for spec in self.rules:
            pattern_compile(spec.pattern)  # a pattern RE2 refuses fails here, with the reason
        self._regexes = [
            re2.compile(_engine_pattern(spec.pattern).encode(), _options(_SINGLE_MAX_MEM)) for spec in self.rules
        ]
        self._index = {spec.id: i for i, spec in enumerate(self.rules)}
        by_key: dict[str, list[int]] = {}
        for i, spec in enumerate(self.rules):
            by_key.setdefault(spec.key, []).append(i)
        self._sets: dict[str, tuple[re2.Set, list[int]]] = {}
        for key, indices in by_key.items():
            rule_set = re2.Set.SearchSet(_options(_SET_MAX_MEM))
            for i in indices:
                rule_set.Add(_engine_pattern(self.rules[i].pattern))
            rule_set.Compile()
            self._sets[key] = (rule_set, indices)
        # The log is the long text: scan the short ones first.
        self._keys = sorted(self._sets, key=lambda key: key == RuleField.LOG)

    def __len__(self) -> int:
        return len(self.rules)

    def first_match(self, texts: Mapping[str, str]) -> RuleMatch | None:
        """The first rule by precedence that matches its text, with the line it matched."""
        best, best_data = None, b""
        for key in self._keys:
            text = texts.get(key)
            if not text:
                continue
            data = _utf8(text)
            rule_set, indices = self._sets[key]
            hits = rule_set.Match(data)
            if hits:
                first = min(indices[h] for h in hits)
                if best is None or first < best:
                    best, best_data = first, data
        if best is None:
            return None
        evidence = self._evidence(best, best_data)
        return RuleMatch(self.rules[best], evidence if evidence is not None else "")

    def rule_match(self, rule_id: int, text: str) -> str | None:
        """The evidence line when the rule ``rule_id`` matches ``text``, else None."""
        return self._evidence(self._index[rule_id], _utf8(text)) if text else None

    def rule_match_bytes(self, rule_id: int, data: bytes) -> str | None:
        """As ``rule_match``, on text already encoded as UTF-8; one pass over a text the rule does not match."""
        if not data:
            return None
        index = self._index[rule_id]
        match = self._regexes[index].search(data)
        return None if match is None else self._evidence(index, data)

    def spec(self, rule_id: int) -> RuleSpec | None:
        index = self._index.get(rule_id)
        return self.rules[index] if index is not None else None

    def _evidence(self, index: int, data: bytes) -> str | None:
        """The line the rule matches, looked for first in the last lines, where errors are printed.

        The tail starts at a line boundary, so ^ keeps its meaning; a match that the tail alone cannot
        show (one that spans lines, or sits earlier) is found by searching the whole text.
        """
        regex = self._regexes[index]
        if len(data) > _TAIL_BYTES:
            tail_start = data.find(b"\n", len(data) - _TAIL_BYTES) + 1
            if tail_start:
                match = regex.search(data, tail_start)
                if match is not None:
                    return line_of(data, match.start(), match.end())[:EVIDENCE_CHARS]
        match = regex.search(data)
        if match is None:
            return None
        return line_of(data, match.start(), match.end())[:EVIDENCE_CHARS]

    def set_agrees(self, text: str) -> bool:
        """True when each set reports exactly the rules that match ``text`` one by one (no silent DFA failure)."""
        data = _utf8(text)
        for rule_set, indices in self._sets.values():
            reported = sorted(indices[h] for h in rule_set.Match(data) or [])
            expected = [i for i in indices if self._regexes[i].search(data) is not None]
            if reported != expected:
                return False
        return True


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", errors="replace")  # stored text is valid; a caller's lone surrogate becomes "?"


def line_of(data: bytes, start: int, end: int) -> str:
    """The whole line a match sits on (byte offsets into UTF-8): the evidence a person reads."""
    line_start = data.rfind(b"\n", 0, start) + 1
    line_end = data.find(b"\n", end)
    line = data[line_start : line_end if line_end != -1 else len(data)]
    return line.decode("utf-8", errors="replace").strip()


@functools.lru_cache(maxsize=16)
def engine_for(specs: tuple[RuleSpec, ...]) -> RuleEngine:
    """The engine of exactly these rules, compiled once per process (specs carry every matching field)."""
    return RuleEngine(specs)


# --- refusing bad patterns ---

_EXPLANATIONS = (
    ("invalid perl operator: (?=", "look-ahead (?=...) is not supported: RE2 has no look-arounds"),
    ("invalid perl operator: (?!", "negative look-ahead (?!...) is not supported: RE2 has no look-arounds"),
    ("invalid perl operator: (?<=", "look-behind (?<=...) is not supported: RE2 has no look-arounds"),
    ("invalid perl operator: (?<!", "negative look-behind (?<!...) is not supported: RE2 has no look-arounds"),
    ("invalid perl operator: (?>", "atomic groups (?>...) are not supported by RE2 (nor needed: it never backtracks)"),
    ("invalid perl operator: (?P=", "backreferences (?P=name) are not supported by RE2"),
    ("invalid escape sequence: \\Z", "\\Z is not supported by RE2: write \\z for the end of the text"),
    ("bad repetition operator", "a repetition of a repetition (a++, a*?+) is not supported by RE2"),
    ("invalid repetition size", "repetition counts above 1000 are not supported by RE2"),
    ("pattern too large", "the pattern is too large for the engine's memory budget"),
)


def _explain(error: str, pattern: str) -> str:
    error = error.replace(_engine_pattern(""), "", 1)
    if error == "invalid perl operator: (?P" and "(?P=" in pattern:
        error = "invalid perl operator: (?P="
    if error.startswith("invalid escape sequence: \\") and error[-1:].isdigit():
        return f"backreferences ({error.rsplit(': ', 1)[-1]}) are not supported: RE2 matches without backtracking"
    for needle, explanation in _EXPLANATIONS:
        if needle in error:
            return f"{explanation} ({error})"
    return error


def pattern_compile(pattern: str):
    """The pattern compiled as the engine runs it; InvalidRule says why RE2 refuses it."""
    try:
        return re2.compile(_engine_pattern(pattern), _options(_SINGLE_MAX_MEM))
    except re2.error as exc:
        message = exc.args[0] if exc.args else str(exc)
        detail = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
        raise InvalidRule(f"the pattern does not compile: {_explain(detail, pattern)}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRule(f"the pattern does not compile: {exc}") from None


@functools.lru_cache(maxsize=1)
def _fixed_samples() -> tuple[tuple[str, str], ...]:
    rnd = random.Random(4)  # noqa: S311 - fixed samples, not secrets
    noise_lines = [
        "2024-05-14T09:12:33.1234567Z Downloading https://registry.npmjs.org/lodash/-/lodash-4.17.21.tgz",
        "[INFO] --- maven-compiler-plugin:3.11.0:compile (default-compile) @ shop ---",
        "tests/test_cart.py::test_total[case-17] PASSED                                [ 42%]",
        "ok  \tgithub.com/acme/shop/internal/cart\t0.012s",
        "#12 [builder 4/9] RUN pip install --no-cache-dir -r requirements.txt",
        "    at Object.<anonymous> (/home/runner/work/shop/shop/src/cart.test.ts:12:5)",
    ]
    noise = ""
    while len(noise) < SAMPLE_BYTES:
        noise += rnd.choice(noise_lines) + "\n"
    printable = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-:/=()[]'\"\t"
    return (
        ("64 KiB of 'a'", "a" * SAMPLE_BYTES),
        ("64 KiB of CI log noise", noise[:SAMPLE_BYTES]),
        ("one 64 KiB line of random text", "".join(rnd.choice(printable) for _ in range(SAMPLE_BYTES))),
    )


def worst_case_samples(pattern: str) -> list[tuple[str, str]]:
    """Texts that make backtracking engines blow up: long runs of the pattern's own characters that just fail."""
    literals = sorted({c for c in pattern if c.isalnum() or c in " _-:/"}) or ["a"]
    run = (literals[0] * SAMPLE_BYTES)[: SAMPLE_BYTES - 1] + "\x01"
    cycle = ("".join(literals) * (SAMPLE_BYTES // len(literals) + 1))[:SAMPLE_BYTES]
    return [
        *_fixed_samples(),
        (f"64 KiB of {literals[0]!r} that ends in a mismatch", run),
        ("64 KiB of the pattern's characters", cycle),
    ]


def pattern_check(*, pattern: str, budget_ms: float) -> None:
    """Refuse a pattern that does not compile, matches empty text, or is too slow on worst-case samples.

    The trial is time-bounded: each sample is tried on growing prefixes (2, 8, 64 KiB) and the
    pattern is refused as soon as its measured time, scaled linearly to the rest, would pass the
    budget, so a slow pattern costs a few milliseconds to refuse, not seconds. The 2 KiB run also
    warms RE2's lazily built DFA, so only the longer runs are scaled.
    """
    if not pattern.strip():
        raise InvalidRule("the pattern is empty")
    regex = pattern_compile(pattern)
    if regex.search("") is not None:
        raise InvalidRule("the pattern matches empty text, so it would match every failure")
    spent = 0.0
    samples = worst_case_samples(pattern)
    for n, (name, sample) in enumerate(samples):
        for size in (2048, 8192, SAMPLE_BYTES):
            started = time.perf_counter()
            regex.search(sample[:size])
            elapsed = (time.perf_counter() - started) * 1000
            spent += elapsed
            if size == 2048:
                projected = spent  # the warm-up run: building DFA states costs more than scanning with them
            else:
                full_sample = elapsed * SAMPLE_BYTES / size  # RE2 is linear: the time scales with the length
                still_to_run = len(samples) - n - (1 if size == SAMPLE_BYTES else 0)
                projected = spent + full_sample * still_to_run
            if projected > budget_ms:
                raise InvalidRule(
                    f"the pattern is too slow: about {projected:.0f} ms on the worst-case samples "
                    f"({name}: {elapsed:.1f} ms on {size // 1024} KiB), over the limit of {budget_ms:.0f} ms"
                )


def engine_check(specs: Iterable[RuleSpec]) -> RuleEngine:
    """Compile a whole proposed rule set and prove its sets agree with its rules on the worst-case samples."""
    engine = RuleEngine(specs)
    for _, sample in _fixed_samples():
        if not engine.set_agrees(sample):
            raise InvalidRule("the rule set with this pattern exceeds the engine's memory budget; simplify it")
    return engine
