-- Events after the delivery cursor (run only once the outbox is known to exist).
SELECT pg_catalog.count(*) FROM pgaudit_siem.outbox o, pgaudit_siem.delivery_state s
 WHERE (o.xid, o.seq) OPERATOR(pg_catalog.>) (s.last_xid, s.last_seq)
