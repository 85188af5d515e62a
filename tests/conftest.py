import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from escalation.choices import Role
from escalation.services.config import config_changed
from escalation.services.sources import source_create
from portal.audit import Actor
from tests.factories import UserFactory


@pytest.fixture(scope="session", autouse=True)
def _tests_run_on_postgresql(django_db_blocker):
    """The suite proves behaviour on PostgreSQL, the production database; SQLite would hide races."""
    with django_db_blocker.unblock():
        assert connection.vendor == "postgresql", (
            f"tests must run on PostgreSQL (got {connection.vendor}); run them with `make test`"
        )


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """Tests make many users; the production hasher would spend most of the run hashing their passwords."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_routing_config(settings):
    settings.PORTAL_CONFIG_CACHE_SECONDS = 0
    settings.PORTAL_SWEEP_LOOP_SECONDS = 0  # the scheduled sweep task sweeps once (tests/portal/test_engine.py loops)
    config_changed()
    yield
    config_changed()


@pytest.fixture
def ingest_token(db):
    """A token with every scope."""
    _, token = source_create(name="ci", actor=Actor.task("test"), now=timezone.now())
    return token


@pytest.fixture
def api(ingest_token):
    """A client that talks to the API as a CI system with every scope."""
    return Client(headers={"authorization": f"Bearer {ingest_token}"})


def _persona(role: Role):
    @pytest.fixture
    def persona(db):
        return UserFactory(username=role.value, roles=[role])

    return persona


for _role in Role:
    globals()[_role.value] = _persona(_role)


@pytest.fixture
def outsider(db):
    """A staff user with no role."""
    return UserFactory(username="outsider")


@pytest.fixture
def recorder():
    """A local HTTP server that records requests and answers from a script per path (tests/recorder.py)."""
    from tests.recorder import Recorder

    with Recorder() as server:
        yield server
