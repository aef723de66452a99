-- Segments are evaluated as of today's midnight (UTC), where the demo data ends, so that results
-- are the same all day
SET segdb.as_of = 'today';

-- Cart abandoners: added to cart in the last week, no purchase in that week
CREATE OR REPLACE SEGMENT cart_abandoners COMMENT 'carted, did not buy (7 days)' AS
  DID 'add_to_cart' IN THE LAST 7 DAYS AND NOT DID 'purchase' IN THE LAST 7 DAYS;

-- Lapsed buyers: bought a month ago (31 to 16 days back), nothing since
CREATE OR REPLACE SEGMENT lapsed_buyers COMMENT 'bought a month ago, not since' AS
  DID 'purchase' BETWEEN '-31 days' AND '-16 days' AND NOT DID 'purchase' SINCE '-16 days';

-- High-value German mobile users
CREATE OR REPLACE SEGMENT high_value_de_mobile AS
  PROFILE country = 'DE' AND device = 'mobile' AND DID 'purchase' AT LEAST 2 TIMES IN THE LAST 30 DAYS;

-- Newsletter sign-ups who never purchased
CREATE OR REPLACE SEGMENT newsletter_never_bought AS
  DID 'newsletter_signup' AND NOT DID 'purchase';

-- Checkout drop-offs: began checkout, no purchase within an hour after
CREATE OR REPLACE SEGMENT checkout_dropoffs AS
  DID 'begin_checkout' IN THE LAST 14 DAYS
  AND NOT DID 'begin_checkout' THEN 'purchase' WITHIN 1 HOURS IN THE LAST 14 DAYS;

-- Window shoppers: many product views, no cart
CREATE OR REPLACE SEGMENT window_shoppers AS
  DID 'view_item' AT LEAST 5 TIMES IN THE LAST 14 DAYS AND NOT DID 'add_to_cart' IN THE LAST 14 DAYS;

-- Heavy app users
CREATE OR REPLACE SEGMENT app_heavy AS DID 'app_open' AT LEAST 8 TIMES IN THE LAST 30 DAYS;

-- Dormant: known users with no activity for three weeks
CREATE OR REPLACE SEGMENT dormant AS NOT DID ANY EVENT IN THE LAST 21 DAYS;

-- Premium users at risk of churn: little activity lately
CREATE OR REPLACE SEGMENT premium_churn_risk AS
  PROFILE plan = 'premium' AND DID ANY EVENT AT MOST 2 TIMES IN THE LAST 14 DAYS;

-- Big-ticket browsers: viewed items over 100 in the last week
CREATE OR REPLACE SEGMENT big_ticket_viewers AS DID 'view_item' WHERE price > 100 IN THE LAST 7 DAYS;

-- Young searchers
CREATE OR REPLACE SEGMENT young_searchers AS
  PROFILE age_band IN ('18-24', '25-34') AND DID 'search' AT LEAST 2 TIMES IN THE LAST 30 DAYS;

-- Cart abandoners we may contact: TCF purpose 1 (store/access information) consent required
CREATE OR REPLACE SEGMENT contactable_abandoners FOR PURPOSE 'tcf:1' COMMENT 'EU/UK users with TCF consent' AS
  IN SEGMENT cart_abandoners;
