//! The SQL surface is deliberate: the install script cargo-pgrx generated for the
//! installed build must equal the committed copy `sql/generated/pgaudit_siem.sql`
//! (pgrx's comments, which carry source line numbers, aside). A change to any SQL file
//! or `#[pg_extern]` fails here until `bash scripts/sql-snapshot.sh` records it, so the
//! change is reviewed with the diff (and the next release's upgrade script covers it).

use std::path::Path;
use std::process::Command;

/// The script without pgrx's comment lines, blank runs squeezed (as the snapshot script).
fn normalized(script: &str) -> String {
    let mut out = String::new();
    let mut blank = false;
    for line in script.lines() {
        if line.starts_with("--")
            || line.starts_with("/*")
            || line.starts_with('*')
            || line.starts_with(" *")
        {
            continue;
        }
        if line.is_empty() {
            if blank {
                continue;
            }
            blank = true;
        } else {
            blank = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn the_installed_sql_surface_equals_the_committed_copy() {
    let sharedir = Command::new("/usr/lib/postgresql/15/bin/pg_config")
        .arg("--sharedir")
        .output()
        .expect("pg_config");
    let sharedir = String::from_utf8(sharedir.stdout).unwrap();
    let version = pgaudit_siem_tests::extension_version();
    let installed =
        Path::new(sharedir.trim()).join(format!("extension/pgaudit_siem--{version}.sql"));
    let installed = std::fs::read_to_string(&installed)
        .unwrap_or_else(|e| panic!("{}: {e} (install the extension first)", installed.display()));
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/generated/pgaudit_siem.sql"),
    )
    .unwrap();
    let (installed, committed) = (normalized(&installed), normalized(&committed));
    if installed != committed {
        let first = installed
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(installed.lines().count().min(committed.lines().count()));
        let context = |s: &str| {
            s.lines()
                .skip(first.saturating_sub(3))
                .take(8)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "the SQL surface changed (first difference at line {}):\n--- installed\n{}\n--- committed\n{}\nRun `bash scripts/sql-snapshot.sh`, review the diff, and add an upgrade step.",
            first + 1,
            context(&installed),
            context(&committed)
        );
    }
}

#[test]
fn normalization_drops_only_pgrx_comments() {
    let script = "-- src/lib.rs:1\n/* <begin connected objects> */\nCREATE TABLE t (x int);\n\n\n-- x\nSELECT 1;\n";
    assert_eq!(normalized(script), "CREATE TABLE t (x int);\n\nSELECT 1;\n");
}

/// Versions in `sql/`: the frozen install scripts (`pgaudit_siem--A.sql`) and the
/// upgrade steps (`pgaudit_siem--A--B.sql`).
fn sql_scripts() -> (Vec<String>, Vec<(String, String)>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
    let mut frozen = Vec::new();
    let mut steps = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(versions) = name
            .strip_prefix("pgaudit_siem--")
            .and_then(|n| n.strip_suffix(".sql"))
        else {
            continue;
        };
        match versions.split_once("--") {
            Some((from, to)) => steps.push((from.to_owned(), to.to_owned())),
            None => frozen.push(versions.to_owned()),
        }
    }
    (frozen, steps)
}

/// Every released version reaches the current one by upgrade steps, and no step starts
/// from a version that was never frozen (a release whose install script is missing).
/// With operations.rs (which runs each path and compares the schemas), a change of the
/// SQL surface without its upgrade step fails CI.
#[test]
fn every_released_version_has_an_upgrade_path_to_the_current_one() {
    let (frozen, steps) = sql_scripts();
    let current = pgaudit_siem_tests::extension_version();
    assert!(
        !frozen.is_empty(),
        "the released 0.1.0 install script is frozen in sql/"
    );
    assert!(
        !frozen.contains(&current),
        "version {current} has a frozen install script, so it was released: bump the version before changing the SQL surface"
    );
    for (from, to) in &steps {
        assert!(
            frozen.contains(from),
            "upgrade step {from} -> {to} starts from a version without a frozen install script"
        );
    }
    for version in &frozen {
        let mut at = version.clone();
        let mut hops = 0;
        while at != current {
            let next = steps
                .iter()
                .filter(|(from, _)| *from == at)
                .map(|(_, to)| to.clone())
                .next()
                .unwrap_or_else(|| {
                    panic!("no upgrade step from {at} (on the way from {version} to {current})")
                });
            at = next;
            hops += 1;
            assert!(hops < 100, "the upgrade steps from {version} loop");
        }
    }
}
