-- settings: pgaudit.log = 'read, write, function'
-- The relation pass is skipped unless the session user is a member of the current
-- user: security-definer bodies of other owners stay hidden, relation-less lines do not.
CREATE ROLE c14_owner;
CREATE ROLE c14_alice LOGIN;
CREATE TABLE sd_t (id int);
ALTER TABLE sd_t OWNER TO c14_owner;
CREATE FUNCTION sd_f() RETURNS int LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE n int;
BEGIN
  INSERT INTO sd_t VALUES (1);
  SELECT count(*) INTO n FROM sd_t;
  PERFORM 42;
  RETURN n;
END$$;
ALTER FUNCTION sd_f() OWNER TO c14_owner;
GRANT EXECUTE ON FUNCTION sd_f() TO c14_alice;
CREATE TABLE alice_t (id int);
GRANT ALL ON alice_t TO c14_alice;
\connect - c14_alice
SELECT sd_f();
INSERT INTO alice_t VALUES (1);
SELECT * FROM alice_t;
\connect - postgres
GRANT c14_owner TO c14_alice;
\connect - c14_alice
SELECT sd_f();
\connect - postgres
SELECT sd_f();
DROP FUNCTION sd_f();
DROP TABLE sd_t, alice_t;
DROP ROLE c14_alice;
DROP ROLE c14_owner;
