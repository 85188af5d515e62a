"""A QA Analyst triages a failure in the admin, in a real browser."""

import pytest
from django.utils import timezone

from escalation.models import Failure
from portal.models import AuditEntry
from tests.factories import UserFactory

# serialized_rollback keeps the data migrations' rows (roles, matrix, rules) for the tests that follow.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct horse battery staple"


def report_failure(api, job: str, log: str) -> int:
    body = {
        "source": "gitlab-ci",
        "repository": "acme/shop",
        "branch": "main",
        "commit": "c0ffee1",
        "run_id": f"run-{job}",
        "job": job,
        "status": "failure",
        "log_excerpt": log,
    }
    response = api.post("/api/v1/events/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def test_a_qa_analyst_finds_the_overdue_failure_and_acknowledges_it(live_server, page, api, tmp_path):
    from escalation.choices import Role

    UserFactory(username="quinn", roles=[Role.QA_ANALYST])
    overdue = report_failure(api, "db-migrate", "FATAL:  sorry, too many clients already")
    report_failure(api, "unit-tests", "FAILED tests/test_cart.py::test_total - AssertionError")
    Failure.objects.filter(pk=overdue).update(sla_due_at=timezone.now() - timezone.timedelta(minutes=5))

    log_in(page, live_server, "quinn")
    page.goto(f"{live_server.url}/admin/escalation/failure/?overdue=yes")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert "Database connectivity" in rows.first.inner_text()

    rows.first.locator("input.action-select").check()
    page.select_option("select[name=action]", "acknowledge")
    page.fill("input[name=note]", "looking at the pool")
    page.click("button[name=index]")
    page.wait_for_selector("ul.messagelist")
    page.screenshot(path=str(tmp_path / "acknowledged.png"), full_page=True)

    assert "1 failure(s) changed" in page.inner_text("ul.messagelist")
    failure = Failure.objects.get(pk=overdue)
    assert failure.status == "acknowledged"
    assert failure.acknowledged_by.username == "quinn"
    assert AuditEntry.objects.filter(object_id=str(overdue), source="admin", actor__username="quinn").exists()

    page.goto(f"{live_server.url}/admin/escalation/failure/{overdue}/change/")
    timeline = page.inner_text("#timeline-group")
    assert "Acknowledged by quinn" in timeline and "looking at the pool" in timeline


def test_a_product_owner_sees_failures_but_is_offered_no_triage_actions(live_server, page, api):
    from escalation.choices import Role

    UserFactory(username="pat", roles=[Role.PRODUCT_OWNER])
    report_failure(api, "unit-tests", "FAILED tests/test_cart.py::test_total - AssertionError")

    log_in(page, live_server, "pat")
    page.goto(f"{live_server.url}/admin/escalation/failure/")
    assert page.locator("#result_list tbody tr").count() == 1
    assert page.locator("select[name=action]").count() == 0
