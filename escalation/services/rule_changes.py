"""Rule changes: every create, edit or deletion of a classification rule is previewed, then applied.

1. ``rule_change_submit`` validates the proposed rule (RE2 compile, worst-case trial, the whole set
   compiled) and records a RuleChange against the rule's current version.
2. The preview lists the exact failures first seen in the window (PORTAL_RULE_PREVIEW_DAYS, 30 by
   default) whose type or tags would change, before and after. Only failures the rules decided are
   candidates (a type hint or a person's verdict stands): the ones the changed rule decided, which are
   classified again by the whole proposed set, and the ones decided by a later-ranked rule or by the
   fallback, which only the changed rule can take over. Many candidates: a django-q2 task, with progress.
3. Applying saves the rule as a new version and re-types each previewed failure: open ones get the
   new type's owner and matrix snapshot (SLA due from the original opening); each change is written on
   the timeline and in the audit log. Many effects: a task, in batches, with progress. A change whose
   rules moved since the preview is refused (RuleChangeStale): it must be previewed again.

A change that can alter no type (name or description only) or whose preview finds no failure is
applied at once when the person may apply changes.
"""

import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max, Q, QuerySet
from psycopg.adapt import Loader

from escalation.choices import (
    FALLBACK_TYPE,
    INFRASTRUCTURE_TYPES,
    OPEN_STATUSES,
    ChangeSource,
    RuleChangeKind,
    RuleChangeStatus,
    RuleField,
    RuleStage,
    TriageVerdict,
)
from escalation.exceptions import InvalidRule, RuleChangeNotReady, RuleChangeStale
from escalation.models import (
    ClassificationRule,
    ClassificationRuleVersion,
    Failure,
    RuleChange,
    RuleChangeEffect,
    TimelineEntry,
)
from escalation.models.failures import TimelineKind
from escalation.services.classification import FALLBACK, TYPE_HINT, Classification, failure_classify
from escalation.services.config import config_changed, routing_config
from escalation.services.failures import failure_fingerprint, failure_open_twin, failure_retype, require_permission
from escalation.services.rule_engine import (
    NEW_RULE_ID,
    RuleEngine,
    RuleSpec,
    engine_check,
    engine_for,
    pattern_check,
    pattern_compile,
)
from escalation.services.timeline import timeline_entry
from portal.audit import Actor, audit_bulk, audit_record, row_state
from portal.models import AuditAction

RULE_FIELDS = (
    "name",
    "stage",
    "position",
    "field",
    "event_field",
    "pattern",
    "failure_type",
    "tags",
    "is_enabled",
    "description",
)
# Name and description never change a failure's type: editing only them needs no preview.
MATCHING_FIELDS = tuple(f for f in RULE_FIELDS if f not in ("name", "description"))
PREVIEW_BATCH = 2000
APPLY_BATCH = 500
_TAG = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_PERMISSIONS = {
    RuleChangeKind.CREATE: "escalation.add_classificationrule",
    RuleChangeKind.UPDATE: "escalation.change_classificationrule",
    RuleChangeKind.DELETE: "escalation.delete_classificationrule",
}
_FAILURE_FIELDS = [
    "failure_type",
    "fingerprint",
    "matrix_snapshot",
    "owner_team",
    "secondary_team",
    "assignee",
    "sla_due_at",
    "at_risk_at",
    "ticket_due_at",
    "next_step_at",
    "tags",
    "classified_by",
    "classification_rule",
    "classification_rule_version",
    "classification_text",
]


def rule_state(rule: ClassificationRule) -> dict:
    """The rule's own fields, JSON-safe: what a version records and a change proposes."""
    state = {name: getattr(rule, name) for name in RULE_FIELDS}
    state["stage"], state["tags"] = int(state["stage"]), list(state["tags"] or [])
    return state


# --- validation ---


