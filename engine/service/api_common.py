"""What the `/api` routers share: path and header types, and turning rows into JSON."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Header, Path
from fastapi.responses import JSONResponse

from engine.service.idempotency import REPLAYED_HEADER, WriteResult

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"

Sku = Annotated[str, Path(pattern=SKU_PATTERN, description="Stock-keeping unit, e.g. SKU-000042")]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        description="Retrying a write with the same key returns the first answer",
    ),
]


def plain(value: Any) -> Any:
    """A database value as JSON: money as a number, times as ISO 8601."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def row_dict(row: Any) -> dict[str, Any]:
    return {key: plain(value) for key, value in row.items()}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def write_response(result: WriteResult) -> JSONResponse:
    headers = {REPLAYED_HEADER: "true"} if result.replayed else None
    return JSONResponse(result.body, status_code=result.status_code, headers=headers)
