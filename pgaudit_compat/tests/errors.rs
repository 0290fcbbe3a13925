//! Errors reach the client exactly as with pgAudit: every field of the server's error
//! (SQLSTATE, message, detail, hint, position, context, schema/table/column/datatype/
//! constraint names), for errors raised inside the statements our hooks wrap.

use pgaudit_compat::{fresh_database, Twins};
use pgaudit_siem_tests::postgres::Client;

fn error_fields(c: &mut Client, sql: &str) -> Vec<Option<String>> {
    let err = c.batch_execute(sql).expect_err(sql);
    let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
    vec![
        Some(db.code().code().to_owned()),
        Some(db.severity().to_owned()),
        Some(db.message().to_owned()),
        db.detail().map(str::to_owned),
        db.hint().map(str::to_owned),
        db.position().map(|p| format!("{p:?}")),
        db.where_().map(str::to_owned),
        db.schema().map(str::to_owned),
        db.table().map(str::to_owned),
        db.column().map(str::to_owned),
        db.datatype().map(str::to_owned),
        db.constraint().map(str::to_owned),
        db.routine().map(str::to_owned),
    ]
}

#[test]
fn error_fields_are_untouched() {
    let twins = Twins::for_corpus();
    let statements = [
        "INSERT INTO t VALUES (1, 'dup')",
        "INSERT INTO t VALUES (NULL, 'x')",
        "INSERT INTO t VALUES (2, 'way too long for this column')",
        "UPDATE t SET id = id + 0, v = v WHERE id = 1 AND 1/0 = 1",
        "SELECT * FROM t WHERE nosuchcolumn = 1",
        "SELECT 1 +",
        "DO $$BEGIN RAISE EXCEPTION 'custom' USING DETAIL = 'd', HINT = 'h', ERRCODE = 'P0099'; END$$",
        "SELECT f_raises()",
        "CALL p_raises()",
        "CREATE TABLE t (id int)",
        "ALTER TABLE t ADD CONSTRAINT c CHECK (id < 0)",
        "COPY t FROM '/nonexistent/file'",
        "DROP TABLE nosuch",
        "SET work_mem = 'lots'",
        "DECLARE c CURSOR FOR SELECT 1",
        "INSERT INTO child VALUES (99)",
    ];
    let mut differences = Vec::new();
    for (cluster, name) in [(&twins.pgaudit, "pgaudit"), (&twins.siem, "siem")] {
        fresh_database(
            cluster,
            "errs",
            &[
                "pgaudit.log = 'all'".to_owned(),
                "pgaudit.log_relation = on".to_owned(),
            ],
        );
        let _ = name;
    }
    let setup = "CREATE TABLE t (id int PRIMARY KEY, v varchar(10) NOT NULL);
                 INSERT INTO t VALUES (1, 'one');
                 CREATE TABLE child (pid int REFERENCES t);
                 CREATE FUNCTION f_raises() RETURNS int LANGUAGE plpgsql AS $$BEGIN INSERT INTO t VALUES (1, 'x'); RETURN 1; END$$;
                 CREATE PROCEDURE p_raises() LANGUAGE plpgsql AS $$BEGIN PERFORM 1/0; END$$;";
    let mut oracle = twins.pgaudit.connect_as("errs", "postgres");
    let mut siem = twins.siem.connect_as("errs", "postgres");
    oracle.batch_execute(setup).unwrap();
    siem.batch_execute(setup).unwrap();
    for sql in statements {
        let (a, b) = (error_fields(&mut oracle, sql), error_fields(&mut siem, sql));
        if a != b {
            differences.push(format!(
                "{sql}\n  pgAudit:      {a:?}\n  pgaudit_siem: {b:?}"
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
