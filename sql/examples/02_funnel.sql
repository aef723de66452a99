-- Funnel over January 2026: users reaching each step
SELECT
  count(DISTINCT uid) FILTER (WHERE event = 'view_item')      AS viewed,
  count(DISTINCT uid) FILTER (WHERE event = 'add_to_cart')    AS carted,
  count(DISTINCT uid) FILTER (WHERE event = 'begin_checkout') AS checked_out,
  count(DISTINCT uid) FILTER (WHERE event = 'purchase')       AS purchased
FROM events
WHERE ts >= TIMESTAMP '2026-01-01T00:00:00Z' AND ts < TIMESTAMP '2026-02-01T00:00:00Z';

-- Cart abandoners of the last week of January: added to cart, never purchased
SELECT count(*) AS cart_abandoners
FROM (
  SELECT uid FROM events
  WHERE event = 'add_to_cart' AND ts >= TIMESTAMP '2026-01-25T00:00:00Z' AND ts < TIMESTAMP '2026-02-01T00:00:00Z'
  EXCEPT
  SELECT uid FROM events
  WHERE event = 'purchase' AND ts >= TIMESTAMP '2026-01-25T00:00:00Z' AND ts < TIMESTAMP '2026-02-01T00:00:00Z'
) t;

-- Revenue by country in January
SELECT p.country, round(sum(e.price), 2) AS revenue, count(*) AS purchases
FROM events e JOIN profiles p ON e.uid = p.uid
WHERE e.event = 'purchase' AND e.ts >= TIMESTAMP '2026-01-01T00:00:00Z'
GROUP BY p.country
ORDER BY revenue DESC
LIMIT 5;
