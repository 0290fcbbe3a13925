-- The category a table ($1) is tracked with and the attribute numbers of its excluded
-- columns: its own registration, else its nearest tracked partition ancestor's. The
-- registration's attribute numbers are authoritative (they follow any rename); they are
-- matched into $1 by the columns' current names (a partition's attribute numbers are its
-- own). Runs with the caller's search_path: all qualified.
SELECT t.category,
       ARRAY(SELECT a.attnum
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid
                AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
                AND a.attname::pg_catalog.text OPERATOR(pg_catalog.=)
                    ANY (pgaudit_siem._column_names(t.relid::pg_catalog.oid, t.exclude_attnums))
              ORDER BY a.attnum)
  FROM pgaudit_siem.tracked t
  JOIN (SELECT $1::pg_catalog.oid AS relid, 0 AS depth
        UNION ALL
        SELECT a.relid::pg_catalog.oid, a.depth
          FROM pg_catalog.pg_partition_ancestors($1) WITH ORDINALITY AS a(relid, depth)) c
    ON t.relid::pg_catalog.oid OPERATOR(pg_catalog.=) c.relid
 ORDER BY c.depth
 LIMIT 1
