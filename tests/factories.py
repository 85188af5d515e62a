"""Row builders for tests, and the CI event they report through the API."""

import itertools

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from escalation.models import Identity, Person, Team


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True  # the roles hook only adds groups

    username = factory.Sequence(lambda n: f"user{n}")
    is_staff = True
    password = factory.django.Password("correct horse battery staple")

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        for role in extracted or []:
            self.groups.add(Group.objects.get(name=role.label))


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Team {n}")


class PersonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Person

    name = factory.Sequence(lambda n: f"Person {n}")
    team = factory.SubFactory(TeamFactory)


class IdentityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Identity

    person = factory.SubFactory(PersonFactory)
    value = factory.Sequence(lambda n: f"dev{n}@example.com")


# A failing unit-test job as CI reports it to POST /api/v1/events/.
EVENT = {
    "source": "github-actions",
    "repository": "acme/shop",
    "branch": "main",
    "commit": "9f1c2e7",
    "commit_author": "dev@example.com",
    "run_id": "1001",
    "attempt": 1,
    "job": "unit-tests",
    "status": "failure",
    "log_excerpt": "FAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4",
}

_run_ids = itertools.count(10_000)


def event_body(**changes) -> dict:
    return {**EVENT, **changes}


def report_failure(api, **changes):
    """A failure opened (or recurring) the way CI reports it: through the events API, in a new run."""
    from escalation.models import Failure

    body = event_body(**{"run_id": str(next(_run_ids)), "type": "unit_test", **changes})
    response = api.post("/api/v1/events/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    return Failure.objects.get(pk=response.json()["id"])
