//! A local SIEM receiver: accepts json, ndjson, Splunk HEC and OpenSearch bulk requests on
//! 127.0.0.1 and appends every event to a file. Faults are injected with
//! `curl -d '{"status":503,"status_count":3,"retry_after":1}' http://127.0.0.1:PORT/_control`
//! (fields: status, status_count, retry_after, hang, drop, delay_ms, bulk_item_status,
//! bulk_item_category, require_authorization; `{}` clears them).
//!
//! Usage: siem_receiver [--port N] [--out FILE | --count-only]   (defaults: 8089,
//! target/siem-receiver/events.ndjson; `--count-only` keeps nothing, as in benchmarks)

use std::path::PathBuf;

use pgaudit_siem_tests::receiver::{default_output, Receiver};

fn main() {
    let mut port = 8089u16;
    let mut out = Some(default_output());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--out" => out = Some(PathBuf::from(args.next().expect("--out FILE"))),
            "--count-only" => out = None,
            other => {
                eprintln!("unknown argument {other}\nusage: siem_receiver [--port N] [--out FILE | --count-only]");
                std::process::exit(2);
            }
        }
    }
    let receiver = match &out {
        Some(out) => {
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir).expect("create output directory");
            }
            Receiver::start(port, Some(out))
        }
        None => Receiver::start_with(port, None, false),
    }
    .expect("bind 127.0.0.1");
    println!(
        "siem_receiver listening on http://127.0.0.1:{} ({})",
        receiver.port(),
        match &out {
            Some(out) => format!("events appended to {}", out.display()),
            None => "counting only".into(),
        }
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
