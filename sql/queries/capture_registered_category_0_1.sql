-- capture_registered_category.sql for a database whose extension objects are still 0.1.0
-- (the library was upgraded, ALTER EXTENSION UPDATE has not run yet): 0.1.0's registry
-- has the excluded columns by name only. Runs with the caller's search_path: all qualified.
SELECT t.category,
       ARRAY(SELECT a.attnum
               FROM pg_catalog.pg_attribute a
              WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid
                AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
                AND a.attname::pg_catalog.text OPERATOR(pg_catalog.=) ANY (t.exclude_columns)
              ORDER BY a.attnum)
  FROM pgaudit_siem.tracked t
  JOIN (SELECT $1::pg_catalog.oid AS relid, 0 AS depth
        UNION ALL
        SELECT a.relid::pg_catalog.oid, a.depth
          FROM pg_catalog.pg_partition_ancestors($1) WITH ORDINALITY AS a(relid, depth)) c
    ON t.relid::pg_catalog.oid OPERATOR(pg_catalog.=) c.relid
 ORDER BY c.depth
 LIMIT 1