def rule_validate(*, proposed: dict, rule: ClassificationRule | None) -> dict:
    """The proposed rule, complete and checked; InvalidRule names the field (``field``) and why."""
    base = rule_state(rule if rule is not None else ClassificationRule())  # a new rule starts from the defaults
    data = {**base, **{k: v for k, v in proposed.items() if k in RULE_FIELDS}}
    data["tags"] = _tags(data.get("tags"))
    candidate = ClassificationRule(pk=rule.pk if rule else None, **data)
    candidate._state.adding = rule is None  # an edit: its own id and name are not taken by another rule
    try:
        candidate.full_clean(exclude=["version"])
    except ValidationError as exc:
        name, messages = next(iter(exc.message_dict.items()))
        raise InvalidRule(f"{name}: {'; '.join(messages)}", field=name) from None
    data["stage"] = int(data["stage"])
    _check_consistency(data)
    try:
        pattern_check(pattern=data["pattern"], budget_ms=settings.PORTAL_RULE_TRIAL_MS)
        if data["is_enabled"]:
            others = [spec for spec in _enabled_specs() if rule is None or spec.id != rule.pk]
            engine_check([*others, _spec(data, rule_id=rule.pk if rule else None, version=1)])
    except InvalidRule as exc:
        raise InvalidRule(exc.detail, field="pattern") from None
    return data


def _tags(raw) -> list[str]:
    if raw in (None, ""):
        return []
    if not isinstance(raw, list) or not all(isinstance(tag, str) for tag in raw):
        raise InvalidRule("tags: a list of words such as rate_limited", field="tags")
    tags = list(dict.fromkeys(tag.strip() for tag in raw if tag.strip()))
    bad = [tag for tag in tags if not _TAG.match(tag)]
    if bad:
        raise InvalidRule(f"tags: {bad[0]!r} is not a tag (lower-case letters, digits and _)", field="tags")
    return tags


def _check_consistency(data: dict) -> None:
    """A stage reads the text its name says: the precedence would mean nothing otherwise."""
    stage, field = data["stage"], data["field"]
    if stage in (RuleStage.INFRASTRUCTURE, RuleStage.LOG, RuleStage.GENERIC) and field != RuleField.LOG:
        raise InvalidRule(f"stage: {RuleStage(stage).label} rules match the log excerpt", field="stage")
    if stage == RuleStage.NAME and field == RuleField.LOG:
        raise InvalidRule("stage: log rules belong to a log stage (1, 2 or 4)", field="stage")
    if stage == RuleStage.INFRASTRUCTURE and data["failure_type"] not in INFRASTRUCTURE_TYPES:
        raise InvalidRule(
            "failure_type: infrastructure rules give ci_runner, database_connectivity or test_environment",
            field="failure_type",
        )
    if field == RuleField.EVENT_FIELD and not data["event_field"].strip():
        raise InvalidRule("event_field: name the event field this rule matches", field="event_field")


def _spec(data: dict, *, rule_id: int | None, version: int) -> RuleSpec:
    return RuleSpec(
        id=rule_id if rule_id is not None else NEW_RULE_ID,
        name=data["name"],
        version=version,
        stage=int(data["stage"]),
        position=data["position"],
        field=data["field"],
        event_field=data.get("event_field") or "",
        pattern=data["pattern"],
        failure_type=data["failure_type"],
        tags=tuple(data.get("tags") or ()),
    )


def _enabled_specs() -> list[RuleSpec]:
    rules = ClassificationRule.objects.filter(is_enabled=True).order_by("stage", "position", "id")
    return [RuleSpec.of(rule) for rule in rules]


def _ruleset_version() -> int:
    return ClassificationRuleVersion.objects.aggregate(latest=Max("id"))["latest"] or 0


# --- try it ---


@dataclass(frozen=True)
class TryResult:
    """What a rule, as edited, makes of a pasted sample: its own match and the whole set's verdict."""

    evidence: str | None
    classification: Classification

    @property
    def matched(self) -> bool:
        return self.evidence is not None


