//! Table change capture on a real cluster: the exact JSON of events (including the
//! user's document example), actor/org settings and fallbacks, transactions, partitions,
//! splitting, exclusions, privileges and trigger protection.

use pgaudit_siem_tests::postgres::error::SqlState;
use pgaudit_siem_tests::postgres::Client;
use pgaudit_siem_tests::Cluster;
use serde_json::{json, Value};

fn cluster() -> Cluster {
    let cluster = Cluster::builder()
        .name("capture")
        .preload("pgaudit_siem")
        .start();
    cluster
        .connect()
        .batch_execute("CREATE EXTENSION pgaudit_siem")
        .unwrap();
    cluster
}

/// Every change event payload so far, oldest first (raw json column, document key
/// order); the administrative `pgaudit_siem` events (track, untrack, alter_table) are
/// left out.
fn events(c: &mut Client) -> Vec<Value> {
    c.query(
        "SELECT payload::text FROM pgaudit_siem.outbox WHERE category <> 'pgaudit_siem' ORDER BY seq",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
    .collect()
}

fn without_volatile(mut event: Value) -> Value {
    let obj = event.as_object_mut().unwrap();
    let id = obj.remove("id").unwrap();
    let ts = obj.remove("timestamp").unwrap();
    assert!(id.as_str().unwrap().as_bytes()[14] == b'7', "UUIDv7: {id}");
    let ts = ts.as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == 27 && &ts[10..11] == "T",
        "RFC 3339 UTC with microseconds: {ts}"
    );
    let source = obj.get_mut("source").unwrap().as_object_mut().unwrap();
    assert!(source.remove("transaction_id").unwrap().as_u64().unwrap() > 0);
    event
}

