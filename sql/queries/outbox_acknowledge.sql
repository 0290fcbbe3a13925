-- Moves the cursor past a handled batch (with the hash chain after it) and counts it.
UPDATE pgaudit_siem.delivery_state
   SET last_xid = $1::pg_catalog.xid8, last_seq = $2, delivered = delivered OPERATOR(pg_catalog.+) $3,
       dead_lettered = dead_lettered OPERATOR(pg_catalog.+) $4,
       batches = batches OPERATOR(pg_catalog.+) CASE WHEN $3 OPERATOR(pg_catalog.+) $4 OPERATOR(pg_catalog.>) 0 THEN 1 ELSE 0 END,
       last_success = CASE WHEN $3 OPERATOR(pg_catalog.>) 0 THEN pg_catalog.clock_timestamp() ELSE last_success END,
       last_http_status = coalesce($5, last_http_status), current_backoff_ms = 0,
       events_per_second = $6, worker_pid = pg_catalog.pg_backend_pid(), chain_hash = $7
