-- Where delivery stands: the last (xid, seq) handled.
SELECT s.last_xid::pg_catalog.text, s.last_seq FROM pgaudit_siem.delivery_state s
