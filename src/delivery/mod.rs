//! SIEM delivery: a background worker per database posts the outbox's events to an HTTP
//! endpoint (generic JSON webhook, NDJSON, Splunk HEC, OpenSearch bulk), at least once,
//! in transaction order, with retries and a dead-letter table.
//!
//! - [`source`]: what the worker ships from (ordered batches, acknowledged);
//!   [`outbox`]: the per-database outbox as a source.
//! - Wire formats, transport and retry policy are the shared `sinks` layer.
//! - [`shmem`]: the registry of workers and the commit-time wake-ups.
//! - [`launcher`]: one static worker that starts a delivery worker in each database
//!   where the extension is installed.
//! - [`worker`]: the delivery loop.
//! - This file: the SQL surface (`configure`, `enable`, `disable`, `test_connection`,
//!   `settings`, `stats`, `dead_letter`, `requeue_dead_letter`) and the utility-hook
//!   rules for DROP DATABASE / DROP EXTENSION.
//!
//! # Invariants
//! - Delivery order is the outbox order `(xid, seq)`, `xid` being the order key of
//!   `events::order` (the writer's transaction id, or the horizon when it registered if
//!   that is later): a transaction's events become deliverable once every writer of this
//!   outbox with a smaller key has finished, so the delivery cursor never passes an
//!   event that could still commit, and transactions that wrote no events hold nothing
//!   back. Each transaction's events are delivered in statement order.
//! - The cursor (`delivery_state.last_xid, last_seq`) only moves after the SIEM answered
//!   2xx for every forwarded event up to it (or the event was dead-lettered), in a
//!   transaction of its own; a crash anywhere re-sends, never skips.
//! - Header values are readable only by the extension owner: `settings`, events and
//!   error texts show them masked.
//! - Backends never talk to the SIEM (except `test_connection()`, bounded by the
//!   configured timeouts): writers only set a flag that wakes the worker at commit.

pub mod error;
pub mod launcher;
pub mod outbox;
pub mod session_stream;
pub mod shmem;
pub mod source;
pub mod worker;

pub use shmem::at_transaction_event;

use crate::sinks::{self, http};
use error::DeliveryError;

use std::time::Duration;

use pgrx::pg_sys;
use pgrx::prelude::*;

pub fn init() {
    shmem::init();
    crate::events::spool::init();
    crate::events::order::init();
    launcher::register();
    session_stream::register();
}

extension_sql_file!(
    "../../sql/delivery.sql",
    name = "delivery",
    requires = [
        "change_capture",
        events::order::inserted_by_extension,
        send_test_event,
        validate_siem_config,
        start_delivery_at_commit,
        worker_pid,
        session_stream::session_audit_stats
    ],
);

fn invalid(message: &str, hint: &str) -> ! {
    DeliveryError::InvalidValue { message, hint }.raise()
}

/// Why a URL cannot be used; the URL itself is never echoed (it may carry secrets).
/// The hash chain's key (`pgaudit_siem.chain_key_file`): `None` without a file (plain
/// SHA-256). The file must be private to the server's OS user; errors never quote it.
pub fn chain_key() -> Result<Option<Vec<u8>>, String> {
    use std::os::unix::fs::MetadataExt;
    let path = crate::settings::chain_key_file();
    if path.is_empty() {
        return Ok(None);
    }
    let meta = std::fs::metadata(&path).map_err(|e| format!("pgaudit_siem.chain_key_file: {e}"))?;
    if meta.mode() & 0o077 != 0 {
        return Err(
            "pgaudit_siem.chain_key_file must not be accessible to group or others (chmod 600)"
                .into(),
        );
    }
    let mut key = std::fs::read(&path).map_err(|e| format!("pgaudit_siem.chain_key_file: {e}"))?;
    while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
        key.pop();
    }
    if key.len() < 16 {
        return Err("pgaudit_siem.chain_key_file must hold a key of at least 16 bytes".into());
    }
    Ok(Some(key))
}

pub fn url_problem(url: &str) -> Option<&'static str> {
    if url.len() > 2048 {
        return Some("the URL is longer than 2048 bytes");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("the URL contains whitespace or control characters");
    }
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return Some("the URL cannot be parsed");
    };
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Some("the URL scheme must be http or https"),
    }
    let Some(authority) = uri.authority() else {
        return Some("the URL has no host");
    };
    if authority.as_str().contains('@') {
        return Some("credentials in the URL are not accepted");
    }
    if authority.host().is_empty() {
        return Some("the URL has no host");
    }
    None
}

