-- The snapshot's xmax, the xids of this database's running transactions ($1: its oid),
-- and those of its prepared transactions (see delivery::outbox::horizon).
SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::pg_catalog.text,
       ARRAY(SELECT a.backend_xid::pg_catalog.text FROM pg_catalog.pg_stat_get_activity(NULL) a
              WHERE a.datid OPERATOR(pg_catalog.=) $1 AND a.backend_xid IS NOT NULL),
       ARRAY(SELECT p.transaction::pg_catalog.text FROM pg_catalog.pg_prepared_xacts p
              WHERE p.database OPERATOR(pg_catalog.=) pg_catalog.current_database())
