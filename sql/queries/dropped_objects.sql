-- The objects a DROP removed (session audit's sql_drop trigger), as pgAudit filters them.
SELECT pg_catalog.upper(object_type),
       object_identity
  FROM pg_catalog.pg_event_trigger_dropped_objects()
 WHERE pg_catalog.lower(object_type) operator(pg_catalog.<>) 'type'
   AND schema_name operator(pg_catalog.<>) 'pg_toast'
