"""The bare endpoint: the same framework, parser, token check and scope as `POST /api/v1/events/`,
then one raw INSERT. Measured next to ingestion, the difference is the ingestion work itself.

bench/ingest.py creates the table (it is no model, so the portal's migrations never see it).
"""

from django.db import connection
from django.utils import timezone
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from escalation.api.authentication import HasScope
from escalation.choices import Scope

INSERT = """
INSERT INTO bench_bare_event (source_id, run_id, status, received_at) VALUES (%s, %s, %s, %s) RETURNING id
"""


class BareEventView(APIView):
    """Authenticates like EventView (the default authentication classes, HasScope "ingest"), parses the
    same JSON body and stores one row."""

    permission_classes = [HasScope]
    required_scope = Scope.INGEST

    def post(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        run_id, job_status = str(data.get("run_id", ""))[:200], str(data.get("status", ""))[:16]
        with connection.cursor() as cursor:
            cursor.execute(INSERT, [request.user.pk, run_id, job_status, timezone.now()])
            (row_id,) = cursor.fetchone()
        return Response({"id": row_id}, status=status.HTTP_201_CREATED)
