-- The delivery endpoint of this database (one row).
SELECT c.enabled, c.url, c.headers::pg_catalog.text, c.categories, c.format, c.version
  FROM pgaudit_siem.siem_config c
