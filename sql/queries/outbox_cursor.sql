-- Where delivery stands: the last (xid, seq) handled, and the hash chain after it.
SELECT s.last_xid::pg_catalog.text, s.last_seq, s.chain_hash FROM pgaudit_siem.delivery_state s
