//! `pgaudit_siem_verify [--key FILE] FILE...`: checks the hash chain of pgaudit_siem
//! records as a SIEM export or the local receiver holds them (ndjson records, Splunk HEC
//! envelopes, OpenSearch bulk bodies, the receiver's `{"event": ...}` lines, JSON
//! arrays). For each chain (a session-audit stream, or one database's outbox) it reports
//! the first problem of each kind it finds, naming the record: missing (deleted),
//! reordered, altered, inserted (forged), a truncated record at the end of a file;
//! exact redeliveries (same record, at-least-once delivery) are counted, not reported.
//! Exit status: 0 when every chain is whole, 1 when a problem was found, 2 on usage or
//! input errors.
//!
//! The chain code is the extension's own (`src/events/chain.rs`, through the harness crate).

use pgaudit_siem_tests::chain;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use serde_json::Value;

/// One chained record as read.
struct Entry {
    label: String,
    link: chain::Link,
}

impl Entry {
    fn intact(&self) -> bool {
        self.link.computed == self.link.hash
    }
}

fn label(record: &Value, file: &str, line: usize) -> String {
    let name = match (
        record.get("sequence").and_then(Value::as_u64),
        record.get("id"),
    ) {
        (Some(sequence), _) => format!("sequence {sequence}"),
        (None, Some(Value::String(id))) => format!("id {id}"),
        _ => "record".to_owned(),
    };
    format!("{name} ({file}:{line})")
}

/// The records in one line of an export: the record itself, the `event` of an envelope,
/// nothing for a bulk action line, every element of an array.
fn records_in(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.into_iter().flat_map(records_in).collect(),
        Value::Object(mut members) => {
            if members.contains_key("chain") {
                vec![Value::Object(members)]
            } else if let Some(event) = members.remove("event").filter(Value::is_object) {
                records_in(event)
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

struct Report {
    problems: Vec<String>,
    records: usize,
    duplicates: usize,
}

/// Walks one chain in arrival order.
fn check(entries: Vec<Entry>) -> Report {
    let mut report = Report {
        problems: Vec::new(),
        records: entries.len(),
        duplicates: 0,
    };
    let mut entries: Vec<Option<Entry>> = entries.into_iter().map(Some).collect();
    // hash -> (canonical, label) of every record accepted into the chain.
    let mut accepted: HashMap<String, (Vec<u8>, String)> = HashMap::new();
    // (hash, label) of the last two accepted records.
    let mut last: Option<(String, String)> = None;
    let mut before_last: Option<(String, String)> = None;
    let mut i = 0;
    while i < entries.len() {
        let Some(entry) = entries[i].take() else {
            i += 1;
            continue;
        };
        let next_prev = entries
            .get(i + 1)
            .and_then(|e| e.as_ref())
            .map(|e| e.link.prev.clone());
        if let Some((canonical, _)) = accepted.get(&entry.link.hash) {
            if *canonical == entry.link.canonical && entry.intact() {
                report.duplicates += 1;
                i += 1;
                continue;
            }
        }
        let follows = match &last {
            None => true,
            Some((hash, _)) => entry.link.prev == *hash,
        };
        let mut accept = true;
        if !entry.intact() {
            if follows && next_prev.as_deref() != Some(last.as_ref().map_or("", |l| l.0.as_str())) {
                report.problems.push(format!(
                    "altered: {} does not match its hash (its content was changed)",
                    entry.label
                ));
            } else {
                report.problems.push(format!(
                    "inserted: {} does not verify and is not part of the chain (forged)",
                    entry.label
                ));
                accept = false;
            }
        } else if !follows {
            let (last_hash, last_label) = last.clone().expect("follows when there is none");
            if before_last
                .as_ref()
                .is_some_and(|(hash, _)| *hash == entry.link.prev)
            {
                report.problems.push(format!(
                    "inserted: {last_label} is not part of the chain ({} follows the record before it)",
                    entry.label
                ));
            } else if next_prev.as_deref() == Some(last_hash.as_str()) {
                // The next record is this one's predecessor: the two arrived swapped.
                let predecessor = entries[i + 1].take().expect("looked at above");
                report.problems.push(format!(
                    "reordered: {} arrived before {}",
                    entry.label, predecessor.label
                ));
                entries[i + 1] = Some(entry);
                entries[i] = Some(predecessor);
                continue;
            } else if let Some((_, earlier)) = accepted.get(&entry.link.prev) {
                report.problems.push(format!(
                    "reordered: {} follows {earlier}, which is not the record before it",
                    entry.label
                ));
            } else {
                report.problems.push(format!(
                    "missing: the record(s) before {} never arrived (after {last_label})",
                    entry.label
                ));
            }
        }
        if accept {
            accepted.insert(
                entry.link.hash.clone(),
                (entry.link.canonical.clone(), entry.label.clone()),
            );
            before_last = last.take();
            last = Some((entry.link.hash.clone(), entry.label.clone()));
        }
        i += 1;
    }
    report
}

fn main() -> ExitCode {
    let mut key: Option<Vec<u8>> = None;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--key" => {
                let Some(path) = args.next() else {
                    eprintln!("--key needs a file");
                    return ExitCode::from(2);
                };
                match std::fs::read(&path) {
                    Ok(mut k) => {
                        while k.last().is_some_and(|b| b.is_ascii_whitespace()) {
                            k.pop();
                        }
                        key = Some(k);
                    }
                    Err(e) => {
                        eprintln!("{path}: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            "-h" | "--help" => {
                println!("usage: pgaudit_siem_verify [--key FILE] FILE...");
                return ExitCode::SUCCESS;
            }
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        eprintln!("usage: pgaudit_siem_verify [--key FILE] FILE...");
        return ExitCode::from(2);
    }
    let mut chains: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    for file in &files {
        let text = match std::fs::read(file) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) => {
                eprintln!("{file}: {e}");
                return ExitCode::from(2);
            }
        };
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(_) if n + 1 == lines.len() => {
                    problems.push(format!(
                        "truncated: the last record of {file} (line {}) is cut off",
                        n + 1
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("unreadable: {file}:{} is not JSON ({e})", n + 1));
                    continue;
                }
            };
            for record in records_in(value) {
                let name = label(&record, file, n + 1);
                match chain::examine(key.as_deref(), &record) {
                    Ok(link) => {
                        if key.is_none() && record["chain"]["alg"] == "hmac-sha256" {
                            eprintln!(
                                "{name}: the records are keyed (hmac-sha256): pass --key FILE"
                            );
                            return ExitCode::from(2);
                        }
                        chains
                            .entry(link.stream.clone())
                            .or_default()
                            .push(Entry { label: name, link });
                    }
                    Err(e) => problems.push(format!("unchained: {name}: {e}")),
                }
            }
        }
    }
    let mut whole = problems.is_empty();
    for problem in &problems {
        println!("{problem}");
    }
    for (stream, entries) in chains {
        let report = check(entries);
        if report.problems.is_empty() {
            println!(
                "chain {stream}: whole, {} records ({} exact duplicates)",
                report.records - report.duplicates,
                report.duplicates
            );
        } else {
            whole = false;
            for problem in &report.problems {
                println!("chain {stream}: {problem}");
            }
        }
    }
    if whole {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
