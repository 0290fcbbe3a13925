-- settings: pgaudit.log = 'all'; pgaudit.log_statement = off; pgaudit.log_parameter = on
-- log_statement off: both statement and parameter fields say <not logged>.
CREATE TABLE sf (id int);
INSERT INTO sf VALUES (1);
SELECT * FROM sf;
PREPARE sq(int) AS SELECT * FROM sf WHERE id = $1;
EXECUTE sq(1);
SET work_mem = '4MB';
DROP TABLE sf;
