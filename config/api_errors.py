"""DRF exception handler: errors are data with a stable shape."""

from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        detail = response.data["detail"]
        response.data = {"error": getattr(detail, "code", "error"), "detail": str(detail)}
    return response
