-- Campaign measurement with a holdout (the demo data covers the 30 days before today).
-- The audience: browsed at least three products in the two weeks before the snapshot without
-- buying.
-- 10 % of it is held out (never activated), decided per member by a keyed hash, for good.
CREATE OR REPLACE MATERIALIZED SEGMENT campaign_browsers
  COMMENT 'browsed, did not buy: the campaign audience'
  HOLDOUT 10 PERCENT AS
  DID 'view_item' AT LEAST 3 TIMES IN THE LAST 14 DAYS
  AND NOT DID 'purchase' IN THE LAST 14 DAYS;

-- The snapshot the campaign was sent to: as of 17 days ago (so that 14 days of conversions
-- follow it in the data)
REFRESH SEGMENT campaign_browsers AS OF '-17 days';

-- Its history: the target size and the holdout size per version
SELECT version, as_of, size, holdout FROM segment_history('campaign_browsers');

-- What would be activated is the target group only (EXPORT, segments.*, segment_members)
SELECT segment_size('campaign_browsers') AS target,
       (SELECT count(*) FROM segment_holdout('campaign_browsers')) AS holdout;

-- Conversion in the 14 days after the snapshot, target vs holdout: lift, the 95 % interval of
-- the difference in rates, the p-value, and a sample-ratio check of the split
SELECT grp, users, converters, round(rate, 4) AS rate, round(lift, 3) AS lift,
       round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high,
       round(p_value, 4) AS p_value, round(srm_p, 3) AS srm_p
FROM segment_lift('campaign_browsers', 'purchase', 14);