def rule_try(*, proposed: dict, rule: ClassificationRule | None, sample: str) -> TryResult:
    """Try the rule on ``sample`` (read as the rule's field) before saving; stores nothing."""
    defaults = {"name": "(this rule)", "stage": RuleStage.LOG, "position": 1000, "field": RuleField.LOG}
    data = {**defaults, **(rule_state(rule) if rule else {}), **{k: v for k, v in proposed.items() if v is not None}}
    pattern_compile(data.get("pattern") or "")
    data["stage"], data["failure_type"] = int(data["stage"]), data.get("failure_type") or FALLBACK_TYPE
    spec = _spec(data, rule_id=rule.pk if rule else None, version=0)
    others = [s for s in _enabled_specs() if rule is None or s.id != rule.pk]
    engine = RuleEngine([*others, spec])
    field = {
        RuleField.JOB: "job",
        RuleField.STEP: "step",
        RuleField.LOG: "log_excerpt",
        RuleField.CHANGED_FILES: "changed_files",
    }.get(spec.field)
    if field == "changed_files":
        inputs = {"job": "", "changed_files": sample.splitlines()}
    elif field is not None:
        inputs = {"job": "", field: sample}
    else:
        inputs = {"job": "", "event_fields": {spec.event_field: sample}}
    return TryResult(engine.rule_match(spec.id, sample), failure_classify(rules=engine, **inputs))


# --- propose, preview ---


def rule_change_submit(
    *, kind: RuleChangeKind, rule: ClassificationRule | None, proposed: dict, actor: Actor, now: datetime
) -> RuleChange:
    """Record a change and preview it: inline when few failures are candidates, else as a task.

    A change that cannot alter a type, or whose preview finds no failure, is applied at once when the
    actor may apply changes; otherwise it waits, previewed, for someone to apply or discard it.
    """
    change = rule_change_propose(kind=kind, rule=rule, proposed=proposed, actor=actor, now=now)
    if not change_alters_matching(change):
        RuleChange.objects.filter(pk=change.pk).update(status=RuleChangeStatus.PREVIEWED, previewed_at=now)
        return _apply_if_allowed(change.pk, actor, now)
    decided, others = _candidates(change, _new_spec(change), since=change.window_start)
    if decided.count() + others.count() > settings.PORTAL_RULE_SYNC_LIMIT:
        _enqueue("escalation.tasks.rule_change_preview", change.pk)
        return change
    change = rule_change_preview(change_id=change.pk, now=now)
    if change.status == RuleChangeStatus.PREVIEWED and change.affected_count == 0:
        return _apply_if_allowed(change.pk, actor, now)
    return change


def rule_change_propose(
    *, kind: RuleChangeKind, rule: ClassificationRule | None, proposed: dict, actor: Actor, now: datetime
) -> RuleChange:
    """Validate and record a change against the rule's current version; it changes nothing yet."""
    require_permission(actor, _PERMISSIONS[kind])
    if kind == RuleChangeKind.CREATE:
        rule = None
    elif rule is None:
        raise InvalidRule("name the rule to change")
    data = {} if kind == RuleChangeKind.DELETE else rule_validate(proposed=proposed, rule=rule)
    if kind == RuleChangeKind.UPDATE and data == rule_state(rule):
        raise InvalidRule("nothing changed")
    return RuleChange.objects.create(
        kind=kind,
        rule=rule,
        rule_name=data.get("name") or rule.name,
        proposed=data,
        base_version=rule.version if rule else None,
        base_ruleset=_ruleset_version(),
        status=RuleChangeStatus.PREVIEWING,
        window_start=now - timedelta(days=settings.PORTAL_RULE_PREVIEW_DAYS),
        created_at=now,
        created_by=actor.user,
        actor_label=actor.label,
    )


def change_alters_matching(change: RuleChange) -> bool:
    if change.kind != RuleChangeKind.UPDATE:
        return True
    current = rule_state(change.rule) if change.rule else {}
    return any(change.proposed.get(name) != current.get(name) for name in MATCHING_FIELDS)


def rule_change_preview(*, change_id: int, now: datetime) -> RuleChange:
    """Find the failures whose type or tags the change would alter. Idempotent: a re-run starts over."""
    change = RuleChange.objects.get(pk=change_id)
    if change.status != RuleChangeStatus.PREVIEWING:
        return change
    # Inside a request's transaction a database error must roll back to here, not poison the request.
    guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with guard:
            _preview(change, now)
    except Exception as exc:  # shown on the change's page, which offers "preview again"
        error = f"{type(exc).__name__}: {exc}"
        RuleChange.objects.filter(pk=change.pk).update(status=RuleChangeStatus.FAILED, error=error)
    change.refresh_from_db()
    return change


