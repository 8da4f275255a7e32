"""Request headers with meaning: Idempotency-Key (run-now, ad-hoc runs) and If-Match (schedule updates)."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions
from rest_framework.request import Request

# Run.idempotency_key holds 200 characters, and the services prefix the client's key with the organization.
IDEMPOTENCY_KEY_MAX = 150
_KEY = re.compile(r"^[\x21-\x7e]+$")
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,9})"?$')

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    name="Idempotency-Key",
    type=OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        f"Up to {IDEMPOTENCY_KEY_MAX} printable ASCII characters. Repeating a request with the same key returns "
        "the run the first one created (200) instead of queuing another (201)."
    ),
)
IF_MATCH_PARAMETER = OpenApiParameter(
    name="If-Match",
    type=OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    description='The schedule\'s version as its ETag ("3"), instead of "version" in the body.',
)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None or key == "":
        return None
    if len(key) > IDEMPOTENCY_KEY_MAX or not _KEY.match(key):
        raise exceptions.ValidationError(
            {"Idempotency-Key": [f"must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters without spaces"]}
        )
    return key


def expected_version(request: Request, data: dict[str, Any]) -> int:
    """The version the client read: ``version`` in the body (removed from it) or the If-Match header."""
    in_body = "version" in data
    body_version = data.pop("version", None)
    header = request.headers.get("If-Match")
    header_version: int | None = None
    if header:
        match = _ETAG.match(header.strip())
        if match is None:
            raise exceptions.ValidationError({"If-Match": ['must be the schedule\'s ETag, e.g. "3"']})
        header_version = int(match[1])
    if in_body:
        if isinstance(body_version, bool) or not isinstance(body_version, int):
            raise exceptions.ValidationError({"version": ["must be the whole number you read"]})
        if header_version is not None and header_version != body_version:
            raise exceptions.ValidationError({"version": ["differs from the If-Match header; send one of them"]})
        return body_version
    if header_version is None:
        raise exceptions.ValidationError(
            {
                "version": [
                    "is required: send the version you read (or an If-Match header), so that a change someone "
                    "else made meanwhile is not overwritten"
                ]
            }
        )
    return header_version