#[test]
fn the_documents_example_event() {
    let cluster = cluster();
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE orgs (id int PRIMARY KEY, name text, siem_integration_enabled boolean, siem_integration_url text);
         INSERT INTO orgs VALUES (123, 'test', false, NULL);
         SELECT pgaudit_siem.track('orgs');
         BEGIN;
         SET LOCAL pgaudit_siem.actor_id = '1234';
         SET LOCAL pgaudit_siem.actor_email = 'bogdan@example.com';
         SET LOCAL pgaudit_siem.actor_first_name = 'Bogdan';
         SET LOCAL pgaudit_siem.actor_last_name = 'Tsechoev';
         SET LOCAL pgaudit_siem.org_id = '123';
         SET LOCAL pgaudit_siem.org_name = 'test';
         SET LOCAL pgaudit_siem.org_alias = 'test';
         UPDATE orgs SET siem_integration_enabled = true, siem_integration_url = 'https://new-siem.example.com/path' WHERE id = 123;
         COMMIT;",
    )
    .unwrap();
    let all = events(&mut c);
    assert_eq!(all.len(), 1);
    assert_eq!(
        without_volatile(all[0].clone()),
        json!({
            "event": {"category": "orgs", "action": "update"},
            "org": {"id": 123, "name": "test", "alias": "test"},
            "actor": {"id": 1234, "email": "bogdan@example.com", "first_name": "Bogdan", "last_name": "Tsechoev"},
            "changes": {
                "processed_row_count": 1, "part": 1, "part_count": 1,
                "data_before": [{"id": 123, "name": "test", "siem_integration_enabled": false, "siem_integration_url": null}],
                "data_after": [{"id": 123, "name": "test", "siem_integration_enabled": true, "siem_integration_url": "https://new-siem.example.com/path"}]
            },
            "source": {"database": "postgres", "schema": "public", "table": "orgs", "session_user": "postgres",
                       "current_user": "postgres", "application_name": "pgaudit_siem_tests", "client_addr": "127.0.0.1"}
        })
    );
    // Field order is the document's.
    let text: String = c
        .query_one(
            "SELECT payload::text FROM pgaudit_siem.outbox WHERE category <> 'pgaudit_siem'",
            &[],
        )
        .unwrap()
        .get(0);
    let order: Vec<usize> = [
        "\"id\"",
        "\"timestamp\"",
        "\"event\"",
        "\"org\"",
        "\"actor\"",
        "\"changes\"",
        "\"source\"",
    ]
    .iter()
    .map(|k| text.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn json_mapping_and_every_action() {
    let cluster = cluster();
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TYPE pair AS (a int, b text);
         CREATE TABLE typed (k bigint PRIMARY KEY, i int, n numeric, f float8, b bool, t text, j json, jb jsonb, arr int[],
                             ts timestamptz, d date, u uuid, p pair, secret text, big numeric);
         SELECT pgaudit_siem.track('typed', 'typed_things', ARRAY['secret']);
         SET TIME ZONE 'UTC';
         INSERT INTO typed VALUES (1, -2, 3.50, 1.5e10, true, 'q\"uote\\n', '{\"x\": [1, 2]}', '{\"y\": null}', '{1,NULL,3}',
                                   '2024-12-25 14:57:10.123456+00', '2024-02-29', '0193fe52-5bed-75a4-8aec-829c1bdd9b7f', ROW(1, 'x'), 'hunter2', 'NaN');
         INSERT INTO typed (k) VALUES (2);
         DELETE FROM typed WHERE k = 2;
         TRUNCATE typed;",
    )
    .unwrap();
    let all = events(&mut c);
    let actions: Vec<&str> = all
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["insert", "insert", "delete", "truncate"]);
    assert!(all.iter().all(|e| e["event"]["category"] == "typed_things"));
    assert_eq!(
        all[0]["changes"]["data_after"][0],
        json!({"k": 1, "i": -2, "n": 3.50, "f": 15000000000_u64, "b": true, "t": "q\"uote\\n", "j": {"x": [1, 2]}, "jb": {"y": null},
               "arr": [1, null, 3], "ts": "2024-12-25T14:57:10.123456+00:00", "d": "2024-02-29",
               "u": "0193fe52-5bed-75a4-8aec-829c1bdd9b7f", "p": {"a": 1, "b": "x"}, "big": "NaN"})
    );
    assert_eq!(all[0]["changes"]["data_before"], json!([]));
    assert_eq!(all[2]["changes"]["data_before"][0]["k"], 2);
    assert_eq!(all[2]["changes"]["data_before"][0]["i"], Value::Null);
    assert_eq!(all[2]["changes"]["data_after"], json!([]));
    assert_eq!(
        all[3]["changes"]["processed_row_count"],
        Value::Null,
        "TRUNCATE does not know its row count"
    );
    let text: String = c
        .query_one(
            "SELECT payload::text FROM pgaudit_siem.outbox WHERE category <> 'pgaudit_siem' ORDER BY seq LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        !text.contains("hunter2") && !text.contains("\"secret\""),
        "excluded column leaked: {text}"
    );
    // The stored text is exactly what PostgreSQL's own JSON functions produce for the row.
    let expected: String = c
        .query_one("SELECT json_build_array(to_json(3.50::numeric), to_json(1.5e10::float8), to_json('2024-12-25 14:57:10.123456+00'::timestamptz))::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        expected,
        "[3.50, 15000000000, \"2024-12-25T14:57:10.123456+00:00\"]"
    );
    assert!(
        text.contains("\"n\":3.50") && text.contains("\"f\":15000000000,"),
        "{text}"
    );
    // UUIDv7 ids increase in capture order.
    let ids: Vec<String> = c
        .query("SELECT id::text FROM pgaudit_siem.outbox ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[test]
fn capture_itself_is_never_audit_logged() {
    let cluster = Cluster::builder()
        .name("capture-audit")
        .preload("pgaudit_siem")
        .start_logged();
    let mut su = cluster.connect();
    su.batch_execute("CREATE EXTENSION pgaudit_siem").unwrap();
    su.batch_execute("CREATE TABLE t (id int, v text); SELECT pgaudit_siem.track('t'); CREATE TABLE t2 (id int) PARTITION BY RANGE (id)").unwrap();
    su.batch_execute("ALTER SYSTEM SET pgaudit.featureEnabled = on")
        .unwrap();
    su.batch_execute("ALTER SYSTEM SET pgaudit.log = 'all'")
        .unwrap();
    cluster.reload_config();
    let lines = cluster.session_audit("postgres", "postgres", |c| {
        c.batch_execute("INSERT INTO t VALUES (1, 'a')").unwrap();
        c.batch_execute("CREATE TABLE t3 (id int)").unwrap();
        c.batch_execute("DROP TABLE t3").unwrap();
    });
    assert_eq!(
        lines,
        vec![
            "SESSION,1,1,WRITE,INSERT,,,\"INSERT INTO t VALUES (1, 'a')\",<not logged>",
            "SESSION,2,1,DDL,CREATE TABLE,TABLE,public.t3,CREATE TABLE t3 (id int),<not logged>",
            "SESSION,3,1,DDL,DROP TABLE,TABLE,public.t3,DROP TABLE t3,<not logged>",
        ]
    );
}

#[test]
fn actor_and_org_fall_back_to_role_and_database() {
    let cluster = cluster();
    let mut c = cluster.connect();
    c.batch_execute("CREATE TABLE a (id int); SELECT pgaudit_siem.track('a'); CREATE ROLE app LOGIN; GRANT INSERT ON a TO app;").unwrap();
    let mut app = cluster.connect_as("postgres", "app");
    app.batch_execute("INSERT INTO a VALUES (1)").unwrap();
    app.batch_execute("BEGIN; SET LOCAL pgaudit_siem.actor_id = 'user-7'; SET LOCAL pgaudit_siem.org_id = 'acme'; INSERT INTO a VALUES (2); COMMIT;").unwrap();
    app.batch_execute("INSERT INTO a VALUES (3)").unwrap(); // SET LOCAL ended with its transaction
    let all = events(&mut c);
    assert_eq!(
        all[0]["actor"],
        json!({"id": "app", "email": null, "first_name": null, "last_name": null})
    );
    assert_eq!(
        all[0]["org"],
        json!({"id": null, "name": "postgres", "alias": "postgres"})
    );
    assert_eq!(all[0]["source"]["session_user"], "app");
    assert_eq!(all[1]["actor"]["id"], "user-7");
    assert_eq!(
        all[1]["org"],
        json!({"id": "acme", "name": null, "alias": null})
    );
    assert_eq!(all[2]["actor"]["id"], "app");
}

#[test]
fn only_committed_changes_leave_events() {
    let cluster = cluster();
    let mut c = cluster.connect();
    c.batch_execute("CREATE TABLE tx (id int PRIMARY KEY); SELECT pgaudit_siem.track('tx')")
        .unwrap();
    c.batch_execute("BEGIN; INSERT INTO tx VALUES (1); ROLLBACK")
        .unwrap();
    c.batch_execute("BEGIN; INSERT INTO tx VALUES (2); SAVEPOINT s; INSERT INTO tx VALUES (3); ROLLBACK TO s; INSERT INTO tx VALUES (4); COMMIT").unwrap();
    c.batch_execute("UPDATE tx SET id = id WHERE false; DELETE FROM tx WHERE id = 99")
        .unwrap();
    assert!(c.batch_execute("INSERT INTO tx VALUES (2)").is_err());
    let rows: Vec<Value> = events(&mut c)
        .iter()
        .map(|e| e["changes"]["data_after"].clone())
        .collect();
    assert_eq!(rows, vec![json!([{"id": 2}]), json!([{"id": 4}])]);
}

#[test]
fn partitions_are_captured_once_including_new_ones() {
    let cluster = cluster();
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE m (id int, region text) PARTITION BY LIST (region);
         CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');
         SELECT pgaudit_siem.track('m', 'measurements');
         CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');
         INSERT INTO m VALUES (1, 'eu'), (2, 'us');
         INSERT INTO m_eu VALUES (3, 'eu');
         INSERT INTO m_us VALUES (4, 'us');
         UPDATE m SET id = id + 10;",
    )
    .unwrap();
    let all = events(&mut c);
    let summary: Vec<(String, String, u64)> = all
        .iter()
        .map(|e| {
            (
                e["event"]["action"].as_str().unwrap().to_owned(),
                e["source"]["table"].as_str().unwrap().to_owned(),
                e["changes"]["processed_row_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("insert".into(), "m".into(), 2),
            ("insert".into(), "m_eu".into(), 1),
            ("insert".into(), "m_us".into(), 1),
            ("update".into(), "m".into(), 4),
        ]
    );
    assert!(all.iter().all(|e| e["event"]["category"] == "measurements"));
    let update = &all[3]["changes"];
    for i in 0..4 {
        assert_eq!(
            update["data_before"][i]["id"].as_i64().unwrap() + 10,
            update["data_after"][i]["id"].as_i64().unwrap()
        );
    }
}

/// The extension's DDL event trigger reads the partition tree without locking it: a
/// command on a parent must not wait for a partition another session holds, as it did
/// when `pg_partition_tree` locked every partition under the parent's lock (the reverse
/// of PostgreSQL's partition-then-parent order, which deadlocked a parallel pg_restore).
#[test]
fn ddl_on_a_parent_does_not_lock_its_partitions() {
    let cluster = cluster();
    let mut su = cluster.connect();
    su.batch_execute("CREATE ROLE part_owner LOGIN; GRANT CREATE ON SCHEMA public TO part_owner")
        .unwrap();
    // A plain table owner, as in a restore run by the database's owner.
    let mut c = cluster.connect_as("postgres", "part_owner");
    c.batch_execute(
        "CREATE TABLE q (n int, region text) PARTITION BY LIST (region);
         CREATE TABLE q_eu PARTITION OF q FOR VALUES IN ('eu');",
    )
    .unwrap();
    let mut holder = cluster.connect_as("postgres", "part_owner");
    holder
        .batch_execute("BEGIN; LOCK TABLE q_eu IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    // ONLY: PostgreSQL itself touches no partition for this command.
    c.batch_execute("SET lock_timeout = '5s'; ALTER TABLE ONLY q ALTER COLUMN n SET DEFAULT 1")
        .expect("the event trigger waited for a partition's lock");
    holder.batch_execute("ROLLBACK").unwrap();
    // Tracking still follows the tree: a partitioned table attached below a tracked
    // root gets capture triggers on its own partitions.
    su.batch_execute("SELECT pgaudit_siem.track('q', 'quota')")
        .unwrap();
    c.batch_execute(
        "CREATE TABLE q_us (n int, region text) PARTITION BY LIST (n);
         CREATE TABLE q_us_1 PARTITION OF q_us FOR VALUES IN (1);
         ALTER TABLE q ATTACH PARTITION q_us FOR VALUES IN ('us');
         INSERT INTO q_us_1 VALUES (1, 'us');",
    )
    .unwrap();
    let tables: Vec<String> = events(&mut su)
        .iter()
        .map(|e| e["source"]["table"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tables, vec!["q_us_1".to_owned()]);
}

#[test]
fn large_statements_are_split_into_parts() {
    let cluster = cluster();
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE big (id int, v text);
         SELECT pgaudit_siem.track('big');
         SET pgaudit_siem.max_rows_per_event = 100;
         INSERT INTO big SELECT g, repeat('x', 10) FROM generate_series(1, 250) g;
         UPDATE big SET v = 'y';
         SET pgaudit_siem.max_rows_per_event = 1000000;
         SET pgaudit_siem.max_event_bytes = 4096;
         DELETE FROM big;",
    )
    .unwrap();
    let all = events(&mut c);
    let inserts: Vec<&Value> = all
        .iter()
        .filter(|e| e["event"]["action"] == "insert")
        .collect();
    assert_eq!(inserts.len(), 3);
    for (i, e) in inserts.iter().enumerate() {
        assert_eq!(e["changes"]["processed_row_count"], 250);
        assert_eq!(e["changes"]["part"], i + 1);
        assert_eq!(e["changes"]["part_count"], 3);
    }
    let sizes: Vec<usize> = inserts
        .iter()
        .map(|e| e["changes"]["data_after"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    let ids: Vec<i64> = inserts
        .iter()
        .flat_map(|e| {
            e["changes"]["data_after"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(ids, (1..=250).collect::<Vec<i64>>());
    for e in all.iter().filter(|e| e["event"]["action"] == "update") {
        let (b, a) = (
            e["changes"]["data_before"].as_array().unwrap(),
            e["changes"]["data_after"].as_array().unwrap(),
        );
        assert_eq!(b.len(), a.len());
        assert!(b
            .iter()
            .zip(a)
            .all(|(x, y)| x["id"] == y["id"] && x["v"] == "xxxxxxxxxx" && y["v"] == "y"));
    }
    let deletes: Vec<&Value> = all
        .iter()
        .filter(|e| e["event"]["action"] == "delete")
        .collect();
    assert!(deletes.len() > 1, "byte limit splits too");
    assert!(deletes.iter().all(|e| e.to_string().len() < 4096 + 1024));
    assert_eq!(
        deletes
            .iter()
            .map(|e| e["changes"]["data_before"].as_array().unwrap().len())
            .sum::<usize>(),
        250
    );
}

#[test]
fn privileges_and_trigger_protection() {
    let cluster = cluster();
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE ROLE owner_r LOGIN; CREATE ROLE writer LOGIN; CREATE ROLE admin_r LOGIN; GRANT pgaudit_admin TO admin_r;
         GRANT CREATE ON SCHEMA public TO owner_r;",
    )
    .unwrap();
    let mut owner = cluster.connect_as("postgres", "owner_r");
    owner
        .batch_execute("CREATE TABLE secrets (id int, token text); CREATE TABLE other (id int); GRANT INSERT, UPDATE, DELETE, SELECT ON secrets, other TO writer;
                         -- Tracking needs the right to read what events will show.
                         GRANT SELECT ON other TO admin_r")
        .unwrap();
    let mut writer = cluster.connect_as("postgres", "writer");
    let code = |r: Result<(), pgaudit_siem_tests::postgres::Error>| {
        r.unwrap_err().as_db_error().unwrap().code().clone()
    };
    // Only the owner or pgaudit_admin may track.
    assert_eq!(
        code(writer.batch_execute("SELECT pgaudit_siem.track('secrets')")),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    owner
        .batch_execute("SELECT pgaudit_siem.track('secrets', 'api_tokens', ARRAY['token'])")
        .unwrap();
    let mut admin = cluster.connect_as("postgres", "admin_r");
    admin
        .batch_execute("SELECT pgaudit_siem.track('other')")
        .unwrap();
    // Writers are captured without any privilege on the outbox, and cannot read it.
    writer
        .batch_execute("INSERT INTO secrets VALUES (1, 'tok'); UPDATE secrets SET id = 2")
        .unwrap();
    for sql in [
        "SELECT * FROM pgaudit_siem.outbox",
        "SELECT * FROM pgaudit_siem.events",
        "DELETE FROM pgaudit_siem.outbox",
        "UPDATE pgaudit_siem.outbox SET payload = '{}'",
    ] {
        assert_eq!(
            code(writer.batch_execute(sql)),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
        assert_eq!(
            code(owner.batch_execute(sql)),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pgaudit_siem.events WHERE category = 'api_tokens'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // The owner cannot switch capture off behind the admins' backs.
    for sql in [
        "DROP TRIGGER pgaudit_siem_capture_insert ON secrets",
        "ALTER TABLE secrets DISABLE TRIGGER pgaudit_siem_capture_update",
        "ALTER TABLE secrets DISABLE TRIGGER ALL",
        "ALTER TABLE secrets DISABLE TRIGGER USER",
        "ALTER TABLE secrets ENABLE REPLICA TRIGGER pgaudit_siem_capture_delete",
        "ALTER TRIGGER pgaudit_siem_capture_insert ON secrets RENAME TO x",
    ] {
        assert_eq!(
            code(owner.batch_execute(sql)),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
    // Schema changes keep capture working.
    owner
        .batch_execute(
            "ALTER TABLE secrets ADD COLUMN note text; ALTER TABLE secrets DROP COLUMN id",
        )
        .unwrap();
    writer
        .batch_execute("INSERT INTO secrets VALUES ('t2', 'n')")
        .unwrap();
    let last: serde_json::Value = admin
        .query_one("SELECT payload::json FROM pgaudit_siem.events WHERE category = 'api_tokens' ORDER BY created_at DESC LIMIT 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(last["changes"]["data_after"], json!([{"note": "n"}]));
    // Untracking is itself an event; a pgaudit_admin member may untrack.
    admin
        .batch_execute("SELECT pgaudit_siem.untrack('secrets')")
        .unwrap();
    writer
        .batch_execute("INSERT INTO secrets VALUES ('t3', 'n')")
        .unwrap();
    let tail: Vec<(String, String)> = admin
        .query(
            "SELECT category, action FROM pgaudit_siem.events ORDER BY created_at DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        tail,
        vec![("pgaudit_siem".to_owned(), "untrack".to_owned())]
    );
    // Dropping a tracked table is an event and untracks it.
    owner.batch_execute("DROP TABLE other").unwrap();
    let tracked: i64 = admin
        .query_one("SELECT count(*) FROM pgaudit_siem.tracked_tables", &[])
        .unwrap()
        .get(0);
    assert_eq!(tracked, 0);
    let dropped: i64 = admin
        .query_one(
            "SELECT count(*) FROM pgaudit_siem.events WHERE action = 'drop_table'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dropped, 1);
}

#[test]
fn drop_extension_keeps_undelivered_events() {
    let cluster = cluster();
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE d (id int); SELECT pgaudit_siem.track('d'); INSERT INTO d VALUES (1)",
    )
    .unwrap();
    let err = c.batch_execute("DROP EXTENSION pgaudit_siem").unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::OBJECT_IN_USE);
    assert_eq!(
        db.message(),
        "cannot drop extension pgaudit_siem: 2 captured events have not been delivered"
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM pgaudit_siem.outbox", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the track event and the insert");
    let discarded: i64 = c
        .query_one("SELECT pgaudit_siem.discard_undelivered()", &[])
        .unwrap()
        .get(0);
    assert_eq!(discarded, 2);
    // Tracked tables' capture triggers depend on the extension: PostgreSQL's own rule.
    let err = c.batch_execute("DROP EXTENSION pgaudit_siem").unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().code(),
        &SqlState::DEPENDENT_OBJECTS_STILL_EXIST
    );
    c.batch_execute("DROP EXTENSION pgaudit_siem CASCADE")
        .unwrap();
    let triggers: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'd'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(triggers, 0);
}

#[test]
fn retention_removes_only_delivered_events() {
    let cluster = cluster();
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE r (id int); SELECT pgaudit_siem.track('r');
         INSERT INTO r VALUES (1); INSERT INTO r VALUES (2); INSERT INTO r VALUES (3);
         UPDATE pgaudit_siem.outbox SET created_at = now() - interval '8 days' WHERE seq <= 2;
         UPDATE pgaudit_siem.delivery_state SET last_xid = (SELECT xid FROM pgaudit_siem.outbox WHERE seq = 1), last_seq = 1;",
    )
    .unwrap();
    let removed: i64 = c
        .query_one("SELECT pgaudit_siem.purge_expired()", &[])
        .unwrap()
        .get(0);
    assert_eq!(removed, 1);
    let left: Vec<i64> = c
        .query("SELECT seq FROM pgaudit_siem.outbox ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // seq 1 is the track event (old and delivered: removed), seq 2 the first insert.
    assert_eq!(left, [2, 3, 4], "the old undelivered event stays");
}
