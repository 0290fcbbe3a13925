-- Whether any event (visible or not yet below the horizon) follows the cursor.
SELECT EXISTS (SELECT FROM pgaudit_siem.outbox o
                WHERE (o.xid, o.seq) OPERATOR(pg_catalog.>) ($1::pg_catalog.xid8, $2::pg_catalog.int8))
