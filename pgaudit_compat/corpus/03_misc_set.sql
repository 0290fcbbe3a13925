-- settings: pgaudit.log = 'misc_set'
-- MISC_SET gates SET/RESET only; SET CONSTRAINTS and SHOW are MISC.
SET work_mem = '16MB';
SET LOCAL work_mem = '1MB';
BEGIN;
SET LOCAL statement_timeout = '10s';
SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;
SET CONSTRAINTS ALL IMMEDIATE;
COMMIT;
SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE;
SET search_path = public, pg_catalog;
SHOW search_path;
RESET search_path;
RESET ALL;
SET ROLE postgres;
RESET ROLE;
SET SESSION AUTHORIZATION postgres;
RESET SESSION AUTHORIZATION;
SELECT set_config('work_mem', '2MB', false);
SET pgaudit.log = 'misc';
SHOW work_mem;
CHECKPOINT;
SET pgaudit.log = 'none';
SELECT 1;
SET pgaudit.log = 'misc_set';
