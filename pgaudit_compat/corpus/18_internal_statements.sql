-- settings: pgaudit.log = 'all'; pgaudit.log_catalog = off
-- pgaudit_siem's own statements (its DDL event triggers, guards, caught errors inside
-- the extension's machinery) never appear and take no statement id: every line and id
-- here must equal pgAudit's, which has none of that machinery.
CREATE TABLE it_parent (id int, region text) PARTITION BY LIST (region);
CREATE TABLE it_eu PARTITION OF it_parent FOR VALUES IN ('eu');
ALTER TABLE it_parent ADD COLUMN note text;
ALTER TABLE it_eu RENAME COLUMN note TO remark;
CREATE SCHEMA it_s;
CREATE TABLE it_s.t (x int);
DROP SCHEMA it_s CASCADE;
DO $$
BEGIN
  BEGIN
    PERFORM 1 / 0;
  EXCEPTION WHEN division_by_zero THEN NULL;
  END;
  INSERT INTO it_parent VALUES (1, 'eu', 'n');
END$$;
CREATE FUNCTION it_raise() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    CREATE TABLE it_inner (i int);
    RAISE EXCEPTION 'undo';
  EXCEPTION WHEN raise_exception THEN NULL;
  END;
  DELETE FROM it_parent WHERE id = 1;
END$$;
SELECT it_raise();
DROP TABLE IF EXISTS it_missing;
DROP EXTENSION IF EXISTS it_no_such_extension;
DROP TABLE it_parent;
SELECT 'last';
