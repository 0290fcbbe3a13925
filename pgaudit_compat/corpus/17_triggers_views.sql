-- settings: pgaudit.log = 'read, write, ddl, function'
-- Trigger bodies, views, materialized views, sequences, nested statements.
CREATE TABLE tv (id serial PRIMARY KEY, v text);
CREATE TABLE tv_audit (op text, id int);
CREATE FUNCTION tv_trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO tv_audit VALUES (TG_OP, NEW.id);
  RETURN NEW;
END$$;
CREATE TRIGGER tv_row AFTER INSERT OR UPDATE ON tv FOR EACH ROW EXECUTE FUNCTION tv_trg();
INSERT INTO tv (v) VALUES ('a'), ('b');
UPDATE tv SET v = 'c' WHERE id = 1;
CREATE VIEW tv_view AS SELECT id, v FROM tv WHERE id > 0;
SELECT * FROM tv_view;
INSERT INTO tv_view (v) VALUES ('via view');
CREATE MATERIALIZED VIEW tv_mv AS SELECT count(*) AS n FROM tv;
REFRESH MATERIALIZED VIEW tv_mv;
SELECT * FROM tv_mv;
SELECT nextval('tv_id_seq');
SELECT currval('tv_id_seq');
CREATE TABLE tv_copy AS SELECT * FROM tv WHERE false;
SELECT * INTO tv_into FROM tv_audit;
DROP MATERIALIZED VIEW tv_mv;
DROP VIEW tv_view;
DROP TABLE tv_copy, tv_into;
DROP TRIGGER tv_row ON tv;
DROP FUNCTION tv_trg();
DROP TABLE tv, tv_audit;
