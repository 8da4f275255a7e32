"""Cursor pagination: stable pages however many rows are added while a client walks them."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class NewestFirstPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class SchedulePagination(CursorPagination):
    # The default; ``?ordering=`` (OrderingFilter) may choose another of the view's ordering_fields.
    ordering = ("name", "id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class AlertPagination(CursorPagination):
    ordering = ("-raised_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
