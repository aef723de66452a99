SET segdb.as_of = 'today';

-- Every segment with its size
SHOW SEGMENTS;

-- How a segment is evaluated: one line per leaf with its access path
EXPLAIN SEGMENT high_value_de_mobile;

-- Overlaps between segments
SELECT a, b, size_a, size_b, both, round(jaccard, 3) AS jaccard
FROM segment_overlap('cart_abandoners', 'window_shoppers', 'big_ticket_viewers');

-- Segments in plain SQL: where are the cart abandoners?
SELECT country, count(*) AS users
FROM profiles
WHERE in_segment('cart_abandoners', user_id)
GROUP BY country ORDER BY users DESC LIMIT 5;

-- Consent cuts the audience: all abandoners vs the contactable ones
SELECT segment_size('cart_abandoners') AS abandoners, segment_size('contactable_abandoners') AS contactable;

-- Bitmap algebra on segment bitmaps
SELECT rb_cardinality(rb_andnot(segment_bitmap('app_heavy'), segment_bitmap('dormant'))) AS active_app_users;
