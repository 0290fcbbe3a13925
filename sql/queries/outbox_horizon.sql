-- Ids of the transactions that can still hold this database's delivery back besides the
-- registered writers (see delivery::outbox::horizon): its prepared transactions (their
-- registrations do not survive a restart), and, when $1 (the conservative rule, for
-- backends without a writer slot), every running transaction of the database but the
-- worker's own (it may take an id to move the horizon on, see events::order).
SELECT ARRAY(SELECT p.transaction::pg_catalog.text FROM pg_catalog.pg_prepared_xacts p
              WHERE p.database OPERATOR(pg_catalog.=) pg_catalog.current_database()),
       ARRAY(SELECT a.backend_xid::pg_catalog.text FROM pg_catalog.pg_stat_get_activity(NULL) a
              WHERE $1 AND a.datid OPERATOR(pg_catalog.=) $2 AND a.backend_xid IS NOT NULL
                AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid())