def _preview(change: RuleChange, now: datetime) -> None:
    """Scan the candidates in pages, storing effects and progress as it goes."""
    new_spec = _new_spec(change)
    decided, others = _candidates(change, new_spec, since=change.window_start)
    change.effects.all().delete()
    RuleChange.objects.filter(pk=change.pk).update(
        base_ruleset=_ruleset_version(),
        preview_started_at=now,
        progress_done=0,
        progress_total=decided.count() + others.count(),
        error="",
    )
    engine = _proposed_engine(change, new_spec)
    affected = 0
    for effects, scanned in _scan(change, new_spec, engine, decided, others):
        RuleChangeEffect.objects.bulk_create(effects)
        affected += len(effects)
        RuleChange.objects.filter(pk=change.pk).update(progress_done=F("progress_done") + scanned)
    RuleChange.objects.filter(pk=change.pk, status=RuleChangeStatus.PREVIEWING).update(
        status=RuleChangeStatus.PREVIEWED, previewed_at=now, affected_count=affected
    )


def rule_change_repreview(*, change_id: int, actor: Actor, now: datetime) -> RuleChange:
    """Preview a change again (the rules moved, or the preview failed), inline or as a task like the first."""
    with transaction.atomic():
        change = RuleChange.objects.select_for_update().get(pk=change_id)
        require_permission(actor, _PERMISSIONS[RuleChangeKind(change.kind)])
        if change.status not in (RuleChangeStatus.PREVIEWED, RuleChangeStatus.FAILED):
            raise RuleChangeNotReady(f"rule change #{change.pk} is {change.get_status_display().lower()}")
        _check_rule_version(change)
        change.status = RuleChangeStatus.PREVIEWING
        change.save(update_fields=["status"])
    decided, others = _candidates(change, _new_spec(change), since=change.window_start)
    if decided.count() + others.count() > settings.PORTAL_RULE_SYNC_LIMIT:
        _enqueue("escalation.tasks.rule_change_preview", change.pk)
        return change
    return rule_change_preview(change_id=change.pk, now=now)


def rule_change_discard(*, change_id: int, actor: Actor, now: datetime) -> RuleChange:
    """Drop a change that was not applied; its preview stays for the record."""
    with transaction.atomic():
        change = RuleChange.objects.select_for_update().get(pk=change_id)
        require_permission(actor, _PERMISSIONS[RuleChangeKind(change.kind)])
        if change.status in (RuleChangeStatus.APPLYING, RuleChangeStatus.APPLIED):
            raise RuleChangeNotReady(f"rule change #{change.pk} is {change.get_status_display().lower()}")
        change.status = RuleChangeStatus.DISCARDED
        change.save(update_fields=["status"])
    return change


def _new_spec(change: RuleChange) -> RuleSpec | None:
    """The rule as the change leaves it, when it is enabled; None for a deletion or a disabled rule."""
    if change.kind == RuleChangeKind.DELETE or not change.proposed.get("is_enabled", True):
        return None
    return _spec(change.proposed, rule_id=change.rule_id, version=(change.base_version or 0) + 1)


def _proposed_engine(change: RuleChange, new_spec: RuleSpec | None) -> RuleEngine:
    specs = [spec for spec in _enabled_specs() if spec.id != change.rule_id]
    return engine_for(tuple([*specs, new_spec] if new_spec else specs))


def _candidates(change: RuleChange, new_spec: RuleSpec | None, *, since: datetime) -> tuple[QuerySet, QuerySet]:
    """Failures the change may re-type: (decided by the changed rule, decided after where the new rule ranks).

    A failure decided by rule R before the new rule's rank keeps R: nothing in front of R changed.
    """
    base = (
        Failure.objects.filter(first_seen_at__gte=since)
        .exclude(triage_verdict__in=TriageVerdict.values)
        .exclude(classified_by=TYPE_HINT)
    )
    decided = base.filter(classification_rule_id=change.rule_id) if change.rule_id else base.none()
    if new_spec is None:
        return decided, base.none()
    stage, position, rule_id = new_spec.rank
    same_stage = Q(classification_rule__stage=stage)
    after = (
        Q(classification_rule__isnull=True)
        | Q(classification_rule__stage__gt=stage)
        | same_stage & Q(classification_rule__position__gt=position)
        | same_stage & Q(classification_rule__position=position, classification_rule_id__gt=rule_id)
    )
    others = base.filter(after)
    if change.rule_id:
        others = others.exclude(classification_rule_id=change.rule_id)
    return decided, others


