"""The database schema as ordered migrations, applied idempotently at start.

Kept as Python strings rather than SQL files so that they travel with the package without
any package-data configuration. A migration is never edited once shipped: add a new one.
"""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "retail schema",
        """
        CREATE EXTENSION IF NOT EXISTS pg_trgm;

        CREATE TABLE suppliers (
            id             integer PRIMARY KEY,
            name           text    NOT NULL,
            country        text    NOT NULL,
            lead_time_days integer NOT NULL CHECK (lead_time_days > 0)
        );

        CREATE TABLE products (
            sku         text          PRIMARY KEY,
            name        text          NOT NULL,
            category    text          NOT NULL,
            supplier_id integer       NOT NULL REFERENCES suppliers (id),
            unit_cost   numeric(12,2) NOT NULL CHECK (unit_cost > 0),
            price       numeric(12,2) NOT NULL CHECK (price > 0),
            updated_at  timestamptz   NOT NULL DEFAULT now()
        );
        -- Substring search on names (ILIKE '%q%') needs trigrams; a btree cannot help it.
        CREATE INDEX products_name_trgm ON products USING gin (name gin_trgm_ops);
        CREATE INDEX products_category ON products (category);

        CREATE TABLE inventory (
            sku           text        PRIMARY KEY REFERENCES products (sku),
            on_hand       integer     NOT NULL CHECK (on_hand >= 0),
            reorder_point integer     NOT NULL CHECK (reorder_point >= 0),
            updated_at    timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE stock_movements (
            id        bigserial   PRIMARY KEY,
            sku       text        NOT NULL REFERENCES products (sku),
            moved_at  timestamptz NOT NULL,
            quantity  integer     NOT NULL CHECK (quantity <> 0),
            reason    text        NOT NULL,
            reference text
        );
        -- The stock timeline reads one SKU's movements in time order.
        CREATE INDEX stock_movements_sku_time ON stock_movements (sku, moved_at);

        CREATE TABLE orders (
            id           bigserial     PRIMARY KEY,
            customer_ref text          NOT NULL,
            created_at   timestamptz   NOT NULL DEFAULT now(),
            total        numeric(14,2) NOT NULL
        );
        CREATE INDEX orders_created_at ON orders (created_at);

        -- Every sold line: walk-in sales from the seed have no order, API orders do.
        CREATE TABLE sales (
            id         bigserial     PRIMARY KEY,
            sku        text          NOT NULL REFERENCES products (sku),
            sold_at    timestamptz   NOT NULL,
            quantity   integer       NOT NULL CHECK (quantity > 0),
            unit_price numeric(12,2) NOT NULL,
            order_id   bigint        REFERENCES orders (id)
        );
        -- The summary, the report and the trends read a recent time range of all SKUs;
        -- the top sellers and the pricing suggestion read one SKU's recent sales.
        CREATE INDEX sales_sold_at ON sales (sold_at) INCLUDE (sku, quantity, unit_price);
        CREATE INDEX sales_sku_sold_at ON sales (sku, sold_at);
        CREATE INDEX sales_order_id ON sales (order_id) WHERE order_id IS NOT NULL;

        CREATE TABLE price_changes (
            id         bigserial     PRIMARY KEY,
            sku        text          NOT NULL REFERENCES products (sku),
            old_price  numeric(12,2) NOT NULL,
            new_price  numeric(12,2) NOT NULL,
            changed_at timestamptz   NOT NULL DEFAULT now()
        );

        CREATE TABLE invoices (
            id           bigserial   PRIMARY KEY,
            supplier_id  integer     REFERENCES suppliers (id),
            object_key   text        NOT NULL UNIQUE,
            filename     text        NOT NULL,
            content_type text        NOT NULL,
            size_bytes   integer     NOT NULL,
            raw_text     text        NOT NULL,
            uploaded_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE batch_imports (
            id          bigserial   PRIMARY KEY,
            object_key  text        NOT NULL UNIQUE,
            row_count   integer     NOT NULL,
            imported_at timestamptz NOT NULL DEFAULT now()
        );

        -- A write's first answer, stored in the write's own transaction: a retry with the
        -- same key finds either nothing (never committed) or exactly what was acknowledged.
        CREATE TABLE idempotency_keys (
            scope        text        NOT NULL,
            key          text        NOT NULL,
            request_hash text        NOT NULL,
            status_code  integer,
            response     jsonb,
            created_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (scope, key)
        );
        """,
    ),
)
