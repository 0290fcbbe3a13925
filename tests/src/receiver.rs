//! A local SIEM receiver for the demo, the fault tests and the benchmarks.
//!
//! It listens on 127.0.0.1, speaks HTTP/1.1 with keep-alive, and accepts all four
//! delivery formats:
//! - `POST /services/collector/event` (Splunk HEC envelopes, concatenated) and
//!   `GET /services/collector/health/1.0`;
//! - `POST .../_bulk` (OpenSearch bulk; answers per item, 409 for an `_id` seen before);
//! - any other `POST` with `Content-Type: application/x-ndjson` (one event per line);
//! - any other `POST` (one JSON event, or a JSON array of events).
//!
//! Every received event is appended to the output file as one JSON line:
//! `{"received_us": <unix µs>, "format": "...", "event": <the event>}` and kept in memory.
//! Gzip request bodies are decompressed.
//!
//! Faults ([`Faults`]) are set from code or with `POST /_control` (a JSON object with the
//! same field names): answer a status (optionally with `Retry-After`) for the next N
//! requests, hang, drop the connection, delay every answer, fail chosen bulk items,
//! require a header value (else 401).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Fault injection. Counts apply to the next N event requests (not health checks).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Answer this status instead of accepting...
    pub status: Option<u16>,
    /// ...for this many requests (0 = every request while set).
    pub status_count: u64,
    /// Send `Retry-After: <seconds>` with the status.
    pub retry_after: Option<u64>,
    /// Never answer (keep the connection open) while set.
    pub hang: bool,
    /// Close the connection without answering while set.
    pub drop: bool,
    /// Wait this long before every answer.
    pub delay_ms: u64,
    /// OpenSearch bulk: answer this status for items whose event category is...
    pub bulk_item_status: Option<u16>,
    /// ...this one (all items when None).
    pub bulk_item_category: Option<String>,
    /// Refuse (401) requests whose `Authorization` header differs.
    pub require_authorization: Option<String>,
}

impl Faults {
    fn from_json(v: &Value) -> Faults {
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        Faults {
            status: u("status").map(|s| s as u16),
            status_count: u("status_count").unwrap_or(0),
            retry_after: u("retry_after"),
            hang: v.get("hang").and_then(Value::as_bool).unwrap_or(false),
            drop: v.get("drop").and_then(Value::as_bool).unwrap_or(false),
            delay_ms: u("delay_ms").unwrap_or(0),
            bulk_item_status: u("bulk_item_status").map(|s| s as u16),
            bulk_item_category: v
                .get("bulk_item_category")
                .and_then(Value::as_str)
                .map(str::to_owned),
            require_authorization: v
                .get("require_authorization")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }
}

/// One received event.
#[derive(Clone, Debug)]
pub struct Received {
    pub received_us: u64,
    pub format: &'static str,
    pub event: Value,
    /// Request headers (lower-case names) of the request that carried it.
    pub headers: Vec<(String, String)>,
}

struct Shared {
    faults: Mutex<Faults>,
    events: Mutex<Vec<Received>>,
    bulk_ids: Mutex<HashSet<String>>,
    out: Mutex<Option<File>>,
    requests: AtomicU64,
    stop: AtomicBool,
    keep_events: bool,
}

/// A running receiver; stops (and closes its port) when dropped.
pub struct Receiver {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Receiver {
    /// Starts on `port` (0: any free port), appending events to `out` if given.
    pub fn start(port: u16, out: Option<&Path>) -> std::io::Result<Receiver> {
        Self::start_with(port, out, true)
    }

