-- Events the SIEM refused, copied from the outbox with what it answered.
-- (Multi-argument unnest is only valid unqualified, hence ROWS FROM.)
INSERT INTO pgaudit_siem.dead_letter (id, seq, xid, created_at, category, action, relid, schema_name, table_name,
                                      row_count, part, part_count, payload, http_status, response_excerpt, attempts)
SELECT o.id, o.seq, o.xid, o.created_at, o.category, o.action, o.relid, o.schema_name, o.table_name,
       o.row_count, o.part, o.part_count, o.payload, d.status, d.excerpt, d.attempts
  FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.text[]),
                  pg_catalog.unnest($3::pg_catalog.int4[]), pg_catalog.unnest($4::pg_catalog.text[]),
                  pg_catalog.unnest($5::pg_catalog.int4[])) AS d(seq, xid, status, excerpt, attempts)
  JOIN pgaudit_siem.outbox o ON o.xid OPERATOR(pg_catalog.=) d.xid::pg_catalog.xid8
                            AND o.seq OPERATOR(pg_catalog.=) d.seq
ON CONFLICT (seq) DO NOTHING
