-- A failed delivery attempt, for pgaudit_siem.stats.
UPDATE pgaudit_siem.delivery_state
   SET retried = retried OPERATOR(pg_catalog.+) $1, last_error = $2,
       last_error_at = pg_catalog.clock_timestamp(),
       last_http_status = coalesce($3, last_http_status), current_backoff_ms = $4,
       worker_pid = pg_catalog.pg_backend_pid()
