-- settings: pgaudit.log = 'read, write'
-- READ and WRITE classes: SELECT forms, DML forms, CTEs, locking reads, MERGE, TRUNCATE.
CREATE TABLE account (id int PRIMARY KEY, name text, password text, description text);
INSERT INTO account (id, name, password, description) VALUES (1, 'user1', 'HASH1', 'blah, blah');
INSERT INTO account VALUES (2, 'user2', 'HASH2', 'yada "quoted" yada');
SELECT * FROM account;
SELECT id, name FROM account WHERE id = 1;
VALUES (1, 'one'), (2, 'two');
TABLE account;
WITH a AS (SELECT id FROM account) SELECT count(*) FROM a;
SELECT * FROM account WHERE password = 'HASH2' FOR UPDATE;
SELECT * FROM account FOR KEY SHARE;
UPDATE account SET description = 'updated' WHERE id = 1;
UPDATE account SET description = description || '!' FROM (SELECT 1 AS x) s WHERE account.id = s.x;
DELETE FROM account WHERE id = 99;
INSERT INTO account VALUES (1, 'dup', 'x', 'y') ON CONFLICT (id) DO NOTHING;
INSERT INTO account VALUES (1, 'dup', 'x', 'y') ON CONFLICT (id) DO UPDATE SET name = excluded.name;
WITH d AS (DELETE FROM account WHERE id = 42 RETURNING *) SELECT * FROM d;
WITH i AS (INSERT INTO account VALUES (3, 'c', 'p', 'd') RETURNING id) SELECT id FROM i;
MERGE INTO account a USING (SELECT 4 AS id) s ON a.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'm', 'p', 'd');
MERGE INTO account a USING (SELECT 4 AS id) s ON a.id = s.id WHEN MATCHED THEN UPDATE SET name = 'mm';
SELECT 1;
SELECT 1 \; SELECT 2;
SELECT 'a"b' AS x, 'c,d' AS y;
SELECT 'multi
line' AS text;
TRUNCATE account;
INSERT INTO account VALUES (1, 'dup', 'x', 'y');
INSERT INTO account VALUES (1, 'dup', 'x', 'y');
SELECT 1/0;
SELECT * FROM no_such_table;
DROP TABLE account;
