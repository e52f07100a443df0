"""Deterministic seed data, generated set-based inside PostgreSQL so it takes seconds.

Every "random" value is a hash of a row number and a stream number (`seed_unit`), so two
seedings with the same SKU count on the same day give the same rows. Dates are anchored at
the day of seeding, so that "the last 30 days" always has sales.

Stock is consistent by construction: each SKU opens with a stock a year ago, each month
starts with a receipt covering that month's sales plus a little, and every sale is also a
stock movement; `inventory.on_hand` is the sum of the SKU's movements.
"""

from __future__ import annotations

from typing import Any

SUPPLIERS = 200
# Walk-in sales lines per SKU over the year; popular SKUs take most of them (skewed below).
SALES_PER_SKU = 25

_HELPERS = """
CREATE FUNCTION pg_temp.seed_unit(row_number bigint, stream integer)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (hashint8(row_number * 1000003 + stream) & 2147483647)::double precision
           / 2147483648.0
$$;
CREATE FUNCTION pg_temp.seed_pick(options text[], row_number bigint, stream integer)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT options[1 + floor(pg_temp.seed_unit(row_number, stream)
                             * array_length(options, 1))::integer]
$$;
"""

_SUPPLIERS = """
INSERT INTO suppliers (id, name, country, lead_time_days)
SELECT n,
       pg_temp.seed_pick(ARRAY['Northwind','Contoso','Globex','Initech','Umbrella','Acme',
                               'Stark','Wayne','Tyrell','Soylent'], n, 1)
         || ' ' || pg_temp.seed_pick(ARRAY['Trading','Supply','Wholesale','Foods',
                                           'Distribution'], n, 2)
         || ' ' || n,
       pg_temp.seed_pick(ARRAY['DE','FR','US','PL','IT','ES','NL','CN','VN','MX'], n, 3),
       2 + floor(pg_temp.seed_unit(n, 4) * 28)::integer
FROM generate_series(1, $1::integer) AS n
"""

_PRODUCTS = """
INSERT INTO products (sku, name, category, supplier_id, unit_cost, price)
SELECT 'SKU-' || lpad(n::text, 6, '0'),
       pg_temp.seed_pick(ARRAY['Organic','Classic','Premium','Everyday','Eco','Deluxe',
                               'Compact','Family','Fresh','Smart'], n, 11)
         || ' ' || pg_temp.seed_pick(ARRAY['Coffee','Tea','Pasta','Soap','Towel','Lamp',
                                           'Charger','Blocks','Shirt','Socks','Planter',
                                           'Kibble','Notebook','Juice','Cereal','Candle',
                                           'Headphones','Blender','Sponge','Shampoo'], n, 12)
         || ' ' || pg_temp.seed_pick(ARRAY['S','M','L','XL','250g','500g','1kg','2-pack',
                                           '6-pack','12-pack'], n, 13),
       pg_temp.seed_pick(ARRAY['Grocery','Beverages','Household','Personal Care',
                               'Electronics','Toys','Apparel','Garden','Pet','Office'], n, 14),
       1 + floor(pg_temp.seed_unit(n, 15) * $2::integer)::integer,
       cost,
       round(cost * (1.15 + pg_temp.seed_unit(n, 17) * 0.6)::numeric, 2)
FROM generate_series(1, $1::integer) AS n,
     LATERAL (SELECT round((0.5 + pg_temp.seed_unit(n, 16) ^ 2 * 200)::numeric, 2)) AS c(cost)
"""

# Squaring a uniform draw skews sales towards low SKU numbers: a few best sellers, a long tail.
_SALES = """
INSERT INTO sales (sku, sold_at, quantity, unit_price)
SELECT p.sku,
       $2::timestamptz - make_interval(secs => pg_temp.seed_unit(n, 22) * 365 * 86400),
       1 + floor(pg_temp.seed_unit(n, 23) ^ 3 * 6)::integer,
       p.price
FROM generate_series(1, $1::bigint) AS n
JOIN products AS p
  ON p.sku = 'SKU-' || lpad((1 + floor(pg_temp.seed_unit(n, 21) ^ 2 * $3::integer))::text,
                            6, '0')
"""

_OPENING_STOCK = """
INSERT INTO stock_movements (sku, moved_at, quantity, reason, reference)
SELECT sku,
       date_trunc('month', $1::timestamptz - interval '366 days') - interval '1 day',
       10 + floor(pg_temp.seed_unit(substr(sku, 5)::bigint, 31) * 290)::integer,
       'opening',
       'seed'
FROM products
"""

_RECEIPTS = """
INSERT INTO stock_movements (sku, moved_at, quantity, reason, reference)
SELECT sku,
       month,
       units + floor(pg_temp.seed_unit(substr(sku, 5)::bigint * 100
                                       + extract(month FROM month)::bigint, 32) * 20)::integer,
       'receipt',
       'PO-' || to_char(month, 'YYYYMM') || '-' || substr(sku, 5)
FROM (SELECT sku, date_trunc('month', sold_at) AS month, sum(quantity)::integer AS units
      FROM sales GROUP BY sku, date_trunc('month', sold_at)) AS monthly
"""

_SALE_MOVEMENTS = """
INSERT INTO stock_movements (sku, moved_at, quantity, reason, reference)
SELECT sku, sold_at, -quantity, 'sale', 'sale-' || id FROM sales
"""

_INVENTORY = """
INSERT INTO inventory (sku, on_hand, reorder_point, updated_at)
SELECT p.sku,
       coalesce(m.on_hand, 0),
       20 + floor(pg_temp.seed_unit(substr(p.sku, 5)::bigint, 41) * 80)::integer,
       $1::timestamptz
FROM products AS p
LEFT JOIN (SELECT sku, sum(quantity)::integer AS on_hand
           FROM stock_movements GROUP BY sku) AS m USING (sku)
"""


def seed_statements(skus: int, anchor: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """The seed as (SQL, arguments) pairs, to run in order in one transaction."""
    return [
        (_HELPERS, ()),
        (_SUPPLIERS, (SUPPLIERS,)),
        (_PRODUCTS, (skus, SUPPLIERS)),
        (_SALES, (skus * SALES_PER_SKU, anchor, skus)),
        (_OPENING_STOCK, (anchor,)),
        (_RECEIPTS, ()),
        (_SALE_MOVEMENTS, ()),
        (_INVENTORY, (anchor,)),
        ("ANALYZE", ()),
    ]
