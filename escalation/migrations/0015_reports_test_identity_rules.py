"""Default rules that type a failing test of a JUnit report by its identity: suite, class, file and name.

A JUnit upload classifies each failing test with its identity as event fields: ``test`` is suite,
class, file and name joined by " › " and ``class`` the class alone. These rules read them, in the
name stage before every job and step rule (positions 200-240; the job rules start at 300), so the
test's own name decides before the name of the job that ran it; a log line of stage 1 or 2 in the
failure's message still wins. They follow what real runners print: Maven Failsafe names integration
test classes ``*IT``, ``*ITCase`` and ``IT*``; pytest and Jest put them under ``tests/integration/``
or ``e2e/``; Cypress, Playwright and Selenium suites are end-to-end tests. A test that none of them
(nor another rule) types stays ``unit_test``, the upload's fallback for a failing test. Short words
(``db``, ``dao``, ``rls``, ``perf``, ``sso``) count only as words: between separators or as a
camel-case part (``UserDbTest``), so ``feedback`` is not a database test. ``(?-i:...)`` makes the
``IT`` suffix case-sensitive (``submit`` is no integration test). Each rule gets its version-1 record.
"""

from django.db import migrations
from django.utils import timezone

NAME = 30
ACTOR = "migration:0015_reports_test_identity_rules"

# (name, position, event field, pattern, failure_type, description)
RULES = [
    (
        "test-performance",
        200,
        "test",
        r"(benchmark|performance|load[-_ ]?test|stress[-_ ]?test|throughput|((^|[^a-z0-9])perf|(?-i:[a-z0-9](Perf|PERF)))([^a-z0-9]|(?-i:[A-Z])|$)|((^|[^a-z0-9])bench|(?-i:[a-z0-9](Bench|BENCH)))([^a-z0-9]|(?-i:[A-Z])|$)|((^|[^a-z0-9])jmh|(?-i:[a-z0-9](Jmh|JMH)))([^a-z0-9]|(?-i:[A-Z])|$))",
        "performance_regression",
        "A benchmark or performance test (Go Benchmark*, pytest-benchmark, JMH, load tests)",
    ),
    (
        "test-database",
        210,
        "test",
        r"(database|repositor(y|ies)|row[-_ ]?level[-_ ]?security|postgres|mysql|mariadb|sqlite|((^|[^a-z0-9])db|(?-i:[a-z0-9](Db|DB)))([^a-z0-9]|(?-i:[A-Z])|$)|((^|[^a-z0-9])dao|(?-i:[a-z0-9](Dao|DAO)))([^a-z0-9]|(?-i:[A-Z])|$)|((^|[^a-z0-9])rls|(?-i:[a-z0-9](Rls|RLS)))([^a-z0-9]|(?-i:[A-Z])|$))",
        "database_test",
        "A database test: db, database, repository and DAO tests, row-level security (RLS)",
    ),
    (
        "test-auth",
        220,
        "test",
        r"(oauth|jwt|auth(entic|ori[sz]|[nz]?([^a-z0-9]|(?-i:[A-Z])|$))|session|login|logout|openid|oidc|saml|password|credential|((^|[^a-z0-9])sso|(?-i:[a-z0-9](Sso|SSO)))([^a-z0-9]|(?-i:[A-Z])|$))",
        "auth_change",
        "An authentication or authorisation test: auth, JWT, OAuth/OIDC, SAML, SSO, sessions, login",
    ),
    (
        "test-integration",
        230,
        "test",
        r"(integration|e2e|end[-_ ]to[-_ ]end|playwright|cypress|selenium|webdriver|acceptance|system[-_ ]?test|\.cy\.[jt]sx?)",
        "integration_test",
        "An integration or end-to-end test: tests/integration/, e2e, Cypress, Playwright, Selenium",
    ),
    (
        "test-failsafe-it",
        240,
        "class",
        r"(?-i:(^|[.$])IT[A-Z][A-Za-z0-9_]*$|[a-z0-9]IT(Case)?$)",
        "integration_test",
        "A Maven Failsafe integration test class: *IT, *ITCase, IT*",
    ),
]


def forward(apps, schema_editor):
    ClassificationRule = apps.get_model("escalation", "ClassificationRule")
    ClassificationRuleVersion = apps.get_model("escalation", "ClassificationRuleVersion")
    now = timezone.now()
    for name, position, event_field, pattern, failure_type, description in RULES:
        rule, created = ClassificationRule.objects.update_or_create(
            name=name,
            defaults={
                "stage": NAME,
                "position": position,
                "field": "event_field",
                "event_field": event_field,
                "pattern": pattern,
                "failure_type": failure_type,
                "tags": [],
                "description": description,
            },
        )
        if not created:
            continue
        ClassificationRuleVersion.objects.create(
            rule=rule,
            rule_name=rule.name,
            version=rule.version,
            kind="create",
            state={
                "name": rule.name,
                "stage": rule.stage,
                "position": rule.position,
                "field": rule.field,
                "event_field": rule.event_field,
                "pattern": rule.pattern,
                "failure_type": rule.failure_type,
                "tags": list(rule.tags),
                "is_enabled": rule.is_enabled,
                "description": rule.description,
            },
            changed_at=now,
            actor_label=ACTOR,
        )


def backward(apps, schema_editor):
    ClassificationRuleVersion = apps.get_model("escalation", "ClassificationRuleVersion")
    ClassificationRuleVersion.objects.filter(actor_label=ACTOR).delete()
    apps.get_model("escalation", "ClassificationRule").objects.filter(name__in=[row[0] for row in RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("escalation", "0014_reports_timeline_replaced_by_job")]
    operations = [migrations.RunPython(forward, backward)]
