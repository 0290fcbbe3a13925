-- settings: pgaudit.log = 'read, write, misc'; pgaudit.log_relation = on
-- deviation: D4
-- Partitions the planner adds need no permission and are not listed (pgAudit 1.7.1+);
-- pgAudit 1.7.0 prints them as MISC,??? lines (deviation D4).
CREATE TABLE meas (id int, region text) PARTITION BY LIST (region);
CREATE TABLE meas_eu PARTITION OF meas FOR VALUES IN ('eu');
CREATE TABLE meas_us PARTITION OF meas FOR VALUES IN ('us');
INSERT INTO meas VALUES (1, 'eu'), (2, 'us');
SELECT * FROM meas;
SELECT * FROM meas WHERE region = 'eu';
SELECT * FROM meas_eu;
UPDATE meas SET id = 3 WHERE region = 'us';
DELETE FROM meas WHERE id = 1;
CREATE TABLE inh_parent (id int);
CREATE TABLE inh_child () INHERITS (inh_parent);
INSERT INTO inh_child VALUES (1);
SELECT * FROM inh_parent;
DROP TABLE inh_child, inh_parent;
DROP TABLE meas;
