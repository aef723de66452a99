-- How many users, events and consent records the database holds
SELECT (SELECT count(*) FROM profiles) AS users,
       (SELECT count(*) FROM events)   AS events,
       (SELECT count(*) FROM consent)  AS consent_records;

-- Events by name, most frequent first
SELECT event, count(*) AS events, count(DISTINCT uid) AS users
FROM events
GROUP BY event
ORDER BY events DESC;

-- Users by country and device
SELECT country, device, count(*) AS users
FROM profiles
GROUP BY country, device
ORDER BY users DESC
LIMIT 10;
