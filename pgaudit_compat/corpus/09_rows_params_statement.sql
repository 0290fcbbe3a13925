-- settings: pgaudit.log = 'read, write, function, misc'; pgaudit.log_rows = on; pgaudit.log_parameter = on
-- log_rows and log_parameter: row counts, PREPARE/EXECUTE parameters, cursors, COPY.
CREATE TABLE r (id int, v text);
INSERT INTO r SELECT g, 'v' || g FROM generate_series(1, 10) g;
SELECT * FROM r WHERE id < 4;
SELECT count(*) FROM r;
UPDATE r SET v = 'u' WHERE id <= 5;
DELETE FROM r WHERE id > 8;
PREPARE q(text, text, int, text) AS SELECT $1, $2, $3, $4;
EXECUTE q('a,b', 'c"d', NULL, 'plain');
PREPARE qi(int) AS INSERT INTO r VALUES ($1, 'p');
EXECUTE qi(100);
BEGIN;
DECLARE c CURSOR FOR SELECT * FROM r;
FETCH 3 FROM c;
CLOSE c;
COMMIT;
COPY r TO STDOUT;
COPY (SELECT id FROM r WHERE id = 1) TO STDOUT;
CREATE FUNCTION rf(a int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE n int;
BEGIN
  SELECT count(*) INTO n FROM r WHERE id > a;
  RETURN n;
END$$;
SELECT rf(2);
CREATE TABLE trg_log (n int);
CREATE FUNCTION trg_after() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN UPDATE trg_log SET n = n + 1; RETURN NULL; END$$;
INSERT INTO trg_log VALUES (0);
CREATE TRIGGER r_after AFTER INSERT ON r FOR EACH STATEMENT EXECUTE FUNCTION trg_after();
INSERT INTO r VALUES (200, 'trig');
DO $$BEGIN EXECUTE 'SELECT $1::int + 1' USING 41; END$$;
DROP TABLE r, trg_log;
DROP FUNCTION trg_after();
DROP FUNCTION rf(int);
