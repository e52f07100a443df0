"""How to ask the engine for each of the 16 features: method, path, query, body and, for the
writes, an idempotency key — built from the ids the seed data guarantees.

Pure: no Locust, no I/O. A `RequestFactory` turns a feature name into a `RequestSpec`; the
Locust users send the spec and record the answer.

What the seed (`engine.service.seed`) guarantees: SKUs ``SKU-000001`` … ``SKU-<n>`` (n =
``RESLAB_SEED_SKUS``, 10,000 by default), suppliers 1 … 200, a year of sales skewed towards
low SKU numbers. Invoices do not exist until someone uploads one: `InvoicePool` keeps the ids
of the invoices this generator uploaded, for ``ai_invoice_enhancement`` (a generator uploads a
few before t = 0 when that feature is in the mix).

Choices that shape the measurement:

- Reads pick SKUs with the seed's own skew (1 + ⌊u² · n⌋: a few best sellers, a long tail),
  so that the cache sees a realistic hot set rather than a uniform spray.
- Orders take 1–3 lines of 1–2 units; stock adjustments and imports only add stock, more on
  average than orders remove, so a long run never runs the popular SKUs dry (a 409 would be
  recorded as an error that no fault caused).
- Every write carries an ``Idempotency-Key`` that is unique to the run (the run id, the
  generator's slot and a counter), so that a repeated run never replays an earlier answer.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlencode

from engine.policy import FEATURE_NAMES

SUPPLIERS = 200
DEFAULT_SKUS = 10_000

# The words of the seed's product names (engine.service.seed), for searches that find rows.
SEARCH_TERMS: tuple[str, ...] = (
    "Organic", "Classic", "Premium", "Everyday", "Eco", "Deluxe", "Compact", "Family",
    "Fresh", "Smart", "Coffee", "Tea", "Pasta", "Soap", "Towel", "Lamp", "Charger", "Blocks",
    "Shirt", "Socks", "Planter", "Kibble", "Notebook", "Juice", "Cereal", "Candle",
    "Headphones", "Blender", "Sponge", "Shampoo",
)  # fmt: skip

# Each feature's route as the engine declares it (method and path template): the name under
# which Locust's own statistics group the requests.
FEATURE_ROUTES: Mapping[str, str] = MappingProxyType(
    {
        "inventory_read": "GET /api/inventory/{sku}",
        "dashboard_summary": "GET /api/summary",
        "health_status": "GET /health | /ready | /resilience/status",
        "metrics_export": "GET /metrics",
        "order_processing": "POST /api/orders",
        "inventory_write": "POST /api/inventory/{sku}/adjustments",
        "product_search": "GET /api/products",
        "pricing_update": "PUT /api/pricing/{sku}",
        "invoice_upload": "POST /api/invoices",
        "stock_timeline": "GET /api/stock-timeline",
        "ai_pricing_suggestion": "GET /api/pricing/{sku}/suggestion",
        "report_export": "GET /api/reports/sales.csv",
        "complex_analytics": "GET /api/analytics/trends",
        "ai_recommendations": "GET /api/recommendations",
        "ai_invoice_enhancement": "POST /api/invoices/{id}/enhance",
        "batch_import": "POST /api/batch/import",
    }
)

# The writes whose acknowledgement a campaign checks against PostgreSQL (POLICY.md, "nothing
# acknowledged is lost"), and the field of the answer that identifies the committed row.
ACKED_WRITE_IDS: Mapping[str, str] = MappingProxyType(
    {"order_processing": "order_id", "inventory_write": "movement_id"}
)

_HEALTH_PATHS = ("/health", "/ready", "/resilience/status")
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request to send. `name` is its route template (Locust's statistics key)."""

    feature: str
    method: str
    path: str
    name: str
    params: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    content_type: str | None = None
    idempotency_key: str | None = None
    # What identifies the request's subject, kept with an acknowledged write.
    subject: Mapping[str, str | int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The path with its query string."""
        return f"{self.path}?{urlencode(self.params)}" if self.params else self.path

    def headers(self, api_key: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if api_key:
            headers["X-API-Key"] = api_key
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        if self.idempotency_key is not None:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers


@dataclass(frozen=True, slots=True)
class SeedCatalog:
    """The ids the engine's seed creates."""

    skus: int = DEFAULT_SKUS
    suppliers: int = SUPPLIERS

    def __post_init__(self) -> None:
        if self.skus < 1 or self.suppliers < 1:
            raise ValueError("a catalogue has at least one SKU and one supplier")

    @staticmethod
    def sku(number: int) -> str:
        return f"SKU-{number:06d}"

    def popular_sku(self, rng: random.Random) -> str:
        """A SKU drawn with the seed's sales skew: 1 + ⌊u² · n⌋."""
        return self.sku(1 + min(self.skus - 1, int(rng.random() ** 2 * self.skus)))

    def any_sku(self, rng: random.Random) -> str:
        return self.sku(rng.randint(1, self.skus))

    def supplier(self, rng: random.Random) -> int:
        return rng.randint(1, self.suppliers)


class InvoicePool:
    """Ids of invoices uploaded (and acknowledged) in this run: what enhancement can ask for."""

    __slots__ = ("_ids",)

    def __init__(self, capacity: int = 1000) -> None:
        self._ids: deque[int] = deque(maxlen=capacity)

    def add(self, invoice_id: int) -> None:
        self._ids.append(invoice_id)

    def pick(self, rng: random.Random) -> int | None:
        if not self._ids:
            return None
        return self._ids[rng.randrange(len(self._ids))]

    def __len__(self) -> int:
        return len(self._ids)


def _json_body(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


class RequestFactory:
    """Builds the request for a feature. One per generator (or closed-model user): its
    random stream and its write counter are its own."""

    def __init__(
        self,
        catalog: SeedCatalog,
        rng: random.Random,
        key_prefix: str,
        invoices: InvoicePool | None = None,
    ) -> None:
        self.catalog = catalog
        self.rng = rng
        self.key_prefix = key_prefix
        self.invoices = invoices if invoices is not None else InvoicePool()
        self._writes = 0
        self._builders: dict[str, Callable[[], RequestSpec]] = {
            "inventory_read": self.inventory_read,
            "dashboard_summary": self.dashboard_summary,
            "health_status": self.health_status,
            "metrics_export": self.metrics_export,
            "order_processing": self.order_processing,
            "inventory_write": self.inventory_write,
            "product_search": self.product_search,
            "pricing_update": self.pricing_update,
            "invoice_upload": self.invoice_upload,
            "stock_timeline": self.stock_timeline,
            "ai_pricing_suggestion": self.ai_pricing_suggestion,
            "report_export": self.report_export,
            "complex_analytics": self.complex_analytics,
            "ai_recommendations": self.ai_recommendations,
            "ai_invoice_enhancement": self.ai_invoice_enhancement,
            "batch_import": self.batch_import,
        }
        assert tuple(self._builders) == FEATURE_NAMES

    def build(self, feature: str) -> RequestSpec:
        try:
            builder = self._builders[feature]
        except KeyError:
            raise ValueError(f"unknown feature {feature!r}") from None
        return builder()

    def build_code(self, feature_code: int) -> RequestSpec:
        """`build` for a code of `reports.runfolder.FEATURE_CODES` (FEATURE_NAMES order)."""
        return self._builders[FEATURE_NAMES[feature_code]]()

    def _next_key(self) -> str:
        self._writes += 1
        return f"{self.key_prefix}-{self._writes}"

    # --- the features, in POLICY.md's order ------------------------------------------------

    def inventory_read(self) -> RequestSpec:
        sku = self.catalog.popular_sku(self.rng)
        return RequestSpec("inventory_read", "GET", f"/api/inventory/{sku}", "/api/inventory/{sku}")

    def dashboard_summary(self) -> RequestSpec:
        return RequestSpec("dashboard_summary", "GET", "/api/summary", "/api/summary")

    def health_status(self) -> RequestSpec:
        path = _HEALTH_PATHS[self.rng.randrange(len(_HEALTH_PATHS))]
        return RequestSpec("health_status", "GET", path, path)

    def metrics_export(self) -> RequestSpec:
        return RequestSpec("metrics_export", "GET", "/metrics", "/metrics")

    def order_processing(self) -> RequestSpec:
        lines = self.rng.randint(1, 3)
        skus: list[str] = []
        while len(skus) < lines:
            sku = self.catalog.popular_sku(self.rng)
            if sku not in skus:
                skus.append(sku)
        key = self._next_key()
        customer_ref = f"load-{key}"[:64]
        body = {
            "customer_ref": customer_ref,
            "lines": [{"sku": sku, "quantity": self.rng.randint(1, 2)} for sku in skus],
        }
        return RequestSpec(
            "order_processing", "POST", "/api/orders", "/api/orders",
            body=_json_body(body), content_type=_JSON, idempotency_key=key,
            subject={"customer_ref": customer_ref},
        )  # fmt: skip

    def inventory_write(self) -> RequestSpec:
        sku = self.catalog.popular_sku(self.rng)
        delta = self.rng.randint(1, 20)
        reason = ("receipt", "return", "count")[self.rng.randrange(3)]
        key = self._next_key()
        body = {"delta": delta, "reason": reason, "note": f"load {key}"[:200]}
        return RequestSpec(
            "inventory_write", "POST", f"/api/inventory/{sku}/adjustments",
            "/api/inventory/{sku}/adjustments",
            body=_json_body(body), content_type=_JSON, idempotency_key=key,
            subject={"sku": sku, "delta": delta},
        )  # fmt: skip

    def product_search(self) -> RequestSpec:
        term = SEARCH_TERMS[self.rng.randrange(len(SEARCH_TERMS))]
        return RequestSpec(
            "product_search", "GET", "/api/products", "/api/products",
            params=(("q", term), ("limit", "20")),
        )  # fmt: skip

    def pricing_update(self) -> RequestSpec:
        sku = self.catalog.any_sku(self.rng)
        price = round(self.rng.uniform(1.0, 400.0), 2)
        return RequestSpec(
            "pricing_update", "PUT", f"/api/pricing/{sku}", "/api/pricing/{sku}",
            body=_json_body({"price": price}), content_type=_JSON,
        )  # fmt: skip

    def invoice_upload(self) -> RequestSpec:
        supplier = self.catalog.supplier(self.rng)
        number = self._next_key()
        lines = "\n".join(
            f"{self.catalog.any_sku(self.rng)}  qty {self.rng.randint(1, 50)}  "
            f"amount {self.rng.uniform(5, 500):.2f}"
            for _ in range(self.rng.randint(2, 6))
        )
        text = f"INVOICE {number}\nSupplier {supplier}\nDate 2024-01-01\n{lines}\nEND\n"
        return RequestSpec(
            "invoice_upload", "POST", "/api/invoices", "/api/invoices",
            params=(("supplier_id", str(supplier)), ("filename", f"invoice-{number}.txt"[:128])),
            body=text.encode(), content_type="text/plain",
        )  # fmt: skip

    def stock_timeline(self) -> RequestSpec:
        sku = self.catalog.popular_sku(self.rng)
        days = (30, 90)[self.rng.randrange(2)]
        return RequestSpec(
            "stock_timeline", "GET", "/api/stock-timeline", "/api/stock-timeline",
            params=(("sku", sku), ("days", str(days))),
        )  # fmt: skip

    def ai_pricing_suggestion(self) -> RequestSpec:
        sku = self.catalog.popular_sku(self.rng)
        return RequestSpec(
            "ai_pricing_suggestion", "GET", f"/api/pricing/{sku}/suggestion",
            "/api/pricing/{sku}/suggestion",
        )  # fmt: skip

    def report_export(self) -> RequestSpec:
        return RequestSpec(
            "report_export", "GET", "/api/reports/sales.csv", "/api/reports/sales.csv",
            params=(("days", "30"),),
        )  # fmt: skip

    def complex_analytics(self) -> RequestSpec:
        return RequestSpec(
            "complex_analytics", "GET", "/api/analytics/trends", "/api/analytics/trends",
            params=(("weeks", "12"),),
        )  # fmt: skip

    def ai_recommendations(self) -> RequestSpec:
        return RequestSpec(
            "ai_recommendations", "GET", "/api/recommendations", "/api/recommendations",
            params=(("limit", "10"),),
        )  # fmt: skip

    def ai_invoice_enhancement(self) -> RequestSpec:
        # Before any upload was acknowledged there is nothing of ours to enhance; invoice 1 is
        # the first any run created (a 404 on a fresh database, recorded as an error).
        invoice_id = self.invoices.pick(self.rng) or 1
        return RequestSpec(
            "ai_invoice_enhancement", "POST", f"/api/invoices/{invoice_id}/enhance",
            "/api/invoices/{id}/enhance", subject={"invoice_id": invoice_id},
        )  # fmt: skip

    def batch_import(self) -> RequestSpec:
        key = self._next_key()
        rows = [
            f"{self.catalog.popular_sku(self.rng)},{self.rng.randint(1, 20)},load-{key}"[:200]
            for _ in range(self.rng.randint(3, 8))
        ]
        body = "sku,quantity,reference\n" + "\n".join(rows) + "\n"
        return RequestSpec(
            "batch_import", "POST", "/api/batch/import", "/api/batch/import",
            body=body.encode(), content_type="text/csv", idempotency_key=key,
        )  # fmt: skip
