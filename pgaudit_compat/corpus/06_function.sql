-- settings: pgaudit.log = 'read, write, function, ddl'
-- FUNCTION class: DO blocks, calls in queries, aggregates, procedures, nested SPI.
CREATE TABLE ft (x int);
INSERT INTO ft VALUES (1), (2), (3);
CREATE FUNCTION fadd(a int, b int) RETURNS int LANGUAGE plpgsql AS $$BEGIN RETURN a + b; END$$;
CREATE FUNCTION fsql(a int) RETURNS int LANGUAGE sql AS $$ SELECT a * 2 $$;
CREATE FUNCTION fsql_stable(a int) RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT count(*) + a FROM ft $$;
CREATE AGGREGATE agg_add(int) (SFUNC = fadd, STYPE = int, INITCOND = '0');
SELECT fadd(x, 1) FROM ft;
SELECT fadd(1, 2), fadd(3, 4);
SELECT agg_add(x) FROM ft;
SELECT fsql(x) FROM ft;
SELECT fsql_stable(x) FROM ft;
SELECT * FROM generate_series(1, 2);
SELECT upper('abc');
DO $$
BEGIN
  PERFORM 1;
  INSERT INTO ft VALUES (10);
  CREATE TABLE do_table ("weird name" int);
  EXECUTE 'SELECT count(*) FROM ft WHERE x > $1' USING 1;
  DROP TABLE do_table;
END$$;
CREATE PROCEDURE p1(a int) LANGUAGE plpgsql AS $$BEGIN INSERT INTO ft VALUES (a); END$$;
CALL p1(30);
CREATE PROCEDURE inner_p() LANGUAGE plpgsql AS $$BEGIN INSERT INTO ft VALUES (41); CREATE TABLE ip_t (i int); END$$;
CREATE PROCEDURE outer_p() LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO ft VALUES (40);
  COMMIT;
  CALL inner_p();
  DROP TABLE ip_t;
END$$;
CALL outer_p();
CREATE FUNCTION loop_fn() RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  n int := 0;
  r record;
BEGIN
  FOR r IN SELECT x FROM ft ORDER BY x LIMIT 2 LOOP
    n := n + r.x;
  END LOOP;
  SELECT count(*) INTO n FROM ft;
  RETURN n;
END$$;
SELECT loop_fn();
CREATE FUNCTION err_fn() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    INSERT INTO ft VALUES (1 / 0);
  EXCEPTION WHEN division_by_zero THEN
    INSERT INTO ft VALUES (-1);
  END;
  RETURN 1;
END$$;
SELECT err_fn();
DO $$BEGIN RAISE NOTICE 'x'; END$$;
DO $$BEGIN PERFORM 1/0; END$$;
DROP FUNCTION err_fn();
DROP FUNCTION loop_fn();
DROP PROCEDURE outer_p();
DROP PROCEDURE inner_p();
DROP PROCEDURE p1(int);
DROP AGGREGATE agg_add(int);
DROP FUNCTION fsql_stable(int);
DROP FUNCTION fsql(int);
DROP FUNCTION fadd(int, int);
DROP TABLE ft;
