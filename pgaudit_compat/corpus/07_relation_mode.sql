-- settings: pgaudit.log = 'read, write'; pgaudit.log_relation = on
-- log_relation: one line per relation, in range-table order; views; partitions.
CREATE TABLE test2 (id int PRIMARY KEY, name text);
CREATE TABLE test3 (id int, name text);
CREATE VIEW vw_test3 AS SELECT * FROM test3;
INSERT INTO test2 VALUES (1, 'a'), (2, 'b');
INSERT INTO test3 VALUES (1, 'x');
SELECT * FROM test2;
SELECT * FROM vw_test3, test2;
SELECT t2.name, t3.name FROM test2 t2 JOIN test3 t3 ON t2.id = t3.id;
SELECT * FROM test2 a, test2 b WHERE a.id = b.id;
WITH cte AS (SELECT * FROM test2) INSERT INTO test3 SELECT * FROM cte;
UPDATE test3 SET name = test2.name FROM test2 WHERE test3.id = test2.id;
DELETE FROM test3 WHERE id IN (SELECT id FROM test2);
INSERT INTO test2 VALUES (1, 'c') ON CONFLICT (id) DO UPDATE SET name = excluded.name;
WITH d AS (DELETE FROM test2 WHERE id = 99 RETURNING *) SELECT * FROM d;
MERGE INTO test2 t USING test3 s ON t.id = s.id WHEN MATCHED THEN UPDATE SET name = s.name WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.name);
SELECT * FROM test2 FOR UPDATE;
SELECT count(*) FROM pg_class WHERE relname = 'test2';
SELECT 1;
COPY test2 TO STDOUT;
COPY test3 FROM STDIN;
5	five
\.
CREATE TABLE fkp (id int PRIMARY KEY);
CREATE TABLE fkc (id int, pid int);
INSERT INTO fkp VALUES (1);
INSERT INTO fkc VALUES (1, 1);
ALTER TABLE fkc ADD FOREIGN KEY (pid) REFERENCES fkp (id);
INSERT INTO fkc VALUES (2, 1);
DROP TABLE fkc, fkp;
DROP VIEW vw_test3;
DROP TABLE test2, test3;
