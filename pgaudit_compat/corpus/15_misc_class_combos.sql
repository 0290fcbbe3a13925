-- settings: pgaudit.log = 'all, -misc, misc_set'
-- Class arithmetic: everything except non-SET MISC.
CREATE TABLE cc (id int);
BEGIN;
SET LOCAL work_mem = '1MB';
INSERT INTO cc VALUES (1);
SHOW work_mem;
COMMIT;
CHECKPOINT;
SELECT * FROM cc;
SET pgaudit.log = 'misc, -misc_set';
SET work_mem = '2MB';
SHOW work_mem;
VACUUM cc;
SET pgaudit.log = '-all, read';
SELECT 1;
INSERT INTO cc VALUES (2);
SET pgaudit.log = 'read, -all';
SELECT 2;
SET pgaudit.log = 'ddl, role';
CREATE TABLE cc2 (id int);
CREATE ROLE c15_r;
DROP ROLE c15_r;
DROP TABLE cc, cc2;
