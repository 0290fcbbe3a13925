-- The owner of the outbox (the installing superuser), whom capture inserts run as.
SELECT c.relowner FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
 WHERE n.nspname OPERATOR(pg_catalog.=) 'pgaudit_siem'::pg_catalog.name
   AND c.relname OPERATOR(pg_catalog.=) 'outbox'::pg_catalog.name
