-- settings: pgaudit.log = 'read'; pgaudit.log_catalog = off
-- log_catalog off: statements whose relations are all in pg_catalog are not logged.
CREATE TABLE ot (id int);
SELECT count(*) FROM pg_class WHERE false;
SELECT count(*) FROM information_schema.schemata WHERE false;
SELECT count(*) FROM pg_class, ot WHERE false;
SELECT 1;
SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE false;
DROP TABLE ot;