_TEXT_COLUMNS = {
    RuleField.JOB: "job_name",
    RuleField.STEP: "classification_event__step",
    RuleField.LOG: "classification_event__log_excerpt",
    RuleField.CHANGED_FILES: "classification_event__job__run__changed_files",
    RuleField.EVENT_FIELD: "classification_event__event_fields",
}
_HEAD = ("id", "failure_type", "tags", "classified_by", "status")


def _scan(
    change: RuleChange, new_spec: RuleSpec | None, engine: RuleEngine, decided: QuerySet, others: QuerySet
) -> Iterator[tuple[list[RuleChangeEffect], int]]:
    """Yield (effects, rows scanned) batch by batch, in id order (keyset pages: no long-held cursor)."""
    full = (*_HEAD, "job_name", *(_TEXT_COLUMNS[f] for f in RuleField if f != RuleField.JOB))
    for rows in _pages(decided, full):
        yield [e for row in rows if (e := _reclassified(change, engine, row)) is not None], len(rows)
    if new_spec is not None:
        yield from _scan_taken_over(change, engine, new_spec, others)


def _scan_taken_over(
    change: RuleChange, engine: RuleEngine, spec: RuleSpec, others: QuerySet
) -> Iterator[tuple[list[RuleChangeEffect], int]]:
    """The new rule alone on each candidate's text: one page is scanned while the next one is fetched.

    Only the id and the text are read for every candidate; the rest is read for the few that match.
    """
    with ThreadPoolExecutor(max_workers=1) as scanner:
        pending = None
        for page in _text_pages(others, spec):
            future = scanner.submit(_page_matches, engine, spec, page)
            if pending is not None:
                yield _taken_over(change, spec, others, *pending)
            pending = (future, len(page))
        if pending is not None:
            yield _taken_over(change, spec, others, *pending)


def _page_matches(engine: RuleEngine, spec: RuleSpec, page: list[tuple[int, bytes]]) -> dict[int, str]:
    return {pk: evidence for pk, data in page if data and (evidence := engine.rule_match_bytes(spec.id, data))}


def _taken_over(change: RuleChange, spec: RuleSpec, others: QuerySet, future: Future, scanned: int):
    """Effects for the candidates the new rule matches: it ranks before the rule that decided them."""
    matched = future.result()
    if not matched:
        return [], scanned
    effects = []
    for row in others.filter(pk__in=list(matched)).order_by("pk").values_list(*_HEAD):
        result = Classification(spec.failure_type, spec.name, spec.id, matched[row[0]], spec.tags, spec.version)
        if (effect := _effect(change, row, result, changed_rule=True)) is not None:
            effects.append(effect)
    return effects, scanned


def _text_pages(queryset: QuerySet, spec: RuleSpec) -> Iterator[list[tuple[int, bytes]]]:
    """(id, the text the rule reads as UTF-8) pages in id order."""
    column = _TEXT_COLUMNS[RuleField(spec.field)]
    last = 0
    while True:
        page = queryset.filter(pk__gt=last).order_by("pk").values_list("pk", column)[:PREVIEW_BATCH]
        if spec.field in (RuleField.EVENT_FIELD, RuleField.CHANGED_FILES):
            rows = [(pk, _field_text(spec, value).encode()) for pk, value in page]
        else:
            rows = _fetch_utf8(page)
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _field_text(spec: RuleSpec, value) -> str:
    if spec.field == RuleField.CHANGED_FILES:
        return "\n".join(value or ())
    found = (value or {}).get(spec.event_field)
    return "" if found is None else str(found)


class _Utf8Loader(Loader):
    def load(self, data) -> bytes:
        return bytes(data)


