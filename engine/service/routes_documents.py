"""Document features: invoice_upload, ai_invoice_enhancement, batch_import.

An invoice's original is stored in S3 under the invoice's id, with its media type, so that
enhancing it (and extracting its text again) needs only S3 and the model, as the policy says.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from engine.policy import ServeMode
from engine.service import cache as cache_keys
from engine.service.api_common import SKU_PATTERN, IdempotencyKey, plain, write_response
from engine.service.container import ServicesDep
from engine.service.features import attempt, best_effort, enter
from engine.service.guard import NotFound, Unprocessable
from engine.service.idempotency import key_scope, request_fingerprint, run_write
from engine.service.llm import parse_json_object
from engine.service.security import Caller, require_api_key
from engine.service.trace import ServedBy, mark_served

router = APIRouter(prefix="/api", dependencies=[Depends(require_api_key)], tags=["documents"])

_TEXT_TYPES = ("text/plain", "text/csv")
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e\t\n]{4,}")
MAX_IMPORT_ROWS = 10_000


def invoice_key(invoice_id: int) -> str:
    return f"invoices/{invoice_id}"


def extract_text(body: bytes, content_type: str) -> str:
    """The invoice's text: decoded when it is text, else its printable runs (like `strings`)."""
    if content_type.startswith(_TEXT_TYPES):
        return body.decode("utf-8", errors="replace")
    return "\n".join(run.decode("ascii") for run in _PRINTABLE_RUN.findall(body))


# --- invoice_upload ------------------------------------------------------------------------


@router.post(
    "/invoices",
    status_code=201,
    summary="Upload a supplier invoice (invoice_upload)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def upload_invoice(
    request: Request,
    services: ServicesDep,
    supplier_id: Annotated[int, Query(ge=1, le=2_147_483_647)],
    filename: Annotated[str, Query(min_length=1, max_length=128, pattern=r"^[\w.\- ]+$")] = (
        "invoice.txt"
    ),
    content_type: Annotated[str, Header(alias="Content-Type")] = "text/plain",
) -> JSONResponse:
    enter(services.policy, "invoice_upload")
    body = await request.body()
    if not body:
        raise Unprocessable("body: the invoice is empty")
    media_type = content_type.split(";", 1)[0].strip().lower() or "application/octet-stream"
    text = extract_text(body, media_type)
    guard, db, store = services.guard, services.db, services.store

    async def check_supplier_and_number() -> int:
        async with db.connection() as connection:
            if not await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM suppliers WHERE id = $1)", supplier_id
            ):
                raise NotFound(f"supplier_id: unknown supplier {supplier_id}")
            invoice_id: int = await connection.fetchval("SELECT nextval('invoices_id_seq')")
            return invoice_id

    invoice_id = await guard.call("postgres", check_supplier_and_number)

    await guard.call("s3", lambda: store.put(invoice_key(invoice_id), body, media_type))

    async def record() -> asyncpg.Record:
        row: asyncpg.Record = await db.fetchrow(
            """INSERT INTO invoices (id, supplier_id, object_key, filename, content_type,
                                     size_bytes, raw_text)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING uploaded_at""",
            invoice_id, supplier_id, invoice_key(invoice_id), filename, media_type,
            len(body), text,
        )  # fmt: skip
        return row

    row = await guard.call("postgres", record)
    return JSONResponse(
        {
            "invoice_id": invoice_id,
            "supplier_id": supplier_id,
            "filename": filename,
            "size_bytes": len(body),
            "object_key": invoice_key(invoice_id),
            "uploaded_at": plain(row["uploaded_at"]),
        },
        status_code=201,
    )


# --- ai_invoice_enhancement ----------------------------------------------------------------

_ENHANCE_SYSTEM = (
    "You read supplier invoices. Answer with one JSON object with the fields supplier, "
    "invoice_number, invoice_date, total and line_items (description, quantity, amount)."
)
_MAX_PROMPT_CHARS = 8_000


@router.post(
    "/invoices/{id}/enhance",
    summary="Structure an invoice with the model (ai_invoice_enhancement)",
)
async def enhance_invoice(
    invoice_id: Annotated[int, Path(alias="id", ge=1, le=2**63 - 1)], services: ServicesDep
) -> JSONResponse:
    decision = enter(services.policy, "ai_invoice_enhancement")
    stored = await services.guard.call("s3", lambda: services.store.get(invoice_key(invoice_id)))
    text = extract_text(stored.body, stored.content_type)
    if decision.mode is ServeMode.PRIMARY:
        answer, _ = await attempt(
            services.guard,
            "openai",
            lambda: services.llm.complete(_ENHANCE_SYSTEM, text[:_MAX_PROMPT_CHARS], 500),
        )
        if answer is not None:
            return JSONResponse(
                {
                    "invoice_id": invoice_id,
                    "processed_with_ai": True,
                    "fields": parse_json_object(answer),
                    "answer": answer,
                }
            )
    mark_served(ServedBy.FALLBACK)
    return JSONResponse(
        {
            "invoice_id": invoice_id,
            "processed_with_ai": False,
            "note": "processed without AI",
            "raw_text": text,
        }
    )


