"""Page-number pagination whose page size the client may choose within bounds; outside them the
answer is a 400 naming the field, not a silently different page."""

from django.conf import settings
from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination


class BoundedPageNumberPagination(PageNumberPagination):
    page_size_query_param = "page_size"

    @property
    def max_page_size(self) -> int:
        return settings.API_MAX_PAGE_SIZE

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise exceptions.ValidationError({"page_size": [f"An integer from 1 to {self.max_page_size}."]})
        return size