def _fetch_utf8(page: QuerySet) -> list[tuple[int, bytes]]:
    """Rows of (id, text) with the text as UTF-8 bytes, which is what RE2 reads.

    On PostgreSQL the text arrives as bytes: decoding megabytes of logs only to encode them again
    would cost more than scanning them.
    """
    if connection.vendor != "postgresql":
        return [(pk, (value or "").encode()) for pk, value in page]
    sql, params = page.query.sql_with_params()
    with connection.cursor() as cursor:
        for type_name in ("text", "varchar"):
            cursor.cursor.adapters.register_loader(type_name, _Utf8Loader)
        cursor.execute(sql, params)
        return [(pk, value or b"") for pk, value in cursor.fetchall()]


def _pages(queryset: QuerySet, columns: tuple[str, ...]) -> Iterator[list[tuple]]:
    last = 0
    while True:
        rows = list(queryset.filter(pk__gt=last).order_by("pk").values_list(*columns)[:PREVIEW_BATCH])
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _reclassified(change: RuleChange, engine: RuleEngine, row: tuple) -> RuleChangeEffect | None:
    """A failure the changed rule decided, classified again by the whole proposed rule set."""
    failure_id, failure_type, tags, classified_by, status, job, step, log, files, fields = row
    result = failure_classify(
        rules=engine, job=job, step=step or "", log_excerpt=log or "", event_fields=fields, changed_files=files
    )
    changed_rule = result.rule_id in (change.rule_id, NEW_RULE_ID) and result.rule_id is not None
    return _effect(change, row, result, changed_rule=changed_rule)


def _effect(change: RuleChange, row: tuple, result: Classification, *, changed_rule: bool) -> RuleChangeEffect | None:
    failure_id, failure_type, tags, classified_by, status = row[:5]
    if result.failure_type == failure_type and sorted(result.tags) == sorted(tags or []):
        return None
    return RuleChangeEffect(
        change=change,
        failure_id=failure_id,
        was_open=status in OPEN_STATUSES,
        from_type=failure_type,
        from_tags=list(tags or []),
        from_classified_by=classified_by,
        to_type=result.failure_type,
        to_tags=list(result.tags),
        to_classified_by=result.classified_by,
        to_rule_id=None if changed_rule or result.classified_by == FALLBACK else result.rule_id,
        to_is_changed_rule=changed_rule,
        to_evidence=result.matched_text,
    )


# --- apply ---


def rule_change_apply(*, change_id: int, actor: Actor, now: datetime) -> RuleChange:
    """Save the rule as a new version and re-type the previewed failures: inline when few, else as a task."""
    require_permission(actor, "escalation.apply_rulechange")
    with transaction.atomic():
        change = RuleChange.objects.select_for_update().get(pk=change_id)
        if change.status in (RuleChangeStatus.APPLYING, RuleChangeStatus.APPLIED):
            return change  # applying twice is applying once
        if change.status != RuleChangeStatus.PREVIEWED:
            raise RuleChangeNotReady(f"rule change #{change.pk} is {change.get_status_display().lower()}")
        _check_rule_version(change)
        if _ruleset_version() != change.base_ruleset:
            raise RuleChangeStale("another rule changed since this preview; preview it again")
        _late_effects(change, now)
        rule = _rule_save(change, actor, now)
        change.rule = rule
        change.applied_version = rule.version if rule else (change.base_version or 0) + 1
        change.applied_by = actor.user
        change.status = RuleChangeStatus.APPLYING
        change.progress_done, change.progress_total = 0, change.effects.count()
        change.affected_count = change.progress_total
        change.save()
    config_changed()
    if change.progress_total > settings.PORTAL_RULE_SYNC_LIMIT:
        _enqueue("escalation.tasks.rule_change_apply", change.pk)
        return change
    return rule_change_apply_effects(change_id=change.pk, now=now, actor=actor)


def rule_change_apply_effects(*, change_id: int, now: datetime, actor: Actor | None = None) -> RuleChange:
    """Re-type the change's pending failures in batches, each batch one transaction. Idempotent."""
    change = RuleChange.objects.select_related("rule", "applied_by").get(pk=change_id)
    if change.status != RuleChangeStatus.APPLYING:
        return change
    if actor is None:
        user = change.applied_by
        actor = Actor.of_user(user, ChangeSource.TASK) if user else Actor.task("rule_change_apply")
    while True:
        for attempt in range(3):
            try:
                with transaction.atomic():
                    batch = list(change.effects.select_for_update().filter(outcome="").order_by("id")[:APPLY_BATCH])
                    _apply_batch(change, batch, actor, now)
                break
            except IntegrityError:  # a failure opened concurrently with a fingerprint this batch takes: re-check
                if attempt == 2:
                    raise
        if not batch:
            break
        RuleChange.objects.filter(pk=change.pk).update(progress_done=F("progress_done") + len(batch))
    RuleChange.objects.filter(pk=change.pk).update(status=RuleChangeStatus.APPLIED, applied_at=now)
    change.refresh_from_db()
    return change


