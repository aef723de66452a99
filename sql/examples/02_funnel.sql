-- Funnel over the last 31 days: users reaching each step
SELECT
  count(DISTINCT uid) FILTER (WHERE event = 'view_item')      AS viewed,
  count(DISTINCT uid) FILTER (WHERE event = 'add_to_cart')    AS carted,
  count(DISTINCT uid) FILTER (WHERE event = 'begin_checkout') AS checked_out,
  count(DISTINCT uid) FILTER (WHERE event = 'purchase')       AS purchased
FROM events
WHERE ts >= current_date - INTERVAL '31 days' AND ts < current_date;

-- Cart abandoners of the last week: added to cart, never purchased
SELECT count(*) AS cart_abandoners
FROM (
  SELECT uid FROM events
  WHERE event = 'add_to_cart' AND ts >= current_date - INTERVAL '7 days' AND ts < current_date
  EXCEPT
  SELECT uid FROM events
  WHERE event = 'purchase' AND ts >= current_date - INTERVAL '7 days' AND ts < current_date
) t;

-- Revenue by country over the last 31 days
SELECT p.country, round(sum(e.price), 2) AS revenue, count(*) AS purchases
FROM events e JOIN profiles p ON e.uid = p.uid
WHERE e.event = 'purchase' AND e.ts >= current_date - INTERVAL '31 days'
GROUP BY p.country
ORDER BY revenue DESC
LIMIT 5;
