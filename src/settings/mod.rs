//! Every setting pgaudit_siem registers, and typed accessors for them.
//!
//! # Invariants
//! - The ten pgAudit 1.7 settings keep pgAudit's names, types, boot values, context
//!   (`PGC_SUSET`), flags (`GUC_NOT_IN_SAMPLE`, plus `GUC_LIST_INPUT` on the two list
//!   settings), descriptions and validation messages, so that `pg_settings` and every
//!   error a user sees are the same as with pgAudit (checked by `pgaudit_compat`).
//! - Audit policy is `PGC_SUSET`: only superusers (or the delegated-configuration path)
//!   can change it, so an audited role cannot silence itself.
//! - `pgaudit.log` and `pgaudit.log_level` are parsed once in their check hooks; the
//!   assign hooks store the parsed value in backend-local atomics, so hot paths never
//!   re-parse or allocate.
//! - The `pgaudit` prefix is reserved: a misspelt `pgaudit.*` name is an error, not a
//!   silently ignored placeholder (pgAudit 1.7 itself does not reserve it; see
//!   `pgaudit_compat/README.md`).

use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, Ordering};

use pgrx::guc::GucSetting;
use pgrx::pg_sys;
use pgrx::prelude::*;

pub mod log_classes;

use log_classes::{self as classes, AuditLogLevel, ClassListError};