def _apply_if_allowed(change_id: int, actor: Actor, now: datetime) -> RuleChange:
    if actor.user is not None and not actor.user.has_perm("escalation.apply_rulechange"):
        return RuleChange.objects.get(pk=change_id)
    return rule_change_apply(change_id=change_id, actor=actor, now=now)


def _check_rule_version(change: RuleChange) -> None:
    if change.kind == RuleChangeKind.CREATE:
        return
    rule = ClassificationRule.objects.filter(pk=change.rule_id).first()
    if rule is None:
        raise RuleChangeStale(f"rule {change.rule_name!r} was deleted since this change was proposed")
    if rule.version != change.base_version:
        raise RuleChangeStale(
            f"rule {rule.name!r} is at version {rule.version}; this change was made on version "
            f"{change.base_version}: edit the rule again"
        )


def _late_effects(change: RuleChange, now: datetime) -> None:
    """Failures first seen after the preview started were classified by the old rule: preview them too."""
    since = change.preview_started_at or change.created_at
    new_spec = _new_spec(change)
    known = change.effects.values("failure_id")
    decided, others = _candidates(change, new_spec, since=since)
    engine = _proposed_engine(change, new_spec)
    for effects, _ in _scan(change, new_spec, engine, decided.exclude(pk__in=known), others.exclude(pk__in=known)):
        for effect in effects:
            effect.found_at_apply = True
        RuleChangeEffect.objects.bulk_create(effects)


def _rule_save(change: RuleChange, actor: Actor, now: datetime) -> ClassificationRule | None:
    """Create, update or delete the rule; write its version and the audit entry. None after a deletion."""
    kind = RuleChangeKind(change.kind)
    if kind == RuleChangeKind.CREATE:
        rule, before = ClassificationRule(**change.proposed, version=1), None
    else:
        rule = ClassificationRule.objects.select_for_update().get(pk=change.rule_id)
        before = row_state(rule)
        if kind == RuleChangeKind.UPDATE:
            for name, value in change.proposed.items():
                setattr(rule, name, value)
            rule.version += 1
    if kind != RuleChangeKind.DELETE:
        try:
            rule.full_clean()
        except ValidationError as exc:
            raise InvalidRule("; ".join(exc.messages)) from None
        rule.save()
    ClassificationRuleVersion.objects.create(
        rule=rule,
        rule_name=rule.name,
        version=rule.version + 1 if kind == RuleChangeKind.DELETE else rule.version,
        kind=kind,
        state=rule_state(rule),
        changed_at=now,
        changed_by=actor.user,
        actor_label=actor.label,
        rule_change=change,
    )
    reason = f"rule change #{change.pk}"
    if kind == RuleChangeKind.DELETE:
        audit_record(actor=actor, action=AuditAction.DELETE, obj=rule, at=now, before=before, reason=reason)
        rule.delete()
        return None
    action = AuditAction.CREATE if kind == RuleChangeKind.CREATE else AuditAction.UPDATE
    audit_record(actor=actor, action=action, obj=rule, at=now, before=before, after=row_state(rule), reason=reason)
    return rule