    /// As [`Receiver::start`]; `keep_events = false` keeps only counts in memory (benchmarks).
    pub fn start_with(
        port: u16,
        out: Option<&Path>,
        keep_events: bool,
    ) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let file = match out {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            events: Mutex::new(Vec::new()),
            bulk_ids: Mutex::new(HashSet::new()),
            out: Mutex::new(file),
            requests: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            keep_events,
        });
        let acceptor_shared = shared.clone();
        let acceptor = std::thread::spawn(move || {
            while !acceptor_shared.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s = acceptor_shared.clone();
                        std::thread::spawn(move || serve(stream, s));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Receiver {
            port,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    pub fn events(&self) -> Vec<Received> {
        self.shared.events.lock().unwrap().clone()
    }

    pub fn event_count(&self) -> usize {
        self.shared.events.lock().unwrap().len()
    }

    /// Event requests answered or refused so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes the port; open connections end at their next request.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<HttpRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        method,
        path,
        headers,
        body,
    })
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    extra: &[(&str, String)],
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    // One write: a separate small body write would wait for the client's delayed ACK.
    head.push_str(body);
    stream.write_all(head.as_bytes())?;
    stream.flush()
}

fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        // Wait for the next request, noticing a stop in between.
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            match reader.fill_buf() {
                Ok([]) => return,
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return,
            }
        }
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)));
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        if shared.stop.load(Ordering::Relaxed) {
            // A stopped receiver answers nothing, not even a request already on the wire.
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)));
        if handle(&request, &mut writer, &shared).is_err() {
            return;
        }
    }
}

fn decoded_body(request: &HttpRequest) -> Option<Vec<u8>> {
    if request.header("content-encoding") == Some("gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&request.body[..])
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    } else {
        Some(request.body.clone())
    }
}

/// Answers one request; Err closes the connection.
fn handle(request: &HttpRequest, stream: &mut TcpStream, shared: &Shared) -> std::io::Result<()> {
    if request.path == "/_control" {
        let faults = serde_json::from_slice::<Value>(&request.body)
            .map(|v| Faults::from_json(&v))
            .unwrap_or_default();
        *shared.faults.lock().unwrap() = faults;
        return respond(stream, 200, &[], "{\"ok\":true}");
    }
    let faults = shared.faults.lock().unwrap().clone();
    if let Some(required) = &faults.require_authorization {
        if request.header("authorization") != Some(required.as_str()) {
            let status = if request.path.contains("/services/collector/health") {
                400
            } else {
                401
            };
            return respond(
                stream,
                status,
                &[],
                "{\"text\":\"Invalid token\",\"code\":4}",
            );
        }
    }
    if request.method == "GET" {
        if request.path.contains("/services/collector/health") {
            return respond(
                stream,
                200,
                &[],
                "{\"text\":\"HEC is healthy\",\"code\":17}",
            );
        }
        return respond(stream, 404, &[], "{}");
    }
    shared.requests.fetch_add(1, Ordering::Relaxed);
    if faults.delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(faults.delay_ms));
    }
    if faults.hang {
        // Hold the connection until the fault is cleared or the receiver stops.
        while shared.faults.lock().unwrap().hang && !shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        return Err(std::io::Error::other("hung up"));
    }
    if faults.drop {
        let _ = stream.shutdown(Shutdown::Both);
        return Err(std::io::Error::other("dropped"));
    }
    if let Some(status) = faults.status {
        {
            let mut f = shared.faults.lock().unwrap();
            if f.status_count > 0 {
                f.status_count -= 1;
                if f.status_count == 0 {
                    f.status = None;
                    f.retry_after = None;
                }
            }
        }
        let extra: Vec<(&str, String)> = faults
            .retry_after
            .map(|s| vec![("Retry-After", s.to_string())])
            .unwrap_or_default();
        return respond(stream, status, &extra, "{\"error\":\"injected failure\"}");
    }
    let Some(body) = decoded_body(request) else {
        return respond(stream, 400, &[], "{\"error\":\"bad gzip body\"}");
    };
    let text = String::from_utf8_lossy(&body);
    if request.path.ends_with("/_bulk") {
        return bulk(request, stream, shared, &faults, &text);
    }
    let (format, events): (&'static str, Vec<Value>) = if request
        .path
        .contains("/services/collector")
    {
        let mut envelopes = Vec::new();
        for envelope in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            match envelope {
                Ok(mut e) => {
                    envelopes.push(e.get_mut("event").map(Value::take).unwrap_or(Value::Null))
                }
                Err(_) => {
                    return respond(
                        stream,
                        400,
                        &[],
                        "{\"text\":\"Invalid data format\",\"code\":6}",
                    )
                }
            }
        }
        ("splunk_hec", envelopes)
    } else if request
        .header("content-type")
        .is_some_and(|c| c.contains("ndjson"))
    {
        // Benchmarks (nothing kept, no file) frame and count records but parse only
        // change events, whose row markers they read: a SIEM on another machine would do
        // the parsing, not the database server's two cores.
        let counting = !shared.keep_events && shared.out.lock().unwrap().is_none();
        let mut lines = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if counting && !line.contains("\"data_after\"") {
                if !(line.starts_with('{') && line.ends_with('}')) {
                    return respond(stream, 400, &[], "{\"error\":\"invalid JSON line\"}");
                }
                lines.push(Value::Null);
                continue;
            }
            match serde_json::from_str(line) {
                Ok(v) => lines.push(v),
                Err(_) => return respond(stream, 400, &[], "{\"error\":\"invalid JSON line\"}"),
            }
        }
        ("ndjson", lines)
    } else {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(items)) => ("json", items),
            Ok(v) => ("json", vec![v]),
            Err(_) => return respond(stream, 400, &[], "{\"error\":\"invalid JSON\"}"),
        }
    };
    record(shared, format, events, &request.headers);
    if format == "splunk_hec" {
        respond(stream, 200, &[], "{\"text\":\"Success\",\"code\":0}")
    } else {
        respond(stream, 200, &[], "{\"ok\":true}")
    }
}