/// `pgaudit.log`: classes for session logging. Boot value `none`, as pgAudit.
static LOG: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"none"));
/// `pgaudit.log_catalog`: on, as pgAudit (psql's catalog queries are logged by default).
static LOG_CATALOG: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pgaudit.log_client`: off; audit lines go to the server log only.
static LOG_CLIENT: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pgaudit.log_level`: `log`; only used when `log_client` is on.
static LOG_LEVEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"log"));
/// `pgaudit.log_parameter`: off; parameters may hold personal data.
static LOG_PARAMETER: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pgaudit.log_relation`: off; one line per statement.
static LOG_RELATION: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pgaudit.log_rows`: off; row counts change line order (pgAudit quirk Q5).
static LOG_ROWS: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pgaudit.log_statement`: on; the statement text is the point of an audit trail.
static LOG_STATEMENT: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pgaudit.log_statement_once`: off, as pgAudit.
static LOG_STATEMENT_ONCE: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pgaudit.role`: empty, i.e. no object audit logging.
static ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

/// `pgaudit.featureEnabled`: the master switch (Aiven). Off, so preloading the library
/// changes nothing until an administrator opts in at some scope.
static FEATURE_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `pgaudit.log_max_string_length`: -1 keeps statement and parameter text whole.
static LOG_MAX_STRING_LENGTH: GucSetting<i32> = GucSetting::<i32>::new(-1);
/// `pgaudit.log_nested_statements`: on, as pgAudit (which always logs nested statements).
static LOG_NESTED_STATEMENTS: GucSetting<bool> = GucSetting::<bool>::new(true);

// ---- Change capture (pgaudit_siem.*) ----

/// `pgaudit_siem.max_rows_per_event`: 1000 rows keeps an event well under typical SIEM
/// request limits (Splunk HEC 1 MB default, OpenSearch 100 MB) for ordinary rows.
static MAX_ROWS_PER_EVENT: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `pgaudit_siem.max_event_bytes`: 1 MB, the batch size Vector and Fluent Bit settle on.
static MAX_EVENT_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
/// `pgaudit_siem.retention` (seconds): 7 days of events stay queryable in SQL.
static RETENTION: GucSetting<i32> = GucSetting::<i32>::new(7 * 24 * 3600);
/// Actor and organisation of the current transaction, set by the application with
/// `SET LOCAL` (so they work through transaction-mode poolers).
static ACTOR_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static ACTOR_EMAIL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static ACTOR_FIRST_NAME: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
static ACTOR_LAST_NAME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static ORG_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static ORG_NAME: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static ORG_ALIAS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

// ---- SIEM delivery (pgaudit_siem.delivery_*, reloaded on SIGHUP) ----

/// `pgaudit_siem.delivery_batch_events`: 2000 events of ~500 bytes stay near the 1 MB
/// batches Vector and Fluent Bit use.
static DELIVERY_BATCH_EVENTS: GucSetting<i32> = GucSetting::<i32>::new(2000);
/// `pgaudit_siem.delivery_batch_bytes`: 1 MB (Vector's HEC default, Sumo's recommendation).
static DELIVERY_BATCH_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
/// `pgaudit_siem.delivery_connect_timeout` (ms).
static DELIVERY_CONNECT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(5_000);
/// `pgaudit_siem.delivery_timeout` (ms): 30 s, as Sumo's and most SIEM front ends' own limit.
static DELIVERY_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(30_000);
/// `pgaudit_siem.delivery_retry_base` (ms): the first retry waits 0.5-1 s.
static DELIVERY_RETRY_BASE: GucSetting<i32> = GucSetting::<i32>::new(500);
/// `pgaudit_siem.delivery_retry_max` (ms): backoff never exceeds 60 s (Retry-After may).
static DELIVERY_RETRY_MAX: GucSetting<i32> = GucSetting::<i32>::new(60_000);
/// `pgaudit_siem.delivery_linger` (ms): after a partial batch, wait this long for more
/// events (Vector and Fluent Bit flush every 1 s; 20 ms keeps latency far below targets).
static DELIVERY_LINGER: GucSetting<i32> = GucSetting::<i32>::new(20);
/// `pgaudit_siem.delivery_gzip`: compress request bodies.
static DELIVERY_GZIP: GucSetting<bool> = GucSetting::<bool>::new(false);
/// The session-audit stream (see `events::spool`, `delivery::shipper`).
static SESSION_AUDIT_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static SESSION_AUDIT_FORMAT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"ndjson"));
static SESSION_AUDIT_HEADERS_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
/// `pgaudit_siem.chain_key_file`: the HMAC key of the hash chain (empty: plain SHA-256).
static CHAIN_KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static SESSION_AUDIT_SERVER_LOG: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `pgaudit_siem.log_connections`: connection, failed-authentication and disconnection
/// records in the session-audit stream.
static LOG_CONNECTIONS: GucSetting<bool> = GucSetting::<bool>::new(false);
static SESSION_AUDIT_SPOOL_MAX_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1024);
static SESSION_AUDIT_SEGMENT_SIZE: GucSetting<i32> = GucSetting::<i32>::new(16);
static SESSION_AUDIT_SYNC_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(200);
/// `pgaudit_siem.session_audit_retention` (minutes): shipped records kept for
/// `session_audit_log()`.
static SESSION_AUDIT_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(7 * 24 * 60);
/// `pgaudit_siem.delivery_ca_file`: PEM CA bundle trusted instead of the built-in roots.
static DELIVERY_CA_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// `pgaudit_siem.delivery_client_cert_file` / `_key_file`: mutual TLS.
static DELIVERY_CLIENT_CERT_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
static DELIVERY_CLIENT_KEY_FILE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));
/// `pgaudit_siem.delivery_allowed_hosts`: where the platform lets admins send events
/// (empty: anywhere). Keeps `configure()`/`test_connection()` from being a way to reach
/// internal services from the database host.
static DELIVERY_ALLOWED_HOSTS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));

/// Parsed `pgaudit.log` bitmap, installed by the assign hook.
static LOG_CLASS_BITS: AtomicU32 = AtomicU32::new(classes::NONE);
/// Parsed `pgaudit.log_level` as a PostgreSQL elevel, installed by the assign hook.
static LOG_LEVEL_ELEVEL: AtomicI32 = AtomicI32::new(pg_sys::LOG as i32);

/// Registers every setting. Called once from `_PG_init` in the postmaster.
pub fn init() {
    define_string(
        c"pgaudit.log",
        c"Specifies which classes of statements will be logged by session audit logging. Multiple classes can be provided using a comma-separated list and classes can be subtracted by prefacing the class with a - sign.",
        &LOG,
        LIST_INPUT,
        Some(check_log_classes),
        Some(assign_log_classes),
    );
    define_bool(
        c"pgaudit.log_catalog",
        c"Specifies that session logging should be enabled in the case where all relations in a statement are in pg_catalog.  Disabling this setting will reduce noise in the log from tools like psql and PgAdmin that query the catalog heavily.",
        &LOG_CATALOG,
        Some(record_server_bool::<S_CATALOG>),
    );
    define_bool(
        c"pgaudit.log_client",
        c"Specifies whether audit messages should be visible to the client. This setting should generally be left disabled but may be useful for debugging or other purposes.",
        &LOG_CLIENT,
        None,
    );
    define_string(
        c"pgaudit.log_level",
        c"Specifies the log level that will be used for log entries. This setting is used for regression testing and may also be useful to end users for testing or other purposes.  It is not intended to be used in a production environment as it may leak which statements are being logged to the user.",
        &LOG_LEVEL,
        LIST_INPUT,
        Some(check_log_level),
        Some(assign_log_level),
    );
    define_bool(
        c"pgaudit.log_parameter",
        c"Specifies that audit logging should include the parameters that were passed with the statement. When parameters are present they will be be included in CSV format after the statement text.",
        &LOG_PARAMETER,
        Some(record_server_bool::<S_PARAMETER>),
    );
    define_bool(
        c"pgaudit.log_relation",
        c"Specifies whether session audit logging should create a separate log entry for each relation referenced in a SELECT or DML statement. This is a useful shortcut for exhaustive logging without using object audit logging.",
        &LOG_RELATION,
        Some(record_server_bool::<S_RELATION>),
    );
    define_bool(
        c"pgaudit.log_rows",
        c"Specifies whether logging will include the rows retrieved or affected by a statement.",
        &LOG_ROWS,
        Some(record_server_bool::<S_ROWS>),
    );
    define_bool(
        c"pgaudit.log_statement",
        c"Specifies whether logging will include the statement text and parameters.  Depending on requirements, the full statement text might not be required in the audit log.",
        &LOG_STATEMENT,
        Some(record_server_bool::<S_STATEMENT>),
    );
    define_bool(
        c"pgaudit.log_statement_once",
        c"Specifies whether logging will include the statement text and parameters with the first log entry for a statement/substatement combination or with every entry.  Disabling this setting will result in less verbose logging but may make it more difficult to determine the statement that generated a log entry, though the statement/substatement pair along with the process id should suffice to identify the statement text logged with a previous entry.",
        &LOG_STATEMENT_ONCE,
        Some(record_server_bool::<S_STATEMENT_ONCE>),
    );
    define_string(
        c"pgaudit.role",
        c"Specifies the master role to use for object audit logging.  Multiple audit roles can be defined by granting them to the master role. This allows multiple groups to be in charge of different aspects of audit logging.",
        &ROLE,
        0,
        None,
        None,
    );
    define_bool(
        c"pgaudit.featureEnabled",
        c"Master switch for audit logging: when off, nothing is audit-logged whatever the other pgaudit settings say. Takes effect on new connections when set per database or role.",
        &FEATURE_ENABLED,
        Some(record_server_bool::<S_FEATURE>),
    );
    define_int(
        c"pgaudit.log_max_string_length",
        c"Maximum length in bytes of statement and parameter text in audit lines; longer text is cut on a character boundary and marked as truncated. -1 means unlimited.",
        &LOG_MAX_STRING_LENGTH,
        -1,
        i32::MAX,
    );
    define_bool(
        c"pgaudit.log_nested_statements",
        c"Specifies whether statements nested in functions, procedures, DO blocks and triggers are audit-logged; when off only top-level statements are.",
        &LOG_NESTED_STATEMENTS,
        Some(record_server_bool::<S_NESTED>),
    );
    // SAFETY: called in _PG_init after this prefix's settings are defined; the literal
    // is 'static and NUL-terminated.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"pgaudit".as_ptr()) };
    init_change_capture();
}

fn init_change_capture() {
    use pgrx::guc::{GucContext, GucFlags, GucRegistry};
    GucRegistry::define_int_guc(
        c"pgaudit_siem.max_rows_per_event",
        c"Maximum number of rows in one change-capture event; larger statements are split into parts.",
        c"Every part carries the statement's total processed_row_count, its part number and the part count.",
        &MAX_ROWS_PER_EVENT,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pgaudit_siem.max_event_bytes",
        c"Approximate maximum size of the rows of one change-capture event; larger statements are split into parts.",
        c"",
        &MAX_EVENT_BYTES,
        1024,
        1024 * 1024 * 1024,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"pgaudit_siem.retention",
        c"How long captured events stay in pgaudit_siem.events after they were captured; undelivered events are never removed.",
        c"",
        &RETENTION,
        60,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    for (name, description, setting) in [
        (c"pgaudit_siem.actor_id", c"Application user id recorded as actor.id of change events (SET LOCAL per transaction).", &ACTOR_ID),
        (c"pgaudit_siem.actor_email", c"Application user email recorded as actor.email of change events.", &ACTOR_EMAIL),
        (c"pgaudit_siem.actor_first_name", c"Application user first name recorded in change events.", &ACTOR_FIRST_NAME),
        (c"pgaudit_siem.actor_last_name", c"Application user last name recorded in change events.", &ACTOR_LAST_NAME),
        (c"pgaudit_siem.org_id", c"Organisation id recorded as org.id of change events (SET LOCAL per transaction).", &ORG_ID),
        (c"pgaudit_siem.org_name", c"Organisation name recorded as org.name of change events.", &ORG_NAME),
        (c"pgaudit_siem.org_alias", c"Organisation alias recorded as org.alias of change events.", &ORG_ALIAS),
    ] {
        GucRegistry::define_string_guc(name, description, c"", setting, GucContext::Userset, GucFlags::default());
    }
    init_delivery();
    init_session_audit_stream();
    // SAFETY: after this prefix's settings are defined; 'static literal.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"pgaudit_siem".as_ptr()) };
}

fn init_delivery() {
    use pgrx::guc::{GucContext, GucFlags, GucRegistry};
    let ints: [(&CStr, &CStr, &'static GucSetting<i32>, i32, i32, GucFlags); 7] = [
        (c"pgaudit_siem.delivery_linger", c"After delivering a partial batch, how long the worker waits for more events before reading again.", &DELIVERY_LINGER, 0, 10_000, GucFlags::UNIT_MS),
        (c"pgaudit_siem.delivery_batch_events", c"Maximum number of events the delivery worker sends in one request (batching formats).", &DELIVERY_BATCH_EVENTS, 1, 100_000, GucFlags::default()),
        (c"pgaudit_siem.delivery_batch_bytes", c"Approximate maximum size of one delivery request body; also bounds the worker's memory.", &DELIVERY_BATCH_BYTES, 1024, 256 * 1024 * 1024, GucFlags::UNIT_BYTE),
        (c"pgaudit_siem.delivery_connect_timeout", c"How long the delivery worker waits to connect to the SIEM.", &DELIVERY_CONNECT_TIMEOUT, 100, 600_000, GucFlags::UNIT_MS),
        (c"pgaudit_siem.delivery_timeout", c"How long one delivery request may take in total before it is retried.", &DELIVERY_TIMEOUT, 100, 3_600_000, GucFlags::UNIT_MS),
        (c"pgaudit_siem.delivery_retry_base", c"Smallest delay before retrying a failed delivery (exponential backoff with jitter starts here).", &DELIVERY_RETRY_BASE, 1, 3_600_000, GucFlags::UNIT_MS),
        (c"pgaudit_siem.delivery_retry_max", c"Largest backoff between delivery retries (a longer Retry-After from the SIEM is honoured up to one hour).", &DELIVERY_RETRY_MAX, 1, 3_600_000, GucFlags::UNIT_MS),
    ];
    for (name, description, setting, min, max, flags) in ints {
        GucRegistry::define_int_guc(
            name,
            description,
            c"",
            setting,
            min,
            max,
            GucContext::Sighup,
            flags,
        );
    }
    for (name, description, setting) in [
        (c"pgaudit_siem.delivery_ca_file", c"PEM file of CA certificates trusted for https SIEM endpoints instead of the built-in Mozilla roots.", &DELIVERY_CA_FILE),
        (c"pgaudit_siem.delivery_client_cert_file", c"PEM client certificate (chain) presented to the SIEM for mutual TLS.", &DELIVERY_CLIENT_CERT_FILE),
        (c"pgaudit_siem.delivery_client_key_file", c"PEM private key of the client certificate for mutual TLS.", &DELIVERY_CLIENT_KEY_FILE),
    ] {
        GucRegistry::define_string_guc(name, description, c"", setting, GucContext::Sighup, GucFlags::SUPERUSER_ONLY);
    }
    GucRegistry::define_string_guc(
        c"pgaudit_siem.delivery_allowed_hosts",
        c"Comma-separated host names (or *.domain patterns, or IP addresses) SIEM endpoints may use; empty allows any.",
        c"",
        &DELIVERY_ALLOWED_HOSTS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pgaudit_siem.delivery_gzip",
        c"Compress delivery request bodies with gzip (Content-Encoding: gzip).",
        c"",
        &DELIVERY_GZIP,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

fn init_session_audit_stream() {
    use pgrx::guc::{GucContext, GucFlags, GucRegistry};
    // The platform's integration: superuser only (PGC_SIGHUP), and the URL and headers
    // file are hidden from everybody else (GUC_SUPERUSER_ONLY).
    GucRegistry::define_string_guc(
        c"pgaudit_siem.session_audit_url",
        c"Where the session-audit stream is posted (http or https); empty: no stream.",
        c"",
        &SESSION_AUDIT_URL,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"pgaudit_siem.session_audit_format",
        c"Wire format of the session-audit stream: ndjson, json, splunk_hec or opensearch_bulk.",
        c"",
        &SESSION_AUDIT_FORMAT,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pgaudit_siem.session_audit_headers_file",
        c"File of HTTP header lines (Name: value) sent with the stream; must be readable by the server's OS user only.",
        c"",
        &SESSION_AUDIT_HEADERS_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"pgaudit_siem.chain_key_file",
        c"File holding the HMAC-SHA256 key of the records' hash chain (readable by the server's OS user only); empty: plain SHA-256.",
        c"",
        &CHAIN_KEY_FILE,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_bool_guc(
        c"pgaudit_siem.log_connections",
        c"Records connections, failed authentications and disconnections in the session-audit stream.",
        c"",
        &LOG_CONNECTIONS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pgaudit_siem.session_audit_server_log",
        c"Also write AUDIT lines to the server log while the session-audit stream is on.",
        c"",
        &SESSION_AUDIT_SERVER_LOG,
        GucContext::Sighup,
        GucFlags::default(),
    );
    let ints: [(&CStr, &CStr, &'static GucSetting<i32>, i32, i32, GucFlags); 4] = [
        (c"pgaudit_siem.session_audit_spool_max_size", c"Most unshipped session-audit records kept in the spool; beyond it records go to the server log.", &SESSION_AUDIT_SPOOL_MAX_SIZE, 1, 1024 * 1024, GucFlags::UNIT_MB),
        (c"pgaudit_siem.session_audit_segment_size", c"Size of one spool segment file.", &SESSION_AUDIT_SEGMENT_SIZE, 1, 1024, GucFlags::UNIT_MB),
        (c"pgaudit_siem.session_audit_sync_interval", c"How often the shipper flushes the spool to disk: what an operating-system crash may lose at most.", &SESSION_AUDIT_SYNC_INTERVAL, 10, 60_000, GucFlags::UNIT_MS),
        (c"pgaudit_siem.session_audit_retention", c"How long shipped session-audit records stay in the spool for pgaudit_siem.session_audit_log(); 0 removes them once shipped.", &SESSION_AUDIT_RETENTION, 0, 365 * 24 * 60, GucFlags::UNIT_MIN),
    ];
    for (name, description, setting, min, max, flags) in ints {
        GucRegistry::define_int_guc(
            name,
            description,
            c"",
            setting,
            min,
            max,
            GucContext::Sighup,
            flags,
        );
    }
}

// ---- Registration helpers ----
//
// pgAudit registers its settings with a NULL long description, which pg_settings shows as
// NULL `extra_desc`; pgrx's GucRegistry always passes a string, so these call PostgreSQL
// directly. Every setting here is PGC_SUSET and GUC_NOT_IN_SAMPLE, as in pgAudit.

const LIST_INPUT: u32 = pg_sys::GUC_LIST_INPUT;
const AUDIT_POLICY_CONTEXT: pg_sys::GucContext::Type = pg_sys::GucContext::PGC_SUSET;

fn define_bool(
    name: &'static CStr,
    description: &'static CStr,
    setting: &'static GucSetting<bool>,
    check: pg_sys::GucBoolCheckHook,
) {
    // SAFETY: name/description are 'static C strings; `setting` is a 'static cell that
    // PostgreSQL writes only from this backend's main thread; the check hook only
    // stores into an atomic.
    unsafe {
        pg_sys::DefineCustomBoolVariable(
            name.as_ptr(),
            description.as_ptr(),
            std::ptr::null(),
            setting.as_ptr(),
            *setting.as_ptr(),
            AUDIT_POLICY_CONTEXT,
            pg_sys::GUC_NOT_IN_SAMPLE as i32,
            check,
            None,
            None,
        );
    }
}

fn define_int(
    name: &'static CStr,
    description: &'static CStr,
    setting: &'static GucSetting<i32>,
    min: i32,
    max: i32,
) {
    // SAFETY: as in `define_bool`.
    unsafe {
        pg_sys::DefineCustomIntVariable(
            name.as_ptr(),
            description.as_ptr(),
            std::ptr::null(),
            setting.as_ptr(),
            *setting.as_ptr(),
            min,
            max,
            AUDIT_POLICY_CONTEXT,
            pg_sys::GUC_NOT_IN_SAMPLE as i32,
            Some(record_server_max_string_length),
            None,
            None,
        );
    }
}

fn define_string(
    name: &'static CStr,
    description: &'static CStr,
    setting: &'static GucSetting<Option<CString>>,
    extra_flags: u32,
    check: pg_sys::GucStringCheckHook,
    assign: pg_sys::GucStringAssignHook,
) {
    // SAFETY: as in `define_bool`; the hooks passed here are all `#[pg_guard]`, so no
    // panic or ERROR unwinds through PostgreSQL's frames without being converted.
    unsafe {
        pg_sys::DefineCustomStringVariable(
            name.as_ptr(),
            description.as_ptr(),
            std::ptr::null(),
            setting.as_ptr(),
            *setting.as_ptr(),
            AUDIT_POLICY_CONTEXT,
            (pg_sys::GUC_NOT_IN_SAMPLE | extra_flags) as i32,
            check,
            assign,
            None,
        );
    }
}