/// Whether `url`'s host is in `allowed` (comma-separated host names, `*.domain`
/// patterns or IP addresses, case-insensitive; empty allows every host).
pub fn host_allowed(url: &str, allowed: &str) -> bool {
    if allowed.trim().is_empty() {
        return true;
    }
    let Some(host) = url.parse::<ureq::http::Uri>().ok().and_then(|u| {
        u.host().map(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        })
    }) else {
        return false;
    };
    allowed
        .split(',')
        .map(|p| {
            p.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        })
        .any(|pattern| match pattern.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => !pattern.is_empty() && host == pattern,
        })
}

/// Whether `url` names a forbidden address literally (the connection would be refused
/// anyway: say so when it is configured).
fn literal_address_forbidden(url: &str, allowed: &str) -> bool {
    url.parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| {
            u.host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        })
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| !http::address_allowed(ip, allowed))
}

fn refuse_host_not_allowed() -> ! {
    DeliveryError::HostNotAllowed.raise()
}

/// Why a header cannot be sent, if it cannot.
pub fn header_problem(name: &str, value: &serde_json::Value) -> Option<String> {
    let Some(value) = value.as_str() else {
        return Some(format!(
            "the value of header \"{name}\" must be a JSON string"
        ));
    };
    if ureq::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Some("a header name is not a valid HTTP token".to_owned());
    }
    let lower = name.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "content-encoding"
            | "content-type"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
    ) {
        return Some(format!("header \"{name}\" is set by pgaudit_siem itself"));
    }
    if ureq::http::HeaderValue::from_str(value).is_err() {
        return Some(format!(
            "the value of header \"{name}\" contains characters HTTP headers cannot carry"
        ));
    }
    None
}

#[pg_extern(name = "_validate_siem_config", volatile, parallel_unsafe)]
fn validate_siem_config(
    url: Option<&str>,
    headers: Option<pgrx::JsonB>,
    categories: Option<Vec<Option<String>>>,
    format: Option<&str>,
) {
    let Some(url) = url else {
        invalid(
            "the SIEM endpoint URL must not be NULL",
            "Pass an http:// or https:// URL.",
        );
    };
    if let Some(problem) = url_problem(url) {
        invalid(
            &format!("invalid SIEM endpoint URL: {problem}"),
            "Pass an http:// or https:// URL; put credentials in headers.",
        );
    }
    let allowed = crate::settings::delivery().allowed_hosts;
    if !host_allowed(url, &allowed) || literal_address_forbidden(url, &allowed) {
        refuse_host_not_allowed();
    }
    if let Some(pgrx::JsonB(headers)) = headers {
        let Some(object) = headers.as_object() else {
            invalid(
                "headers must be a JSON object",
                "Example: '{\"Authorization\": \"Bearer <token>\"}'",
            );
        };
        for (name, value) in object {
            if let Some(problem) = header_problem(name, value) {
                invalid(
                    &format!("invalid SIEM header: {problem}"),
                    "Header names are HTTP tokens; values are strings without line breaks.",
                );
            }
        }
    }
    if let Some(categories) = categories {
        if categories.is_empty() {
            invalid("categories must not be empty", "Pass NULL to forward every category, or call pgaudit_siem.disable() to forward none.");
        }
        if categories
            .iter()
            .any(|c| c.as_deref().is_none_or(str::is_empty))
        {
            invalid(
                "categories must not contain NULL or empty names",
                "Pass the category names used by pgaudit_siem.track().",
            );
        }
    }
    let format = format.unwrap_or("");
    if sinks::by_name(format).is_none() {
        invalid(
            &format!("unknown SIEM format \"{format}\""),
            &format!("Supported formats: {}.", sinks::names()),
        );
    }
}

