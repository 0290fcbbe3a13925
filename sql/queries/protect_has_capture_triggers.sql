-- Whether a table ($1) has capture triggers.
SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid OPERATOR(pg_catalog.=) $1
                  AND pg_catalog.starts_with(tgname::pg_catalog.text, 'pgaudit_siem_capture_'))