/// Allocates a GUC `extra` block the way PostgreSQL 15 frees it (`free`).
///
/// # Safety
/// The caller stores the pointer in `*extra`; PostgreSQL owns and frees it from then on.
unsafe fn guc_extra<T: Copy>(value: T) -> Option<*mut c_void> {
    // SAFETY: malloc of a POD size; checked for NULL before writing.
    let block = unsafe { libc::malloc(std::mem::size_of::<T>()) } as *mut T;
    if block.is_null() {
        return None;
    }
    // SAFETY: `block` is a fresh, suitably aligned allocation of size_of::<T>() bytes.
    unsafe { block.write(value) };
    Some(block.cast())
}

/// Reads a GUC string argument; PostgreSQL passes NUL-terminated text or NULL.
///
/// # Safety
/// `raw` must be NULL or point to a NUL-terminated string that outlives the call.
unsafe fn guc_text<'a>(raw: *const c_char) -> std::borrow::Cow<'a, str> {
    if raw.is_null() {
        return "".into();
    }
    // SAFETY: per the contract above.
    unsafe { CStr::from_ptr(raw) }.to_string_lossy()
}

#[pg_guard]
unsafe extern "C-unwind" fn check_log_classes(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a valid pointer to the candidate value.
    let text = unsafe { guc_text(*newval) };
    match classes::parse_class_list(&text) {
        Ok(bits) => match unsafe { guc_extra(bits) } {
            // SAFETY: `extra` is PostgreSQL's out-parameter for this check call.
            Some(block) => unsafe {
                SERVER_LOG_BITS.record(source, i64::from(bits));
                *extra = block;
                true
            },
            None => false,
        },
        Err(ClassListError::ListSyntax) => {
            // SAFETY: PostgreSQL reads this palloc'd detail after the hook returns false.
            unsafe {
                pg_sys::GUC_check_errdetail_string =
                    pg_sys::pstrdup(c"List syntax is invalid".as_ptr());
            }
            false
        }
        Err(ClassListError::UnknownClass(_)) => false,
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_log_classes(_newval: *const c_char, extra: *mut c_void) {
    if !extra.is_null() {
        // SAFETY: `extra` is the block our check hook allocated for this value.
        LOG_CLASS_BITS.store(unsafe { *(extra as *const u32) }, Ordering::Relaxed);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn check_log_level(
    newval: *mut *mut c_char,
    extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a valid pointer to the candidate value.
    let text = unsafe { guc_text(*newval) };
    let Some(level) = classes::parse_log_level(&text) else {
        return false;
    };
    match unsafe { guc_extra(elevel(level)) } {
        // SAFETY: `extra` is PostgreSQL's out-parameter for this check call.
        Some(block) => unsafe {
            *extra = block;
            true
        },
        None => false,
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn assign_log_level(_newval: *const c_char, extra: *mut c_void) {
    if !extra.is_null() {
        // SAFETY: `extra` is the block our check hook allocated for this value.
        LOG_LEVEL_ELEVEL.store(unsafe { *(extra as *const i32) }, Ordering::Relaxed);
    }
}

fn elevel(level: AuditLogLevel) -> i32 {
    (match level {
        AuditLogLevel::Debug5 => pg_sys::DEBUG5,
        AuditLogLevel::Debug4 => pg_sys::DEBUG4,
        AuditLogLevel::Debug3 => pg_sys::DEBUG3,
        AuditLogLevel::Debug2 => pg_sys::DEBUG2,
        AuditLogLevel::Debug1 => pg_sys::DEBUG1,
        AuditLogLevel::Info => pg_sys::INFO,
        AuditLogLevel::Notice => pg_sys::NOTICE,
        AuditLogLevel::Warning => pg_sys::WARNING,
        AuditLogLevel::Log => pg_sys::LOG,
    }) as i32
}

// ---- The server level, and sessions of delegated admins ----
//
// A pgaudit_admin member configures auditing of others, never of itself: in sessions
// whose login role is a member of pgaudit_admin (directly, through other roles, with or
// without INHERIT, so SET ROLE is covered), the database- and role-level settings a
// delegated admin can change may add auditing but never remove what the server level
// (postgresql.conf, ALTER SYSTEM, the command line, ALTER ROLE ALL, the boot value)
// turns on. The server level is recorded by the check hooks, which PostgreSQL calls for
// every value it applies or reloads, with its source.

const S_FEATURE: usize = 0;
const S_CATALOG: usize = 1;
const S_PARAMETER: usize = 2;
const S_RELATION: usize = 3;
const S_ROWS: usize = 4;
const S_STATEMENT: usize = 5;
const S_STATEMENT_ONCE: usize = 6;
const S_NESTED: usize = 7;

/// One setting's server-level value, kept per source: the boot value, the configuration
/// files (postgresql.conf, ALTER SYSTEM), the command line and ALTER ROLE ALL. The
/// strongest source present wins, as in PostgreSQL: a reload re-checks only the files,
/// so keeping one value would let it overwrite a stronger source's (a command-line or
/// ALTER ROLE ALL value would fall back to the file's in every running admin session).
struct ServerLevel {
    /// By [`server_slot`]; `UNSET` where that source gave no value.
    by_source: [AtomicI64; 4],
}

const UNSET: i64 = i64::MIN;

impl ServerLevel {
    const fn new(boot: i64) -> ServerLevel {
        ServerLevel {
            by_source: [
                AtomicI64::new(boot),
                AtomicI64::new(UNSET),
                AtomicI64::new(UNSET),
                AtomicI64::new(UNSET),
            ],
        }
    }

    /// Records a value a check hook saw; only server-level sources count.
    fn record(&self, source: pg_sys::GucSource::Type, value: i64) {
        let Some(slot) = server_slot(source) else {
            return;
        };
        if slot == 0 {
            // A reset to the default: at definition, or at a reload after the setting
            // left the files (PostgreSQL resets only values the files had set).
            self.by_source[1].store(UNSET, Ordering::Relaxed);
        }
        self.by_source[slot].store(value, Ordering::Relaxed);
    }

    fn get(&self) -> i64 {
        self.by_source
            .iter()
            .rev()
            .map(|v| v.load(Ordering::Relaxed))
            .find(|&v| v != UNSET)
            .unwrap_or(UNSET)
    }
}

/// The slot of a server-level source, weakest first; `None` for database-, role- and
/// session-level sources.
fn server_slot(source: pg_sys::GucSource::Type) -> Option<usize> {
    use pg_sys::GucSource::*;
    match source {
        PGC_S_DEFAULT | PGC_S_DYNAMIC_DEFAULT | PGC_S_ENV_VAR => Some(0),
        PGC_S_FILE => Some(1),
        PGC_S_ARGV => Some(2),
        PGC_S_GLOBAL => Some(3),
        _ => None,
    }
}

/// Server-level values of the boolean settings, by the indices above.
static SERVER_BOOLS: [ServerLevel; 8] = [
    ServerLevel::new(0), // featureEnabled
    ServerLevel::new(1), // log_catalog
    ServerLevel::new(0), // log_parameter
    ServerLevel::new(0), // log_relation
    ServerLevel::new(0), // log_rows
    ServerLevel::new(1), // log_statement
    ServerLevel::new(0), // log_statement_once
    ServerLevel::new(1), // log_nested_statements
];
static SERVER_LOG_BITS: ServerLevel = ServerLevel::new(classes::NONE as i64);
static SERVER_MAX_STRING_LENGTH: ServerLevel = ServerLevel::new(-1);

fn server_bool(index: usize) -> bool {
    SERVER_BOOLS[index].get() != 0
}

/// `session`, or on for an admin session when the server level says on.
fn at_least(session: bool, index: usize) -> bool {
    session || (server_bool(index) && admin_session())
}

// These hooks only record and accept (the value's type was checked by PostgreSQL); they
// cannot panic or raise an ERROR, so they need no guard.
unsafe extern "C-unwind" fn record_server_bool<const I: usize>(
    newval: *mut bool,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a valid pointer to the candidate value.
    SERVER_BOOLS[I].record(source, i64::from(unsafe { *newval }));
    true
}

unsafe extern "C-unwind" fn record_server_max_string_length(
    newval: *mut i32,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a valid pointer to the candidate value.
    SERVER_MAX_STRING_LENGTH.record(source, i64::from(unsafe { *newval }));
    true
}

thread_local! {
    /// Whether this session's login role can act as a pgaudit_admin member; `None` until
    /// looked up, and again after any change to roles or memberships.
    static ADMIN_SESSION: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether this is a delegated admin's session (login role is a pgaudit_admin member).
/// Outside a transaction, where the catalog cannot be read, it answers yes (more
/// auditing) without caching.
fn admin_session() -> bool {
    if let Some(known) = ADMIN_SESSION.with(Cell::get) {
        return known;
    }
    // SAFETY: reads of transaction state, then syscache-backed role lookups inside a
    // transaction; missing_ok for the role.
    unsafe {
        if !pg_sys::IsTransactionState() {
            return true;
        }
        let known = crate::pg::admin::could_act_as_admin(pg_sys::GetSessionUserId());
        ADMIN_SESSION.with(|c| c.set(Some(known)));
        known
    }
}

/// Roles or memberships changed: look the session's admin status up again.
pub fn forget_admin_session() {
    ADMIN_SESSION.with(|c| c.set(None));
}

// ---- Typed accessors ----

/// Reads a boolean setting without pgrx's per-read thread check: these accessors run in
/// hooks on every statement, always on the backend's single thread.
fn fast_bool(setting: &GucSetting<bool>) -> bool {
    // SAFETY: PostgreSQL writes the cell only from this (single-threaded) backend, and
    // never while a hook reads it.
    unsafe { *setting.as_ptr() }
}

/// Whether audit logging applies to this session at all (`pgaudit.featureEnabled`).
pub fn feature_enabled() -> bool {
    fast_bool(&FEATURE_ENABLED) || (server_bool(S_FEATURE) && admin_session())
}

/// The effective class bitmap: the `pgaudit.log` bitmap when the master switch is on,
/// otherwise nothing; for delegated admins' sessions at least the server level's.
pub fn log_classes() -> u32 {
    let session = if fast_bool(&FEATURE_ENABLED) {
        LOG_CLASS_BITS.load(Ordering::Relaxed)
    } else {
        classes::NONE
    };
    let server = if server_bool(S_FEATURE) {
        SERVER_LOG_BITS.get() as u32
    } else {
        classes::NONE
    };
    if server & !session != 0 && admin_session() {
        session | server
    } else {
        session
    }
}

/// The elevel for audit lines: `pgaudit.log_level` when `log_client` is on, else
/// `LOG_SERVER_ONLY` (never sent to the client).
pub fn audit_elevel() -> i32 {
    if fast_bool(&LOG_CLIENT) {
        LOG_LEVEL_ELEVEL.load(Ordering::Relaxed)
    } else {
        pg_sys::LOG_SERVER_ONLY as i32
    }
}

pub fn log_catalog() -> bool {
    at_least(fast_bool(&LOG_CATALOG), S_CATALOG)
}
pub fn log_parameter() -> bool {
    at_least(fast_bool(&LOG_PARAMETER), S_PARAMETER)
}
pub fn log_relation() -> bool {
    at_least(fast_bool(&LOG_RELATION), S_RELATION)
}
pub fn log_rows() -> bool {
    at_least(fast_bool(&LOG_ROWS), S_ROWS)
}
pub fn log_statement() -> bool {
    at_least(fast_bool(&LOG_STATEMENT), S_STATEMENT)
}
pub fn log_statement_once() -> bool {
    // "once" logs less: an admin session gets it only if the server level has it too.
    fast_bool(&LOG_STATEMENT_ONCE) && (server_bool(S_STATEMENT_ONCE) || !admin_session())
}
pub fn log_nested_statements() -> bool {
    at_least(fast_bool(&LOG_NESTED_STATEMENTS), S_NESTED)
}
/// `pgaudit.log_max_string_length` as a byte limit, `None` when unlimited.
pub fn log_max_string_length() -> Option<usize> {
    // SAFETY: as in `fast_bool`.
    let session = usize::try_from(unsafe { *LOG_MAX_STRING_LENGTH.as_ptr() }).ok();
    let Some(limit) = session else {
        return None;
    };
    // A shorter limit than the server level's is a weakening; -1 (unlimited) is the most.
    match usize::try_from(SERVER_MAX_STRING_LENGTH.get()).ok() {
        Some(server) if server <= limit => Some(limit),
        server if admin_session() => server.map(|s| s.max(limit)),
        _ => Some(limit),
    }
}
/// `pgaudit.role` without allocating; `None` when empty.
pub fn audit_role_name() -> Option<&'static CStr> {
    let raw = ROLE.as_ptr();
    // SAFETY: the GUC machinery keeps the current value alive until the next assignment,
    // and this backend is single-threaded, so no assignment happens while it is borrowed
    // by the caller within one hook invocation.
    let value = unsafe { *raw };
    if value.is_null() {
        return None;
    }
    // SAFETY: non-NULL GUC string values are NUL-terminated.
    let name = unsafe { CStr::from_ptr(value) };
    (!name.is_empty()).then_some(name)
}

/// `pgaudit_siem.max_rows_per_event`.
pub fn max_rows_per_event() -> usize {
    MAX_ROWS_PER_EVENT.get().max(1) as usize
}

/// `pgaudit_siem.max_event_bytes`.
pub fn max_event_bytes() -> usize {
    MAX_EVENT_BYTES.get().max(1) as usize
}

/// Files for TLS to the receiver: a private CA bundle (PEM) to trust, and a client
/// certificate and key for mutual TLS (QRadar's HTTP receiver, for one, requires it).
/// Empty strings: not used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
}

/// Delivery settings, read once per batch.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    pub batch_events: usize,
    pub batch_bytes: usize,
    pub connect_timeout: std::time::Duration,
    pub timeout: std::time::Duration,
    pub retry_base: std::time::Duration,
    pub retry_max: std::time::Duration,
    pub gzip: bool,
    pub tls: TlsFiles,
    pub allowed_hosts: String,
    pub linger: std::time::Duration,
}

pub fn delivery() -> DeliverySettings {
    let ms = |s: &GucSetting<i32>| std::time::Duration::from_millis(s.get().max(1) as u64);
    DeliverySettings {
        batch_events: DELIVERY_BATCH_EVENTS.get().max(1) as usize,
        batch_bytes: DELIVERY_BATCH_BYTES.get().max(1) as usize,
        connect_timeout: ms(&DELIVERY_CONNECT_TIMEOUT),
        timeout: ms(&DELIVERY_TIMEOUT),
        retry_base: ms(&DELIVERY_RETRY_BASE),
        retry_max: ms(&DELIVERY_RETRY_MAX),
        gzip: DELIVERY_GZIP.get(),
        allowed_hosts: text_setting(&DELIVERY_ALLOWED_HOSTS),
        linger: std::time::Duration::from_millis(DELIVERY_LINGER.get().max(0) as u64),
        tls: TlsFiles {
            ca_file: text_setting(&DELIVERY_CA_FILE),
            client_cert_file: text_setting(&DELIVERY_CLIENT_CERT_FILE),
            client_key_file: text_setting(&DELIVERY_CLIENT_KEY_FILE),
        },
    }
}

fn text_setting(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// (id, email, first name, last name) of the application user, empty when unset.
pub fn actor() -> (String, String, String, String) {
    (
        text_setting(&ACTOR_ID),
        text_setting(&ACTOR_EMAIL),
        text_setting(&ACTOR_FIRST_NAME),
        text_setting(&ACTOR_LAST_NAME),
    )
}

/// (id, name, alias) of the organisation, empty when unset.
pub fn org() -> (String, String, String) {
    (
        text_setting(&ORG_ID),
        text_setting(&ORG_NAME),
        text_setting(&ORG_ALIAS),
    )
}

/// The session-audit stream's settings, as this process sees them now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStreamSettings {
    pub url: String,
    pub format: String,
    pub headers_file: String,
    pub spool_max_bytes: u64,
    pub segment_bytes: u64,
    pub sync_interval: std::time::Duration,
    pub retention: std::time::Duration,
}

/// Whether connection records go to the stream (`log_connections` and a stream URL).
pub fn log_connections() -> bool {
    fast_bool(&LOG_CONNECTIONS) && session_stream_enabled()
}

/// Whether AUDIT records go to the stream (an URL is set).
pub fn session_stream_enabled() -> bool {
    // SAFETY: a plain read of the setting's C string pointer on the backend's thread.
    let url = unsafe { *SESSION_AUDIT_URL.as_ptr() };
    // SAFETY: a non-NULL value is a NUL-terminated string owned by the GUC machinery.
    !url.is_null() && unsafe { *url } != 0
}

/// The spool's size limits in bytes (maximum unshipped, one segment), for the per-record
/// path (no allocation).
pub fn session_stream_limits() -> (u64, u64) {
    let mb = |s: &GucSetting<i32>| s.get().max(1) as u64 * 1024 * 1024;
    (
        mb(&SESSION_AUDIT_SPOOL_MAX_SIZE),
        mb(&SESSION_AUDIT_SEGMENT_SIZE),
    )
}

/// Whether AUDIT lines also go to the server log.
pub fn session_stream_server_log() -> bool {
    fast_bool(&SESSION_AUDIT_SERVER_LOG)
}

/// `pgaudit_siem.chain_key_file` (empty when unset).
pub fn chain_key_file() -> String {
    text_setting(&CHAIN_KEY_FILE)
}

pub fn session_stream() -> SessionStreamSettings {
    let mb = |s: &GucSetting<i32>| s.get().max(1) as u64 * 1024 * 1024;
    SessionStreamSettings {
        url: text_setting(&SESSION_AUDIT_URL),
        format: text_setting(&SESSION_AUDIT_FORMAT),
        headers_file: text_setting(&SESSION_AUDIT_HEADERS_FILE),
        spool_max_bytes: mb(&SESSION_AUDIT_SPOOL_MAX_SIZE),
        segment_bytes: mb(&SESSION_AUDIT_SEGMENT_SIZE),
        sync_interval: std::time::Duration::from_millis(
            SESSION_AUDIT_SYNC_INTERVAL.get().max(10) as u64
        ),
        retention: std::time::Duration::from_secs(SESSION_AUDIT_RETENTION.get().max(0) as u64 * 60),
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn feature_switch_gates_the_class_bitmap() -> Result<(), spi::Error> {
        Spi::run("SET pgaudit.log = 'read, write'")?;
        Spi::run("SET pgaudit.featureEnabled = off")?;
        assert_eq!(super::log_classes(), 0);
        Spi::run("SET pgaudit.featureEnabled = on")?;
        assert_eq!(
            super::log_classes(),
            super::log_classes::READ | super::log_classes::WRITE
        );
        Ok(())
    }

    #[pg_test(error = "invalid value for parameter \"pgaudit.log\": \"read, bogus\"")]
    fn unknown_class_is_refused() {
        Spi::run("SET pgaudit.log = 'read, bogus'").unwrap();
    }

    #[pg_test]
    fn max_string_length_defaults_to_unlimited() {
        assert_eq!(super::log_max_string_length(), None);
        assert!(super::log_nested_statements());
        assert!(!super::feature_enabled());
    }

    #[test]
    fn the_strongest_server_source_wins_and_a_reload_cannot_overwrite_it() {
        use pgrx::pg_sys::GucSource::*;
        let level = super::ServerLevel::new(0);
        level.record(PGC_S_FILE, 1);
        level.record(PGC_S_GLOBAL, 5);
        // A reload re-checks the file: ALTER ROLE ALL's value stays in force.
        level.record(PGC_S_FILE, 2);
        assert_eq!(level.get(), 5);
        // Database, role and session values are not the server level.
        level.record(PGC_S_DATABASE, 9);
        level.record(PGC_S_SESSION, 9);
        assert_eq!(level.get(), 5);
        let level = super::ServerLevel::new(0);
        level.record(PGC_S_ARGV, 3);
        level.record(PGC_S_FILE, 2);
        assert_eq!(level.get(), 3);
        // The file's value, then the setting removed from the file: the boot value.
        let level = super::ServerLevel::new(7);
        level.record(PGC_S_FILE, 2);
        assert_eq!(level.get(), 2);
        level.record(PGC_S_DEFAULT, 7);
        assert_eq!(level.get(), 7);
    }

    #[pg_test(error = "invalid configuration parameter name \"pgaudit.bogus\"")]
    fn prefix_is_reserved() {
        Spi::run("SET pgaudit.bogus = 1").unwrap();
    }
}