# --- batch_import --------------------------------------------------------------------------

_SKU_RE = re.compile(SKU_PATTERN)


def parse_import(body: bytes) -> list[tuple[str, int, str]]:
    """The CSV's rows as (sku, quantity, reference); a bad row is a 422 naming line and field."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Unprocessable("body: the file is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [column for column in ("sku", "quantity") if column not in header]
    if missing:
        raise Unprocessable(f"header: missing column {missing[0]!r} (need sku, quantity)")
    rows: list[tuple[str, int, str]] = []
    for record in reader:
        line = reader.line_num
        sku = (record.get("sku") or "").strip()
        if not _SKU_RE.match(sku):
            raise Unprocessable(f"line {line}: sku: not a SKU ({sku[:40]!r})")
        try:
            quantity = int((record.get("quantity") or "").strip())
        except ValueError:
            raise Unprocessable(f"line {line}: quantity: not a whole number") from None
        if quantity == 0 or abs(quantity) > 100_000:
            raise Unprocessable(f"line {line}: quantity: must be non-zero and at most 100000")
        reference = (record.get("reference") or "").strip()[:64]
        rows.append((sku, quantity, reference))
        if len(rows) > MAX_IMPORT_ROWS:
            raise Unprocessable(f"body: more than {MAX_IMPORT_ROWS} rows")
    if not rows:
        raise Unprocessable("body: the file has no rows")
    return rows


async def _apply_import(
    connection: asyncpg.Connection, object_key: str, rows: list[tuple[str, int, str]]
) -> tuple[int, dict[str, Any]]:
    skus = [sku for sku, _, _ in rows]
    quantities = [quantity for _, quantity, _ in rows]
    references = [reference or None for _, _, reference in rows]
    unknown = await connection.fetchval(
        """SELECT sku FROM unnest($1::text[]) AS l(sku)
           WHERE NOT EXISTS (SELECT 1 FROM products AS p WHERE p.sku = l.sku) LIMIT 1""",
        skus,
    )
    if unknown is not None:
        raise Unprocessable(f"sku: unknown sku {unknown!r}")
    await connection.execute(
        """INSERT INTO stock_movements (sku, moved_at, quantity, reason, reference)
           SELECT sku, now(), quantity, 'import', coalesce(reference, $4)
           FROM unnest($1::text[], $2::integer[], $3::text[]) AS l(sku, quantity, reference)""",
        skus, quantities, references, object_key,
    )  # fmt: skip
    # One update per SKU, in SKU order, however often the file names it.
    await connection.execute(
        """UPDATE inventory AS i SET on_hand = i.on_hand + l.quantity, updated_at = now()
           FROM (SELECT sku, sum(quantity)::integer AS quantity
                 FROM unnest($1::text[], $2::integer[]) AS u(sku, quantity)
                 GROUP BY sku ORDER BY sku) AS l
           WHERE i.sku = l.sku""",
        skus, quantities,
    )  # fmt: skip
    import_id = await connection.fetchval(
        "INSERT INTO batch_imports (object_key, row_count) VALUES ($1, $2) RETURNING id",
        object_key,
        len(rows),
    )
    return 201, {
        "import_id": import_id,
        "rows": len(rows),
        "skus": len(set(skus)),
        "object_key": object_key,
    }


@router.post(
    "/batch/import",
    status_code=201,
    summary="Import stock receipts from a CSV of sku,quantity,reference (batch_import)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def batch_import(
    request: Request,
    services: ServicesDep,
    caller: Caller,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    enter(services.policy, "batch_import")
    body = await request.body()
    rows = parse_import(body)
    fingerprint = request_fingerprint(body.decode("utf-8-sig"))
    object_key = f"imports/{uuid.uuid4().hex}.csv"
    # The file first: an import in PostgreSQL always has its source file in S3.
    await services.guard.call("s3", lambda: services.store.put(object_key, body, "text/csv"))

    async def write() -> Any:
        async with services.db.connection() as connection:
            return await run_write(
                connection,
                key_scope("batch_import", caller.key_id),
                idempotency_key,
                fingerprint,
                lambda conn: _apply_import(conn, object_key, rows),
            )

    result = await services.guard.call("postgres", write)
    keys = sorted({cache_keys.inventory_key(sku) for sku, _, _ in rows})
    await best_effort(services.guard, "redis", lambda: services.cache.invalidate(*keys))
    return write_response(result)
