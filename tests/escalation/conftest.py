import pytest
from django.utils import timezone

from escalation.choices import SourceKind
from escalation.services.sources import source_create
from portal.audit import Actor
from tests.escalation.ingest_support import WEBHOOK_SECRET


@pytest.fixture
def github_source(db):
    """A GitHub source named 'gh' whose webhooks are signed with WEBHOOK_SECRET."""
    source, _ = source_create(
        name="gh", kind=SourceKind.GITHUB, webhook_secret=WEBHOOK_SECRET, actor=Actor.task("test"), now=timezone.now()
    )
    return source


@pytest.fixture
def gitlab_source(db):
    """A GitLab source named 'gl' whose webhooks send WEBHOOK_SECRET as X-Gitlab-Token."""
    source, _ = source_create(
        name="gl", kind=SourceKind.GITLAB, webhook_secret=WEBHOOK_SECRET, actor=Actor.task("test"), now=timezone.now()
    )
    return source
