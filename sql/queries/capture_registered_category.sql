-- The category a table ($1) is tracked with: its own registration, else its nearest
-- tracked partition ancestor's. Runs with the caller's search_path: all qualified.
SELECT t.category
  FROM pgaudit_siem.tracked t
  JOIN (SELECT $1::pg_catalog.oid AS relid, 0 AS depth
        UNION ALL
        SELECT a.relid::pg_catalog.oid, a.depth
          FROM pg_catalog.pg_partition_ancestors($1) WITH ORDINALITY AS a(relid, depth)) c
    ON t.relid OPERATOR(pg_catalog.=) c.relid
 ORDER BY c.depth
 LIMIT 1
