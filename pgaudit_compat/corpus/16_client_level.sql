-- settings: pgaudit.log = 'read, write'; pgaudit.log_client = on; pgaudit.log_level = 'warning'
-- log_client + log_level = warning: lines also reach the client, and still the server log.
CREATE TABLE cl (id int);
INSERT INTO cl VALUES (1);
SELECT * FROM cl;
SET pgaudit.log_level = 'notice';
SELECT 'notice level, not in the server log by default';
SET pgaudit.log_level = 'log';
SELECT 'log level';
SET pgaudit.log_client = off;
SELECT 'server only';
DROP TABLE cl;