def _apply_batch(change: RuleChange, batch: list[RuleChangeEffect], actor: Actor, now: datetime) -> None:
    """Re-type the batch's failures, skipping the ones that changed since the preview or meet an open twin."""
    if not batch:
        return
    config = routing_config()
    failures = (
        Failure.objects.select_for_update(of=("self",))
        .select_related("repository", "latest_run")
        .in_bulk([effect.failure_id for effect in batch])
    )
    versions = dict(
        ClassificationRule.objects.filter(
            pk__in={e.to_rule_id for e in batch if e.to_rule_id} | ({change.rule_id} if change.rule_id else set())
        ).values_list("id", "version")
    )
    claimed: set[str] = set()
    changed, timeline, audits = [], [], []
    for effect in batch:
        failure = failures.get(effect.failure_id)
        effect.outcome, effect.outcome_note = "skipped", _skip_reason(failure, effect, claimed)
        if effect.outcome_note:
            continue
        before, from_team = row_state(failure), failure.owner_team_id
        _retype(failure, effect, change, versions, claimed, config)
        effect.outcome = "applied"
        changed.append(failure)
        entry = _reclassified_entry(failure, effect, change, actor, now, config)
        entry.data.update(from_team=from_team, to_team=failure.owner_team_id)  # fallout: reassigned between teams
        timeline.append(entry)
        audits.append((failure, before, row_state(failure)))
    Failure.objects.bulk_update(changed, _FAILURE_FIELDS)
    TimelineEntry.objects.bulk_create(timeline)
    audit_bulk(actor=actor, action=AuditAction.UPDATE, changes=audits, at=now, reason=f"rule change #{change.pk}")
    RuleChangeEffect.objects.bulk_update(batch, ["outcome", "outcome_note"])


def _skip_reason(failure: Failure | None, effect: RuleChangeEffect, claimed: set[str]) -> str:
    if failure is None:
        return "the failure no longer exists"
    if failure.failure_type != effect.from_type or sorted(failure.tags or []) != sorted(effect.from_tags):
        return "the failure's type changed since the preview"
    if failure.triage_verdict:
        return "its type was confirmed or corrected in triage since the preview"
    if failure.is_open and effect.to_type != failure.failure_type:
        fingerprint = _fingerprint(failure, effect.to_type)
        twin = fingerprint in claimed or failure_open_twin(failure=failure, fingerprint=fingerprint) is not None
        if twin:
            return f"another failure of this job is open as {effect.to_type}"
    return ""


def _fingerprint(failure: Failure, failure_type: str) -> str:
    return failure_fingerprint(
        repository=failure.repository.name, branch=failure.branch, job=failure.job_name, failure_type=failure_type
    )


def _retype(failure, effect, change, versions, claimed, config) -> None:
    if effect.to_type != failure.failure_type:
        fingerprint = _fingerprint(failure, effect.to_type)
        if failure.is_open:
            claimed.add(fingerprint)
            failure_retype(failure=failure, failure_type=effect.to_type, fingerprint=fingerprint, config=config)
        else:  # a resolved failure keeps the owner and snapshot it was resolved with
            failure.failure_type, failure.fingerprint = effect.to_type, fingerprint
    rule_id = change.rule_id if effect.to_is_changed_rule else effect.to_rule_id
    failure.tags = list(effect.to_tags)
    failure.classified_by = effect.to_classified_by
    failure.classification_rule_id = rule_id
    failure.classification_rule_version = versions.get(rule_id)
    failure.classification_text = effect.to_evidence


def _reclassified_entry(failure, effect, change, actor: Actor, now: datetime, config) -> TimelineEntry:
    by = effect.to_classified_by
    message = f"Reclassified from {effect.from_type} to {effect.to_type} by rule change #{change.pk} ({by})"
    if effect.from_tags != effect.to_tags:
        message += f"; tags {effect.from_tags or '[]'} -> {effect.to_tags or '[]'}"
    if failure.is_open and effect.to_type != effect.from_type:
        team = config.teams.get(failure.owner_team_id)
        message += f"; owner {team.name if team else 'nobody'}"
    data = {
        "from": effect.from_type,
        "to": effect.to_type,
        "from_tags": effect.from_tags,
        "to_tags": effect.to_tags,
        "rule_change": change.pk,
        "classified_by": by,
        "evidence": effect.to_evidence,
    }
    return timeline_entry(failure, now, TimelineKind.RECLASSIFIED, actor, message, data)


def _enqueue(func: str, change_id: int) -> None:
    """Run ``func(change_id)`` on a django-q2 worker once this transaction commits; keep the task id."""
    from django_q.tasks import async_task

    def send() -> None:
        task_id = async_task(func, change_id)
        RuleChange.objects.filter(pk=change_id).update(task_id=str(task_id or "")[:64])

    transaction.on_commit(send)
