-- Interests and look-alikes (the demo maps the shop's product categories to IAB categories:
-- CREATE CATEGORY MAP products FROM EVENT PROPERTY category, then
-- segdb ingest category_map products.csv --map products).
SET segdb.as_of = 'today';

-- What the visitors lean to: users per IAB category over the last 30 days, and their mean
-- decayed score (an event today counts 1, one a week old ½)
SELECT name, count(*) AS users, round(avg(score), 2) AS mean_score
FROM interests GROUP BY name ORDER BY users DESC, name LIMIT 8;

-- Sports fans: recent sports product views add up to a score of at least 1
CREATE OR REPLACE SEGMENT sports_fans AS INTERESTED IN 'Sports' MIN SCORE 1;

EXPLAIN SEGMENT sports_fans;

-- Who resembles the newsletter subscribers: the top 5 % of everyone else by a model trained
-- on the subscribers (what they signed up with is left out of its features)
CREATE OR REPLACE SEGMENT subscribers AS DID 'newsletter_signup' IN THE LAST 30 DAYS;
CREATE OR REPLACE SEGMENT subscriber_alike AS LOOKALIKE OF subscribers TOP 5 PERCENT EXCLUDING SEED;

SELECT round(auc, 3) AS auc, seed_size, sample_size, features FROM lookalike_report('subscriber_alike');

-- What the model leans on
SELECT feature, round(weight, 3) AS weight FROM lookalike_features('subscriber_alike', 5);
