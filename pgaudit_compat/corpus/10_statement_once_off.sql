-- settings: pgaudit.log = 'read, write, ddl'; pgaudit.log_relation = on; pgaudit.log_statement_once = on
-- log_statement_once: text only on the first line of each substatement.
CREATE TABLE so1 (id int, name text);
CREATE TABLE so2 (id int);
INSERT INTO so1 VALUES (1, 'a');
SELECT * FROM so1, so2;
SELECT * FROM so1 a JOIN so1 b USING (id);
CREATE TABLE so3 (id serial PRIMARY KEY, t text);
DROP TABLE so1, so2, so3;
