-- Events after the cursor ($1, $2) and below the horizon ($3), in commit-safe order.
-- The payload is NULL for categories not forwarded ($4: the filter, NULL for all;
-- pgaudit_siem and siem_settings always go). {row_limit} is replaced by a literal: with
-- a parameter the planner sorts the whole backlog instead of scanning the index.
SELECT o.xid::pg_catalog.text, o.seq, o.id::pg_catalog.text, o.category,
       pg_catalog.date_part('epoch', o.created_at),
       CASE WHEN $4::pg_catalog.text[] IS NULL
              OR o.category OPERATOR(pg_catalog.=) ANY ($4::pg_catalog.text[])
              OR o.category OPERATOR(pg_catalog.=) ANY ('{pgaudit_siem,siem_settings}'::pg_catalog.text[])
            THEN o.payload::pg_catalog.text END
  FROM pgaudit_siem.outbox o
 WHERE (o.xid, o.seq) OPERATOR(pg_catalog.>) ($1::pg_catalog.xid8, $2::pg_catalog.int8)
   AND o.xid OPERATOR(pg_catalog.<) $3::pg_catalog.xid8
 ORDER BY o.xid, o.seq
 LIMIT {row_limit}
