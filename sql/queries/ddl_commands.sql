-- The objects a DDL command touched (session audit's ddl_command_end trigger).
SELECT pg_catalog.upper(object_type),
       object_identity,
       pg_catalog.upper(command_tag)
  FROM pg_catalog.pg_event_trigger_ddl_commands()
