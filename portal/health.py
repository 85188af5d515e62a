"""Liveness and readiness endpoints."""

from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.utils import timezone


def healthz(request):
    """The process is alive; says nothing about its dependencies."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """This web process can serve: its database answers and every migration is applied."""
    checks = {"database": "ok", "migrations": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if pending:
            checks["migrations"] = f"{len(pending)} pending"
    except DatabaseError as exc:
        checks["database"] = f"unreachable: {exc.__class__.__name__}"
        checks.pop("migrations")
    ready = all(value == "ok" for value in checks.values())
    # The engine is shown, never judged here: a stale worker must not take the web processes out of rotation.
    engine = _engine_state() if checks["database"] == "ok" else {"status": "unknown"}
    body = {"status": "ok" if ready else "unavailable", **checks, "engine": engine}
    return JsonResponse(body, status=200 if ready else 503)


def readyz_engine(request):
    """The worker and the SLA sweep run: 503 when the heartbeat or the last sweep is stale or missing."""
    engine = _engine_state()
    healthy = engine["status"] == "ok"
    return JsonResponse(engine, status=200 if healthy else 503)


def _engine_state() -> dict:
    from escalation.services.engine import engine_state

    try:
        return engine_state(timezone.now())
    except DatabaseError as exc:
        return {"status": "unknown", "stale": True, "error": f"unreachable: {exc.__class__.__name__}"}