fn bulk(
    request: &HttpRequest,
    stream: &mut TcpStream,
    shared: &Shared,
    faults: &Faults,
    text: &str,
) -> std::io::Result<()> {
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let mut items = Vec::new();
    let mut accepted = Vec::new();
    let mut errors = false;
    while let Some(action) = lines.next() {
        let Some(source) = lines.next() else {
            return respond(stream, 400, &[], "{\"error\":\"action without source\"}");
        };
        let id = serde_json::from_str::<Value>(action)
            .ok()
            .and_then(|a| {
                a.get("create")
                    .and_then(|c| c.get("_id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let Ok(event) = serde_json::from_str::<Value>(source) else {
            return respond(stream, 400, &[], "{\"error\":\"invalid source\"}");
        };
        let category = event
            .pointer("/event/category")
            .and_then(Value::as_str)
            .unwrap_or("");
        let injected = faults.bulk_item_status.filter(|_| {
            faults
                .bulk_item_category
                .as_deref()
                .is_none_or(|c| c == category)
        });
        let status = if let Some(status) = injected {
            status
        } else if !shared.bulk_ids.lock().unwrap().insert(id.clone()) {
            409
        } else {
            accepted.push(event);
            201
        };
        errors |= status >= 300;
        items.push(format!(
            "{{\"create\":{{\"_index\":\"audit\",\"_id\":{},\"status\":{status}}}}}",
            Value::String(id)
        ));
    }
    record(shared, "opensearch_bulk", accepted, &request.headers);
    respond(
        stream,
        200,
        &[],
        &format!(
            "{{\"took\":1,\"errors\":{errors},\"items\":[{}]}}",
            items.join(",")
        ),
    )
}

fn record(shared: &Shared, format: &'static str, events: Vec<Value>, headers: &[(String, String)]) {
    let received_us = now_us();
    if let Some(file) = shared.out.lock().unwrap().as_mut() {
        let mut buf = String::new();
        for event in &events {
            buf.push_str(&format!(
                "{{\"received_us\":{received_us},\"format\":\"{format}\",\"event\":{event}}}\n"
            ));
        }
        let _ = file.write_all(buf.as_bytes());
    }
    let mut all = shared.events.lock().unwrap();
    if shared.keep_events {
        all.extend(events.into_iter().map(|event| Received {
            received_us,
            format,
            event,
            headers: headers.to_vec(),
        }));
    } else {
        // Benchmarks keep only receipt times and the event's row marker, not the events.
        all.extend(events.into_iter().map(|event| {
            Received {
                received_us,
                format,
                event: event
                    .pointer("/changes/data_after/0/n")
                    .cloned()
                    .unwrap_or(Value::Null),
                headers: Vec::new(),
            }
        }));
    }
}

/// Reads back a receiver output file (one JSON object per line).
pub fn read_output(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Default output file of the receiver binary.
pub fn default_output() -> PathBuf {
    PathBuf::from("target/siem-receiver/events.ndjson")
}