/// Parses stored headers (a JSON object of strings) into name/value pairs.
pub fn header_pairs(headers: &serde_json::Value) -> Vec<(String, String)> {
    headers
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Turns a reply into (ok, status, error text) for `test_connection()`.
fn judge_test_reply(reply: &http::Outcome, endpoint: &str) -> (bool, Option<i32>, Option<String>) {
    match reply {
        http::Outcome::Response { status, body, .. } => {
            let status = *status;
            if (200..300).contains(&status) {
                (true, Some(status as i32), None)
            } else {
                let kind = if status == 401 || status == 403 {
                    http::FailureKind::Authentication
                } else {
                    http::FailureKind::Http
                };
                let excerpt: String = http::excerpt(body).chars().take(200).collect();
                (
                    false,
                    Some(status as i32),
                    Some(format!(
                        "{}: HTTP {status} from {endpoint}: {excerpt}",
                        kind.label()
                    )),
                )
            }
        }
        http::Outcome::Failed { kind, message } => {
            (false, None, Some(format!("{}: {message}", kind.label())))
        }
    }
}

#[pg_extern(name = "_send_test_event", volatile, parallel_unsafe)]
fn send_test_event(
    url: &str,
    headers: Option<pgrx::JsonB>,
    format: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(ok, bool),
        name!(http_status, Option<i32>),
        name!(latency_ms, f64),
        name!(error, Option<String>),
    ),
> {
    validate_siem_config(
        Some(url),
        headers.as_ref().map(|h| pgrx::JsonB(h.0.clone())),
        None,
        format.or(Some("json")),
    );
    // Validated above: a missing format means the default, json.
    let sink = sinks::by_name(format.unwrap_or("json")).unwrap_or(&sinks::json::Json);
    let headers = headers.map(|h| header_pairs(&h.0)).unwrap_or_default();
    let settings = crate::settings::delivery();
    // A test must answer quickly even when the configured request timeout is long.
    let timeout = settings.timeout.min(Duration::from_secs(10));
    let connect_timeout = settings.connect_timeout.min(timeout);
    let endpoint = http::endpoint_label(url);
    let request = |method, url: String, body: Vec<u8>| http::Request {
        method,
        url,
        headers: headers.clone(),
        content_type: sink.content_type(),
        body,
        gzip: settings.gzip && method == "POST",
        connect_timeout,
        timeout,
        tls: settings.tls.clone(),
        allowed_hosts: settings.allowed_hosts.clone(),
    };
    let started = std::time::Instant::now();
    let mut result = None;
    {
        if let Some(health) = sink.health_check_url(url) {
            let reply = http::post_once(&request("GET", health, Vec::new()));
            match reply.outcome {
                http::Outcome::Response {
                    status: status @ (400 | 401 | 403),
                    ..
                } => {
                    result = Some((false, Some(status as i32), Some(format!("authentication: the HEC health check answered HTTP {status} (invalid or disabled token) from {endpoint}"))));
                }
                http::Outcome::Failed { .. } => {
                    result = Some(judge_test_reply(&reply.outcome, &endpoint))
                }
                _ => {}
            }
        }
    }
    let (ok, status, error) = result.unwrap_or_else(|| {
        let now = crate::events::time::now_unix_micros();
        let id = crate::events::id::next_id(now).to_string();
        let (timestamp, database) = (
            crate::events::time::rfc3339_utc(now),
            crate::pg::names::database(),
        );
        let event = sinks::Event {
            xid: 0,
            seq: 0,
            id: id.clone(),
            category: "pgaudit_siem_test".into(),
            epoch_seconds: 0.0,
            payload: sinks::test_event(&id, &timestamp, &database),
        };
        let origin = sinks::Origin {
            host: worker::host_name(),
            source: format!("pgaudit_siem:{database}"),
        };
        let body = sinks::encode(sink, &[&event], &origin);
        let reply = http::post_once(&request("POST", url.to_owned(), body));
        judge_test_reply(&reply.outcome, &endpoint)
    });
    let latency_ms = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    TableIterator::once((ok, status, latency_ms, error))
}

/// The pid of this database's delivery worker, if it runs (from shared memory, so it is
/// visible to admins who may not see other sessions in pg_stat_activity).
#[pg_extern(name = "_worker_pid", volatile, parallel_safe)]
fn worker_pid() -> Option<i32> {
    // SAFETY: plain read of a process-global.
    let dboid = unsafe { pg_sys::MyDatabaseId }.to_u32();
    shmem::worker_pid(dboid)
}

/// Marks the installing transaction so the launcher starts a worker when it commits.
#[pg_extern(name = "_start_delivery_at_commit", volatile, parallel_unsafe)]
fn start_delivery_at_commit() {
    crate::events::wake::launcher_must_rescan();
}

/// What PostgreSQL will require of the statement before it touches the database, so
/// that a statement it refuses leaves the worker alone.
#[derive(Clone, Copy)]
enum Needs {
    /// DROP DATABASE: owner, outside a transaction block, not the current database.
    Drop,
    /// ALTER DATABASE ... RENAME: owner with CREATEDB, not the current database.
    Rename,
    /// ALTER DATABASE ... SET TABLESPACE: owner, outside a transaction block.
    Move,
    /// CREATE DATABASE ... TEMPLATE: CREATEDB, and the template is a template or owned.
    Copy,
}

/// Whether PostgreSQL's own checks for `needs` pass for the current user on `dboid`.
/// `top_level`: the statement came from the client, not from a function or DO block.
fn postgres_would_allow(dboid: pg_sys::Oid, needs: Needs, top_level: bool) -> bool {
    // SAFETY: catalog lookups and reads of transaction state for the current user.
    unsafe {
        let user = pg_sys::GetUserId();
        let owner = pg_sys::pg_database_ownercheck(dboid, user);
        let current = dboid == pg_sys::MyDatabaseId;
        // PreventInTransactionBlock's conditions: a transaction block (implicit ones of
        // multi-statement queries included), a subtransaction, a function or DO block,
        // an extended-protocol pipeline.
        let in_block = pg_sys::IsTransactionBlock()
            || pg_sys::IsSubTransaction()
            || !top_level
            || pg_sys::MyXactFlags & pg_sys::XACT_FLAGS_PIPELINING as i32 != 0;
        match needs {
            Needs::Drop => owner && !current && !in_block,
            Needs::Rename => owner && !current && pg_sys::have_createdb_privilege(),
            Needs::Move => owner && !current && !in_block,
            Needs::Copy => {
                let is_template = crate::pg::syscache::with_row(
                    pg_sys::SysCacheIdentifier::DATABASEOID,
                    dboid.into(),
                    0.into(),
                    // SAFETY: the DATABASEOID cache covers pg_database.
                    |row| row.form::<pg_sys::FormData_pg_database>().datistemplate,
                )
                .unwrap_or(false);
                !in_block && pg_sys::have_createdb_privilege() && (owner || is_template)
            }
        }
    }
}

/// Stops the delivery worker of database `name` (if any) before a statement that needs
/// the database to itself, once PostgreSQL's own checks would let the statement run.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string from the parse tree.
unsafe fn stop_worker_of(
    name: *const std::ffi::c_char,
    needs: Needs,
    top_level: bool,
    hold: Duration,
) {
    if name.is_null() {
        return;
    }
    // SAFETY: a catalog lookup by name; missing databases are left to PostgreSQL.
    let dboid = unsafe { pg_sys::get_database_oid(name, true) };
    if dboid != pg_sys::InvalidOid && postgres_would_allow(dboid, needs, top_level) {
        shmem::stop_worker_for(dboid.to_u32(), hold, Duration::from_secs(4));
    }
}

/// The string value of option `name` in a statement's DefElem list, if given.
///
/// # Safety
/// `options` is NULL or a List of DefElem nodes from the parse tree.
unsafe fn option_value(
    options: *mut pg_sys::List,
    name: &std::ffi::CStr,
) -> Option<*const std::ffi::c_char> {
    pgrx::PgList::<pg_sys::DefElem>::from_pg(options)
        .iter_ptr()
        .find_map(|def| {
            // SAFETY: DefElem nodes of this statement; `arg` is checked to be a String node
            // (TEMPLATE = DEFAULT and similar forms carry no name).
            unsafe {
                let def = &*def;
                if def.defname.is_null() || std::ffi::CStr::from_ptr(def.defname) != name {
                    return None;
                }
                let arg = def.arg;
                (!arg.is_null() && (*arg).type_ == pg_sys::NodeTag::T_String)
                    .then(|| (*(arg as *mut pg_sys::String)).sval as *const std::ffi::c_char)
            }
        })
}

/// Called from the utility hook before a statement runs; `top_level`: ProcessUtility's
/// context is `PROCESS_UTILITY_TOPLEVEL`.
///
/// # Safety
/// `utility` must be the statement's valid parse node, as the utility hook receives it.
pub unsafe fn before_utility(utility: *mut pg_sys::Node, top_level: bool) {
    // SAFETY: node tags identify the statement types whose fields are read below.
    unsafe {
        match (*utility).type_ {
            // These wait up to 5 s for other sessions of the database to end and fail
            // otherwise: our worker leaves first. A restarted worker waits on the
            // statement's database lock, so a short hold suffices except for DROP.
            pg_sys::NodeTag::T_DropdbStmt => {
                let stmt = &*(utility as *mut pg_sys::DropdbStmt);
                stop_worker_of(stmt.dbname, Needs::Drop, top_level, Duration::from_secs(30));
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = &*(utility as *mut pg_sys::RenameStmt);
                if stmt.renameType == pg_sys::ObjectType::OBJECT_DATABASE {
                    stop_worker_of(
                        stmt.subname,
                        Needs::Rename,
                        top_level,
                        Duration::from_secs(5),
                    );
                }
            }
            pg_sys::NodeTag::T_AlterDatabaseStmt => {
                let stmt = &*(utility as *mut pg_sys::AlterDatabaseStmt);
                if option_value(stmt.options, c"tablespace").is_some() {
                    stop_worker_of(stmt.dbname, Needs::Move, top_level, Duration::from_secs(5));
                }
            }
            pg_sys::NodeTag::T_CreatedbStmt => {
                let stmt = &*(utility as *mut pg_sys::CreatedbStmt);
                if let Some(template) = option_value(stmt.options, c"template") {
                    stop_worker_of(template, Needs::Copy, top_level, Duration::from_secs(5));
                }
                // A copy of a database with the extension needs its own worker now, not
                // at the launcher's next rescan.
                crate::events::wake::launcher_must_rescan();
            }
            pg_sys::NodeTag::T_DropStmt => {
                let stmt = &*(utility as *mut pg_sys::DropStmt);
                if stmt.removeType == pg_sys::ObjectType::OBJECT_EXTENSION {
                    // The worker notices the extension is gone once this commits.
                    crate::events::wake::worker_must_recheck();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_match_names_patterns_and_addresses() {
        let allowed = "siem.example.com, *.corp.example ,127.0.0.1,[::1]";
        assert!(host_allowed("https://siem.example.com/x", ""));
        assert!(host_allowed("https://SIEM.example.com:8088/x", allowed));
        assert!(host_allowed("https://hec.eu.corp.example/x", allowed));
        assert!(!host_allowed("https://corp.example/x", allowed));
        assert!(!host_allowed("https://evilcorp.example/x", allowed));
        assert!(!host_allowed(
            "https://siem.example.com.evil.net/x",
            allowed
        ));
        assert!(host_allowed("http://127.0.0.1:9/x", allowed));
        assert!(host_allowed("http://[::1]:9/x", allowed));
        assert!(!host_allowed(
            "http://169.254.169.254/latest/meta-data",
            allowed
        ));
    }

    #[test]
    fn metadata_and_link_local_addresses_need_an_explicit_allowance() {
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00:ec2::254]/latest",
            "http://[fe80::1]/x",
            "http://[::ffff:169.254.169.254]/x",
            "http://100.100.100.200/x",
            "http://0.0.0.0:8088/x",
        ] {
            assert!(literal_address_forbidden(url, ""), "{url}");
        }
        assert!(!literal_address_forbidden(
            "http://169.254.169.254/x",
            "169.254.169.254"
        ));
        assert!(!literal_address_forbidden("http://127.0.0.1:9/x", ""));
        assert!(!literal_address_forbidden("http://10.1.2.3/x", ""));
        assert!(!literal_address_forbidden("https://siem.example.com/x", ""));
    }

    #[test]
    fn urls_are_checked_without_echoing_them() {
        assert_eq!(
            url_problem("https://siem.example.com/services/collector"),
            None
        );
        assert_eq!(
            url_problem("ftp://x/"),
            Some("the URL scheme must be http or https")
        );
        assert_eq!(
            url_problem("https://u:p@x/"),
            Some("credentials in the URL are not accepted")
        );
        assert!(url_problem("https:///x").is_some());
    }
}
