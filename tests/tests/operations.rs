//! What a DBA does to a server with the extension: ALTER EXTENSION UPDATE from the
//! released 0.1.0 (schema identical to a fresh install, no event lost, delivery going
//! on), pg_dump/pg_restore into another cluster (configuration, registry with its
//! exclusions, undelivered events, dead letters; delivered events not sent again),
//! pg_upgrade to a new cluster, failover to a synchronous standby, and installing
//! beside an existing `aiven_extras` schema or extension.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgaudit_siem_tests::postgres::Client;
use pgaudit_siem_tests::receiver::{Faults, Receiver};
use pgaudit_siem_tests::{assert_stays, pg_bin_dir, pg_command, run_checked, wait_until, Cluster};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn builder(name: &str) -> pgaudit_siem_tests::ClusterBuilder {
    Cluster::builder().name(name).with_fast_delivery()
}

/// Change events of table `table` received so far: (marker `n`, the row as received).
fn received_rows(receiver: &Receiver, table: &str) -> Vec<(i64, Value)> {
    receiver
        .events()
        .iter()
        .filter(|r| r.event.pointer("/source/table") == Some(&Value::from(table)))
        .flat_map(|r| {
            r.event["changes"]["data_after"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|row| (row["n"].as_i64().expect("marker n"), row))
        .collect()
}

fn markers(receiver: &Receiver, table: &str) -> Vec<i64> {
    received_rows(receiver, table)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// Waits until `wanted` markers of `table` arrived, then asserts that each arrived
/// exactly once, in order, and that none of the `excluded` columns is in any row.
fn expect_exactly(receiver: &Receiver, table: &str, wanted: &[i64], excluded: &[&str]) {
    wait_until(&format!("markers {wanted:?} of {table}"), WAIT, || {
        let got = markers(receiver, table);
        wanted.iter().all(|w| got.contains(w))
    });
    let rows = received_rows(receiver, table);
    let got: Vec<i64> = rows.iter().map(|(n, _)| *n).collect();
    assert_eq!(got, wanted, "each event once, in order");
    for (n, row) in rows {
        for column in excluded {
            assert!(
                row.get(*column).is_none(),
                "row {n} shows excluded column {column}: {row}"
            );
        }
    }
}

fn count(c: &mut Client, query: &str) -> i64 {
    c.query_one(query, &[]).unwrap().get::<_, i64>(0)
}

/// A file in the cluster's directory (readable by the server's OS user).
fn scratch(cluster: &Cluster, name: &str) -> PathBuf {
    cluster.dir().join(name)
}

/// `pg_dump --binary-upgrade --schema-only` lists every member object of an extension
/// (a plain dump shows only CREATE EXTENSION), without the OIDs that differ between
/// databases.
fn extension_schema(cluster: &Cluster, db: &str) -> String {
    let out = run_checked(
        {
            let mut c = pg_command("pg_dump");
            c.args([
                "--schema-only",
                "--binary-upgrade",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
            ])
            .arg(cluster.port().to_string())
            .arg(db);
            c
        },
        "pg_dump --schema-only",
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        // Per-database values, not schema: OID assignments, freeze horizons, sequence
        // positions, psql's per-dump \restrict key, and the stored default of rows
        // older than an ADD COLUMN (attmissingval: storage, not schema).
        .filter(|l| {
            !l.is_empty()
                && !l.contains("binary_upgrade_set_next")
                && !l.contains("binary_upgrade_set_missing_value")
                && *l != "-- set missing value."
                && !l.starts_with("-- Dumped")
                && !l.starts_with("SET relfrozenxid")
                && !l.starts_with("SELECT pg_catalog.setval")
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
        })
        .map(|l| {
            // OIDs (config tables in binary_upgrade_create_empty_extension) differ.
            let mut out = String::new();
            let mut digits = String::new();
            for ch in l.chars().chain(std::iter::once(' ')) {
                if ch.is_ascii_digit() {
                    digits.push(ch);
                    continue;
                }
                if digits.len() >= 5 {
                    out.push_str("<oid>");
                } else {
                    out.push_str(&digits);
                }
                digits.clear();
                out.push(ch);
            }
            out.trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The user's part of the schema, the same in every database of these tests: a table
/// with a dropped column (so a restore renumbers the columns after it), an excluded
/// column, and a partitioned table with two partitions.
const APP_SCHEMA: &str = "
    CREATE TABLE t (n int PRIMARY KEY, gone text, secret text, note text);
    ALTER TABLE t DROP COLUMN gone;
    CREATE TABLE p (n int, region text, secret text) PARTITION BY LIST (region);
    CREATE TABLE p_eu PARTITION OF p FOR VALUES IN ('eu');
    CREATE TABLE p_us PARTITION OF p FOR VALUES IN ('us');
    ALTER TABLE p ADD PRIMARY KEY (n, region);";

/// The released versions: the frozen install scripts in sql/.
fn released_versions() -> Vec<String> {
    let mut versions: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                let v = name
                    .strip_prefix("pgaudit_siem--")?
                    .strip_suffix(".sql")?
                    .to_owned();
                (!v.contains("--")).then_some(v)
            })
            .collect();
    versions.sort();
    versions
}

/// The user's schema, tracked with `secret` excluded, delivering ndjson to `receiver`
/// with `headers`: only functions every release has.
fn set_up_app(app: &mut Client, receiver: &Receiver, headers: &str) {
    app.batch_execute(APP_SCHEMA).unwrap();
    track_app_tables(app);
    app.execute(
        "SELECT pgaudit_siem.configure($1, $2::text::jsonb, NULL, 'ndjson')",
        &[&receiver.url("/siem"), &headers],
    )
    .unwrap();
    app.batch_execute("SELECT pgaudit_siem.enable()").unwrap();
}

fn track_app_tables(app: &mut Client) {
    app.batch_execute(
        "SELECT pgaudit_siem.track('t', 'orgs', '{secret}');
         SELECT pgaudit_siem.track('p', 'orgs', '{secret}');",
    )
    .unwrap();
}

#[test]
fn alter_extension_update_from_every_release_keeps_every_event_and_matches_a_fresh_install() {
    let releases = released_versions();
    assert!(releases.contains(&"0.1.0".to_owned()));
    for release in releases {
        update_from(&release);
    }
}

fn update_from(release: &str) {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("ops-upgrade").start();
    let mut c = cluster.connect();
    for db in ["app", "fresh"] {
        c.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    }
    let mut app = cluster.connect_as("app", "postgres");
    app.batch_execute(&format!(
        "CREATE EXTENSION pgaudit_siem VERSION '{release}'"
    ))
    .unwrap();
    // The release's own functions: track(), configure(), enable().
    set_up_app(&mut app, &receiver, "{}");
    // Events queued under the release's tables (the library is already the new one: a
    // package upgrade comes before ALTER EXTENSION UPDATE), and a dead letter.
    for n in 1..=3 {
        app.execute("INSERT INTO t VALUES ($1, 'pw', 'x')", &[&n])
            .unwrap();
    }
    app.batch_execute(
        "INSERT INTO p VALUES (1, 'eu', 'pw'), (2, 'us', 'pw');
         INSERT INTO pgaudit_siem.dead_letter (id, seq, xid, created_at, category, action, part, part_count, payload, attempts)
              VALUES (pgaudit_siem.uuid_v7(), 1000000, '1', now(), 'orgs', 'insert', 1, 1, '{\"refused\": true}', 1);",
    )
    .unwrap();
    let queued = count(&mut app, "SELECT count(*) FROM pgaudit_siem.outbox");
    assert!(queued >= 5, "events queued under {release}: {queued}");
    // The worker waits for the update instead of running 0.2.0 queries on 0.1.0 tables.
    cluster.wait_for_log(WAIT, |r| {
        r.message
            .contains("run ALTER EXTENSION pgaudit_siem UPDATE")
    });
    assert_eq!(
        receiver.event_count(),
        0,
        "nothing delivered before the update"
    );

    app.batch_execute("ALTER EXTENSION pgaudit_siem UPDATE")
        .unwrap();
    let version: String = app
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pgaudit_siem'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, pgaudit_siem_tests::extension_version());

    // Delivery continues with every event queued before, then new ones.
    app.execute("INSERT INTO t VALUES (4, 'pw', 'x')", &[])
        .unwrap();
    expect_exactly(&receiver, "t", &[1, 2, 3, 4], &["secret"]);
    // Inserts through the partitioned root are its events.
    expect_exactly(&receiver, "p", &[1, 2], &["secret"]);
    assert_eq!(
        count(&mut app, "SELECT count(*) FROM pgaudit_siem.dead_letter"),
        1
    );
    assert_eq!(
        app.query_one(
            "SELECT exclude_columns::text FROM pgaudit_siem.tracked_tables WHERE table_name = 't'::regclass",
            &[]
        )
        .unwrap()
        .get::<_, String>(0),
        "{secret}"
    );

    // The schema equals a fresh install's (same user objects, tracked the same way).
    let mut fresh = cluster.connect_as("fresh", "postgres");
    fresh
        .batch_execute("CREATE EXTENSION pgaudit_siem")
        .unwrap();
    fresh.batch_execute(APP_SCHEMA).unwrap();
    track_app_tables(&mut fresh);
    let (upgraded, installed) = (
        extension_schema(&cluster, "app"),
        extension_schema(&cluster, "fresh"),
    );
    if upgraded != installed {
        let (a, b) = (
            scratch(&cluster, "upgraded.sql"),
            scratch(&cluster, "fresh.sql"),
        );
        std::fs::write(&a, &upgraded).unwrap();
        std::fs::write(&b, &installed).unwrap();
        let diff = Command::new("diff")
            .arg("-u")
            .arg(&a)
            .arg(&b)
            .output()
            .unwrap();
        panic!(
            "the schema upgraded from {release} differs from a fresh install:\n{}",
            String::from_utf8_lossy(&diff.stdout)
        );
    }
    cluster.assert_no_crash();
}

/// `pg_dump -Fc` of `db`, restored with `pg_restore` into `target`'s database `db`.
fn dump_and_restore(source: &Cluster, target: &Cluster, db: &str) {
    let file = scratch(source, "app.dump");
    run_checked(
        {
            let mut c = pg_command("pg_dump");
            c.args(["-Fc", "-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(source.port().to_string())
                .arg("-f")
                .arg(&file)
                .arg(db);
            c
        },
        "pg_dump",
    );
    target
        .connect()
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    // pg_restore exits non-zero on any error it met (a trigger already there, a row
    // refused): the restore must be clean.
    run_checked(
        {
            let mut c = pg_command("pg_restore");
            // Parallel: table data and post-data items in any order the jobs take them.
            c.args(["-j", "3", "-h", "127.0.0.1", "-U", "postgres", "-p"])
                .arg(target.port().to_string())
                .arg("-d")
                .arg(db)
                .arg(&file);
            c
        },
        "pg_restore",
    );
}

/// A database with delivered events (1, 2), a dead letter (3, refused with 400) and
/// undelivered events (4, 5, the receiver answering 503), partitions included.
fn populate_with_history(cluster: &Cluster, receiver: &Receiver) -> Client {
    cluster
        .connect()
        .batch_execute("CREATE DATABASE app")
        .unwrap();
    let mut app = cluster.connect_as("app", "postgres");
    app.batch_execute("CREATE EXTENSION pgaudit_siem").unwrap();
    set_up_app(
        &mut app,
        receiver,
        "{\"Authorization\": \"Bearer dump-token\"}",
    );
    app.batch_execute("INSERT INTO t VALUES (1, 'pw', 'a'); INSERT INTO t VALUES (2, 'pw', 'b')")
        .unwrap();
    expect_exactly(receiver, "t", &[1, 2], &["secret"]);
    receiver.set_faults(Faults {
        status: Some(400),
        status_count: 1,
        ..Faults::default()
    });
    app.batch_execute("INSERT INTO t VALUES (3, 'pw', 'c')")
        .unwrap();
    wait_until("a dead letter", WAIT, || {
        count(&mut app, "SELECT count(*) FROM pgaudit_siem.dead_letter") == 1
    });
    receiver.set_faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    app.batch_execute(
        "INSERT INTO t VALUES (4, 'pw', 'd'); INSERT INTO t VALUES (5, 'pw', 'e');
         INSERT INTO p VALUES (6, 'eu', 'pw');",
    )
    .unwrap();
    assert_eq!(
        count(
            &mut app,
            "SELECT count(*) FROM pgaudit_siem.events WHERE NOT delivered AND category = 'orgs'"
        ),
        3
    );
    app
}

#[test]
fn dump_and_restore_into_another_cluster_resumes_delivery_without_loss_or_resends() {
    let receiver = Receiver::start(0, None).unwrap();
    let mut old = builder("ops-dump-old").start();
    let mut app = populate_with_history(&old, &receiver);
    let settings_before: String = app
        .query_one(
            "SELECT row_to_json(s)::text FROM pgaudit_siem.settings s",
            &[],
        )
        .unwrap()
        .get(0);
    // A database owner (no right to the outbox or the tokens) dumps without the
    // extension's data, as the README says.
    app.batch_execute(
        "CREATE ROLE owner LOGIN; ALTER DATABASE app OWNER TO owner;
         ALTER TABLE t OWNER TO owner; ALTER TABLE p OWNER TO owner;
         ALTER TABLE p_eu OWNER TO owner; ALTER TABLE p_us OWNER TO owner;",
    )
    .unwrap();
    drop(app);
    let owner_dump = run_checked(
        {
            let mut c = pg_command("pg_dump");
            c.args([
                "-h",
                "127.0.0.1",
                "-U",
                "owner",
                "--exclude-table-data=pgaudit_siem.*",
                "-p",
            ])
            .arg(old.port().to_string())
            .arg("app");
            c
        },
        "pg_dump by the database owner",
    );
    let owner_dump = String::from_utf8(owner_dump.stdout).unwrap();
    assert!(owner_dump.contains("CREATE EXTENSION IF NOT EXISTS pgaudit_siem"));
    assert!(
        !owner_dump.contains("dump-token"),
        "the owner's dump has no SIEM token"
    );
    let new = builder("ops-dump-new").start();
    // Roles are the cluster's (pg_dumpall --roles-only), not the dump's.
    new.connect()
        .batch_execute("CREATE ROLE owner LOGIN")
        .unwrap();
    dump_and_restore(&old, &new, "app");
    // The old server is gone before the SIEM is back: only the new one delivers.
    old.stop("fast");
    receiver.clear_faults();
    let mut app = new.connect_as("app", "postgres");
    // Undelivered events arrive once, the delivered ones are not sent again.
    expect_exactly(&receiver, "t", &[1, 2, 4, 5], &["secret"]);
    expect_exactly(&receiver, "p", &[6], &["secret"]);
    let settings_after: String = app
        .query_one(
            "SELECT row_to_json(s)::text FROM pgaudit_siem.settings s",
            &[],
        )
        .unwrap()
        .get(0);
    let strip = |s: &str| -> Value {
        let mut v: Value = serde_json::from_str(s).unwrap();
        v.as_object_mut().unwrap().remove("version");
        v
    };
    assert_eq!(
        strip(&settings_after),
        strip(&settings_before),
        "the configuration is restored"
    );
    assert_eq!(
        count(&mut app, "SELECT count(*) FROM pgaudit_siem.dead_letter"),
        1
    );
    let tracked: Vec<(String, String)> = app
        .query("SELECT table_name::text, exclude_columns::text FROM pgaudit_siem.tracked_tables ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        tracked,
        vec![
            ("p".into(), "{secret}".into()),
            ("t".into(), "{secret}".into())
        ]
    );
    // New changes in the restored database: captured, with the exclusion by name (the
    // dropped column is gone, so `secret` has another attribute number here).
    app.batch_execute(
        "INSERT INTO t VALUES (7, 'pw', 'g'); INSERT INTO p_us VALUES (8, 'us', 'pw');
         UPDATE t SET note = 'h' WHERE n = 7;",
    )
    .unwrap();
    wait_until("the update event", WAIT, || {
        received_rows(&receiver, "t")
            .iter()
            .any(|(n, row)| *n == 7 && row["note"] == "h")
    });
    expect_exactly(&receiver, "p_us", &[8], &["secret"]);
    assert!(markers(&receiver, "t").starts_with(&[1, 2, 4, 5, 7]));
    // The dead letter can be requeued in its new home.
    app.batch_execute("SELECT pgaudit_siem.requeue_dead_letter()")
        .unwrap();
    wait_until("the requeued event", WAIT, || {
        markers(&receiver, "t").contains(&3)
    });
    assert_stays("no event twice", Duration::from_millis(500), || {
        let m = markers(&receiver, "t");
        m.iter().filter(|&&n| n == 3 || n == 4).count() == 2
    });
    new.assert_no_crash();
}

/// A table owner renames columns with whatever command renames them: the excluded column
/// stays out of the events under its new name, a captured column renamed to the excluded
/// name stays in, and the names a dump keeps follow.
#[test]
fn renames_through_any_command_keep_the_exclusions_on_the_same_columns() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("ops-renames").start();
    let mut c = cluster.connect();
    c.batch_execute("CREATE EXTENSION pgaudit_siem; CREATE ROLE owner LOGIN")
        .unwrap();
    set_up_app(&mut c, &receiver, "{}");
    c.batch_execute("ALTER TABLE t OWNER TO owner").unwrap();
    let mut owner = cluster.connect_as("postgres", "owner");
    // ALTER VIEW ... RENAME COLUMN works on a table, under another command tag.
    owner
        .batch_execute("ALTER VIEW t RENAME COLUMN secret TO s2")
        .unwrap();
    owner
        .batch_execute("INSERT INTO t VALUES (1, 'pw', 'a')")
        .unwrap();
    expect_exactly(&receiver, "t", &[1], &["s2", "secret"]);
    owner
        .batch_execute("ALTER TABLE t RENAME COLUMN note TO secret")
        .unwrap();
    owner
        .batch_execute("INSERT INTO t VALUES (2, 'pw', 'visible')")
        .unwrap();
    expect_exactly(&receiver, "t", &[1, 2], &["s2"]);
    let rows = received_rows(&receiver, "t");
    assert_eq!(
        rows[1].1["secret"], "visible",
        "the renamed captured column stays in"
    );
    // ALTER TYPE ... RENAME ATTRIBUTE renames a table's column too (tag ALTER TYPE).
    owner
        .batch_execute("ALTER TYPE t RENAME ATTRIBUTE s2 TO s3")
        .unwrap();
    owner
        .batch_execute("INSERT INTO t VALUES (3, 'pw', 'c')")
        .unwrap();
    expect_exactly(&receiver, "t", &[1, 2, 3], &["s2", "s3"]);
    let names: String = c
        .query_one(
            "SELECT exclude_columns::text FROM pgaudit_siem.tracked WHERE relid = 't'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(names, "{s3}", "the names a dump keeps follow the renames");
    // A registration whose excluded name the table lacks (a stale dump) is refused, not
    // taken without its exclusion.
    let refused = c
        .batch_execute(
            "INSERT INTO pgaudit_siem.tracked (relid, category, exclude_columns) VALUES ('p', 'orgs', '{nosuch}')
             ON CONFLICT (relid) DO NOTHING",
        )
        .unwrap_err();
    assert_eq!(
        refused.as_db_error().unwrap().code().code(),
        "42703",
        "{refused:?}"
    );
    cluster.assert_no_crash();
}

/// Order keys are transaction ids, never ahead of the next one: after a restart the
/// durable cursor is below every key written later. (The horizon used to step one past
/// the last published one when no id had been taken, which in principle lets keys run
/// ahead of the ids on a quiet server; this workload did not make the old rule drift,
/// so the test guards the invariant rather than reproducing a loss.)
#[test]
fn order_keys_never_run_ahead_of_transaction_ids_across_a_restart() {
    let receiver = Receiver::start(0, None).unwrap();
    let mut cluster = builder("ops-keys").start();
    let mut c = cluster.connect();
    c.batch_execute("CREATE EXTENSION pgaudit_siem").unwrap();
    set_up_app(&mut c, &receiver, "{}");
    c.batch_execute("INSERT INTO t VALUES (1, 'pw', 'a')")
        .unwrap();
    expect_exactly(&receiver, "t", &[1], &["secret"]);
    // Wake-ups of the idle worker from transactions that take no id: each makes the
    // worker read the horizon.
    for _ in 0..300 {
        c.batch_execute("SELECT pgaudit_siem._wake_delivery_at_commit()")
            .unwrap();
    }
    c.batch_execute("INSERT INTO t VALUES (2, 'pw', 'b')")
        .unwrap();
    expect_exactly(&receiver, "t", &[1, 2], &["secret"]);
    // A new transaction's key is its own id (a key above it would sort after events
    // that a restarted server writes with lower ids).
    let mut tx = c.transaction().unwrap();
    let (key, xid): (String, String) = {
        let row = tx
            .query_one(
                "SELECT pgaudit_siem._outbox_key()::text, pg_current_xact_id()::text",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    tx.rollback().unwrap();
    assert_eq!(key, xid, "the order key ran ahead of the transaction id");
    drop(c);
    cluster.restart();
    cluster
        .connect()
        .batch_execute("INSERT INTO t VALUES (3, 'pw', 'c')")
        .unwrap();
    expect_exactly(&receiver, "t", &[1, 2, 3], &["secret"]);
    cluster.assert_no_crash();
}

#[test]
fn pg_upgrade_to_a_new_cluster_keeps_undelivered_events() {
    let receiver = Receiver::start(0, None).unwrap();
    let mut old = builder("ops-pgupgrade-old").start();
    drop(populate_with_history(&old, &receiver));
    old.stop("fast");
    let mut new = builder("ops-pgupgrade-new").start();
    new.stop("fast");
    let bin = pg_bin_dir();
    run_checked(
        {
            let mut c = pg_command("pg_upgrade");
            c.current_dir(new.dir())
                .arg("-b")
                .arg(&bin)
                .arg("-B")
                .arg(&bin)
                .arg("-d")
                .arg(old.data_dir())
                .arg("-D")
                .arg(new.data_dir())
                .args(["-U", "postgres", "--link"]);
            c
        },
        "pg_upgrade",
    );
    receiver.clear_faults();
    new.start_with_server_options(&[]);
    expect_exactly(&receiver, "t", &[1, 2, 4, 5], &["secret"]);
    expect_exactly(&receiver, "p", &[6], &["secret"]);
    let mut app = new.connect_as("app", "postgres");
    assert_eq!(
        count(&mut app, "SELECT count(*) FROM pgaudit_siem.dead_letter"),
        1
    );
    app.batch_execute("INSERT INTO t VALUES (7, 'pw', 'g')")
        .unwrap();
    expect_exactly(&receiver, "t", &[1, 2, 4, 5, 7], &["secret"]);
    new.assert_no_crash();
}

#[test]
fn failover_to_a_synchronous_standby_delivers_every_committed_event() {
    let receiver = Receiver::start(0, None).unwrap();
    let stream_url = format!("'{}'", receiver.url("/stream"));
    let with_stream = |b: pgaudit_siem_tests::ClusterBuilder| {
        b.setting("pgaudit.featureEnabled", "on")
            .setting("pgaudit.log", "'write'")
            .setting("pgaudit_siem.session_audit_url", &stream_url)
    };
    let mut primary = with_stream(builder("ops-failover")).start();
    let standby = primary.start_standby(with_stream(builder("ops-failover")));
    primary.alter_system(&[("synchronous_standby_names", "'*'")]);
    let mut c = primary.connect();
    c.batch_execute(
        "CREATE TABLE t (n int PRIMARY KEY, secret text); CREATE EXTENSION pgaudit_siem",
    )
    .unwrap();
    c.batch_execute("SELECT pgaudit_siem.track('t', 'orgs', '{secret}')")
        .unwrap();
    c.execute(
        "SELECT pgaudit_siem.configure($1, '{}', NULL, 'ndjson')",
        &[&receiver.url("/siem")],
    )
    .unwrap();
    c.batch_execute("SELECT pgaudit_siem.enable()").unwrap();
    c.batch_execute("INSERT INTO t VALUES (1, 'pw')").unwrap();
    expect_exactly(&receiver, "t", &[1], &["secret"]);
    // The SIEM stalls: events 2..=20 are committed (on the standby too: synchronous)
    // but not delivered when the primary dies.
    receiver.set_faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    for n in 2..=20 {
        c.execute("INSERT INTO t VALUES ($1, 'pw')", &[&n]).unwrap();
    }
    drop(c);
    primary.stop("immediate");
    standby.promote();
    receiver.clear_faults();
    let all: Vec<i64> = (1..=20).collect();
    wait_until("every committed event from the new primary", WAIT, || {
        let got = markers(&receiver, "t");
        all.iter().all(|n| got.contains(n))
    });
    // At least once: an event the old primary sent before it died may come again, but
    // the order of first arrivals is the commit order and nothing is missing.
    let mut first = Vec::new();
    for n in markers(&receiver, "t") {
        if !first.contains(&n) {
            first.push(n);
        }
    }
    assert_eq!(first, all);
    // The promoted server's session-audit stream goes on: a new write is in it.
    let mut c = standby.connect();
    c.batch_execute("INSERT INTO t VALUES (21, 'pw')").unwrap();
    wait_until("the promoted server's session-audit record", WAIT, || {
        receiver.events().iter().any(|r| {
            r.event.pointer("/event/category") == Some(&Value::from("session_audit"))
                && r.event.to_string().contains("INSERT INTO t VALUES (21")
        })
    });
    expect_exactly(
        &receiver,
        "t",
        &{
            let mut m = markers(&receiver, "t");
            m.retain(|&n| n != 21);
            m.push(21);
            m
        },
        &["secret"],
    );
    standby.assert_no_crash();
}

/// Installs a stand-in for the aiven_extras extension (same control settings and the
/// `set_pgaudit_parameter(text, text, text) RETURNS void` signature as the real one)
/// into PostgreSQL's extension directory, and removes it when dropped.
struct AivenExtrasStandIn(Vec<PathBuf>);

impl AivenExtrasStandIn {
    fn install() -> AivenExtrasStandIn {
        let sharedir = Command::new(pg_bin_dir().join("pg_config"))
            .arg("--sharedir")
            .output()
            .unwrap();
        let dir = Path::new(String::from_utf8(sharedir.stdout).unwrap().trim()).join("extension");
        let control = dir.join("aiven_extras.control");
        let script = dir.join("aiven_extras--9.9.9.sql");
        assert!(
            !control.exists(),
            "a real aiven_extras is installed; this test would replace it"
        );
        std::fs::write(
            &control,
            "comment = 'test stand-in for aiven_extras'\ndefault_version = '9.9.9'\nrelocatable = false\nschema = 'aiven_extras'\n",
        )
        .unwrap();
        std::fs::write(
            &script,
            "CREATE FUNCTION aiven_extras.set_pgaudit_parameter(arg_parameter text, arg_database text, arg_value text)
             RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
             BEGIN
                 EXECUTE format('ALTER DATABASE %I SET pgaudit.%s = %L', arg_database, arg_parameter, arg_value);
             END $$;
             CREATE FUNCTION aiven_extras.session_replication_role(arg_role text) RETURNS text
             LANGUAGE sql AS $$ SELECT arg_role $$;\n",
        )
        .unwrap();
        AivenExtrasStandIn(vec![control, script])
    }
}

impl Drop for AivenExtrasStandIn {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn database_setting(c: &mut Client, db: &str) -> Vec<String> {
    c.query(
        "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
          WHERE d.datname = $1 AND s.setrole = 0",
        &[&db],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn installs_beside_an_existing_aiven_extras_schema_or_extension() {
    let _stand_in = AivenExtrasStandIn::install();
    let cluster = builder("ops-aiven").start();
    let mut c = cluster.connect();
    for db in ["own_schema", "with_extension", "plain"] {
        c.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    }
    c.batch_execute("CREATE ROLE admin LOGIN").unwrap();

    // A schema aiven_extras of the DBA's, with a function of its own.
    let mut db = cluster.connect_as("own_schema", "postgres");
    db.batch_execute(
        "CREATE SCHEMA aiven_extras; CREATE FUNCTION aiven_extras.mine() RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE EXTENSION pgaudit_siem; GRANT pgaudit_admin TO admin;",
    )
    .unwrap();
    let mut admin = cluster.connect_as("own_schema", "admin");
    admin
        .batch_execute(
            "SELECT aiven_extras.set_pgaudit_parameter('log', 'own_schema', 'read, ddl')",
        )
        .unwrap();
    assert_eq!(
        database_setting(&mut c, "own_schema"),
        vec!["pgaudit.log=read, ddl"]
    );
    db.batch_execute("DROP EXTENSION pgaudit_siem").unwrap();
    let left: Vec<String> = db
        .query("SELECT p.proname::text FROM pg_proc p WHERE p.pronamespace = 'aiven_extras'::regnamespace", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        left,
        vec!["mine"],
        "DROP EXTENSION removes only its own functions"
    );

    // The aiven_extras extension installed first: its set_pgaudit_parameter is the one
    // the guide's call reaches; ours fills in what it lacks, and leaves with DROP.
    let mut db = cluster.connect_as("with_extension", "postgres");
    db.batch_execute("CREATE EXTENSION aiven_extras; CREATE EXTENSION pgaudit_siem")
        .unwrap();
    db.batch_execute("SELECT aiven_extras.set_pgaudit_parameter('log', 'with_extension', 'write')")
        .unwrap();
    assert_eq!(
        database_setting(&mut c, "with_extension"),
        vec!["pgaudit.log=write"]
    );
    db.batch_execute(
        "SELECT aiven_extras.set_pgaudit_role_in_database_parameter('log', 'admin', 'with_extension', 'read')",
    )
    .unwrap();
    db.batch_execute("DROP EXTENSION pgaudit_siem").unwrap();
    let members: Vec<String> = db
        .query(
            "SELECT p.proname::text FROM pg_proc p WHERE p.pronamespace = 'aiven_extras'::regnamespace ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        members,
        vec!["session_replication_role", "set_pgaudit_parameter"]
    );
    db.batch_execute("DROP EXTENSION aiven_extras").unwrap();

    // A database owner's schema aiven_extras, or a stand-in set_pgaudit_parameter in a
    // superuser's one: refused with nothing created (the admin's calls would reach code
    // that configures nothing).
    c.batch_execute("CREATE DATABASE hostile OWNER admin")
        .unwrap();
    let mut owner = cluster.connect_as("hostile", "admin");
    owner
        .batch_execute(
            "CREATE SCHEMA aiven_extras;
             CREATE FUNCTION aiven_extras.set_pgaudit_parameter(text, text, text) RETURNS text
                 LANGUAGE sql AS $$ SELECT 'ignored' $$;",
        )
        .unwrap();
    let mut db = cluster.connect_as("hostile", "postgres");
    let refused = db
        .batch_execute("CREATE EXTENSION pgaudit_siem")
        .unwrap_err();
    let refused = refused.as_db_error().expect("a database error");
    assert_eq!(refused.code().code(), "42501", "{refused:?}");
    assert!(refused
        .hint()
        .unwrap_or("")
        .contains("ALTER SCHEMA aiven_extras OWNER TO"));
    db.batch_execute("ALTER SCHEMA aiven_extras OWNER TO postgres")
        .unwrap();
    let refused = db
        .batch_execute("CREATE EXTENSION pgaudit_siem")
        .unwrap_err();
    assert_eq!(
        refused.as_db_error().unwrap().code().code(),
        "42723",
        "{refused:?}"
    );
    // A superuser's schema where others may create: an overload could take the calls.
    db.batch_execute(
        "DROP FUNCTION aiven_extras.set_pgaudit_parameter(text, text, text);
         GRANT CREATE ON SCHEMA aiven_extras TO PUBLIC;",
    )
    .unwrap();
    let refused = db
        .batch_execute("CREATE EXTENSION pgaudit_siem")
        .unwrap_err();
    let refused = refused.as_db_error().unwrap();
    assert_eq!(refused.code().code(), "42501", "{refused:?}");
    assert!(refused.message().contains("PUBLIC"), "{refused:?}");
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgaudit_siem'"
        ),
        0,
        "a refused CREATE EXTENSION leaves nothing"
    );

    // No aiven_extras at all: the schema is ours, and goes with the extension.
    let mut db = cluster.connect_as("plain", "postgres");
    db.batch_execute("CREATE EXTENSION pgaudit_siem; DROP EXTENSION pgaudit_siem")
        .unwrap();
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'aiven_extras'"
        ),
        0
    );
    cluster.assert_no_crash();
}
