-- Look a user up by raw id: only the keyed pseudonym is stored; pseudonymize() recomputes it
SELECT p.user_id, p.country, p.plan, count(e.event) AS events
FROM profiles p LEFT JOIN events e ON e.uid = p.uid
WHERE p.user_id = pseudonymize('greta.nguyen.0@example.com')
GROUP BY p.user_id, p.country, p.plan;
