-- Sample orders for make demo and the benchmarks: 10 columns of mixed types
-- (numeric, timestamptz, text with quotes/newlines/unicode, jsonb, NULLs).
-- psql -v rows=N -f sample_orders.sql
CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    customer    text NOT NULL,
    status      text NOT NULL,
    amount      numeric(12,2) NOT NULL,
    currency    char(3) NOT NULL,
    items       integer NOT NULL,
    created_at  timestamptz NOT NULL,
    shipped_at  timestamptz,
    note        text,
    attributes  jsonb NOT NULL
);
INSERT INTO orders
SELECT g,
       'customer-' || (g % 50000),
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'returned'])[1 + g % 5],
       round((g % 100000) / 7.0, 2),
       (ARRAY['EUR', 'USD', 'GBP'])[1 + g % 3],
       1 + g % 9,
       timestamptz '2025-01-01 00:00:00+00' + g * interval '17 seconds',
       CASE WHEN g % 5 >= 2 THEN timestamptz '2025-01-02 00:00:00+00' + g * interval '17 seconds' END,
       CASE WHEN g % 10 = 0 THEN 'gift: "wrap it", ' || chr(10) || 'thanks ✓' END,
       jsonb_build_object('channel', (ARRAY['web', 'app', 'store'])[1 + g % 3],
                          'coupon', CASE WHEN g % 4 = 0 THEN 'SPRING' || g % 100 END,
                          'lines', jsonb_build_array(g % 13, g % 17))
  FROM generate_series(1, :rows) g;
ANALYZE orders;
