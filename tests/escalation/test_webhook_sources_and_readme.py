"""Setting up webhook sources, keeping their secret out of sight, and the README's CI snippets."""

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from escalation.choices import SourceKind
from escalation.models import IngestSource
from escalation.services.sources import source_create
from portal.audit import Actor
from portal.errors import BadInput
from portal.models import AuditEntry
from tests.escalation.ingest_support import WEBHOOK_SECRET, fixture, github_post, gitlab_post, ok

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## CI-native reporting: webhooks and report uploads"


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [SourceKind.GITHUB, SourceKind.GITLAB])
def test_create_ingest_token_sets_up_a_webhook_source(kind):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_ingest_token", "ci", "--kind", kind, "--webhook-secret", WEBHOOK_SECRET, stdout=out, stderr=err
    )
    source = IngestSource.objects.get(name="ci")
    assert (source.kind, source.webhook_secret) == (kind, WEBHOOK_SECRET)
    assert f"/api/v1/webhooks/{kind}/ci/" in err.getvalue()
    client = Client()
    if kind == SourceKind.GITHUB:
        ok(github_post(client, "ci", "ping", {"zen": "hi"}), 200)
    else:
        ok(gitlab_post(client, "ci", {"object_kind": "push"}), 202)


@pytest.mark.django_db
def test_a_webhook_source_without_a_secret_is_refused():
    with pytest.raises(CommandError, match="webhook-secret"):
        call_command("create_ingest_token", "ci", "--kind", "github", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(BadInput, match="16 to 255"):
        source_create(
            name="x", kind=SourceKind.GITLAB, webhook_secret="short", actor=Actor.task("t"), now=timezone.now()
        )
    assert not IngestSource.objects.exists()


@pytest.mark.django_db
def test_the_webhook_secret_never_shows_in_the_audit_log_admin_or_api(github_source):
    ok(github_post(Client(), "gh", "workflow_job", fixture("github-webhooks",
       "octokit-webhooks__workflow_job.completed.failure.json")), 200)  # fmt: skip
    audit = " ".join(str(e.after) + str(e.before) for e in AuditEntry.objects.all())
    assert "webhook_secret" not in audit and WEBHOOK_SECRET not in audit
    admin = get_user_model().objects.create_superuser("root", "r@example.com", "pw-for-tests-only")
    client = Client()
    client.force_login(admin)
    for url in ("/admin/escalation/ingestsource/", f"/admin/escalation/ingestsource/{github_source.pk}/change/",
                "/admin/escalation/webhookdelivery/", "/api/v1/failures/"):  # fmt: skip
        response = client.get(url)
        assert response.status_code == 200, url
        assert WEBHOOK_SECRET not in response.content.decode(), url


def _blocks(language: str) -> list[str]:
    text = README.read_text()
    section = text[text.index(SECTION) : text.index("\n## ", text.index(SECTION) + 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_the_readmes_yaml_snippets_parse():
    blocks = _blocks("yaml")
    assert len(blocks) == 2  # GitHub Actions, GitLab CI
    steps = yaml.safe_load(blocks[0])
    assert steps[0]["if"] == "always()" and "reports/junit/" in steps[0]["run"]
    job = yaml.safe_load(blocks[1])["report-to-portal"]
    assert job["when"] == "always" and any("reports/secrets/" in line for line in job["script"])
    for line in job["script"] + [steps[0]["run"]]:
        assert subprocess.run(["bash", "-n"], input=line, text=True, capture_output=True).returncode == 0, line


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is needed to check the shell snippets")
def test_the_readmes_shell_snippets_are_valid_bash():
    blocks = _blocks("sh")
    assert len(blocks) == 2
    text = "\n".join(blocks)
    for endpoint in ("reports/junit/", "reports/sarif/", "reports/trivy/", "reports/secrets/", "webhooks/github/",
                     "webhooks/gitlab/"):  # fmt: skip
        assert endpoint in text
    for block in blocks:
        result = subprocess.run(["bash", "-n"], input=block, text=True, capture_output=True)
        assert result.returncode == 0, result.stderr
