//! The structured record of one AUDIT line, for the session-audit stream: built where
//! the line is built, from the same fields, and appended to the spool
//! (`events::spool`).
//!
//! # Invariants
//! - `line` is byte for byte what the server log shows after `AUDIT: `.
//! - The record is written as two halves around its `sequence`, which the spool assigns
//!   under its lock; nothing else in it depends on the order of writers.
//! - Identity comes from PostgreSQL (roles, database, client address and port, backend
//!   start, transaction id, system identifier, recovery state), never from the client.
//! - No catalog access outside a transaction: names fall back to empty strings there.

use std::cell::RefCell;

use pgrx::pg_sys;

use super::format::{self, Line};
use crate::events::envelope::{self, Order};
use crate::events::{id, json, spool, time};
use crate::pg::{names, port};
use crate::settings;

/// The largest line a record carries: a longer one (a multi-megabyte statement) goes to
/// the server log only, counted as a fallback, so that neither the backend nor the
/// shipper ever holds an unbounded record (Rust cannot turn an allocation failure into
/// an ERROR). JSON escaping can make the record up to six times the line, twice over.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Buffers larger than this are freed after use instead of kept for the next record.
const RETAINED_BUFFER_BYTES: usize = 64 * 1024;

thread_local! {
    /// Reused halves of the record (bounded by one line plus fixed fields).
    static HALVES: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// What the session knows about itself, gathered once per backend.
struct SessionFacts {
    client_addr: Option<String>,
    client_port: Option<u16>,
    session_id: String,
    backend_start: String,
    cluster: String,
    host: String,
}

thread_local! {
    static FACTS: RefCell<Option<SessionFacts>> = const { RefCell::new(None) };
}

fn facts<R>(f: impl FnOnce(&SessionFacts) -> R) -> R {
    // During authentication the status entry has no client address yet: do not keep
    // what is read then.
    // SAFETY: plain read of a process global.
    if unsafe { pg_sys::ClientAuthInProgress } {
        return f(&gather_facts());
    }
    FACTS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let facts = cell.get_or_insert_with(gather_facts);
        f(facts)
    })
}

fn gather_facts() -> SessionFacts {
    {
        {
            // SAFETY: process globals set at backend start; MyProcPort is NULL in
            // background workers, its strings are NUL-terminated when present.
            unsafe {
                let (client_addr, client_port) = match client_socket() {
                    Some(addr) => (Some(addr.ip().to_string()), Some(addr.port())),
                    // Before the status entry is filled (authentication): the Port's.
                    None => match port::current() {
                        Some(c) if !c.remote_host.is_empty() && c.remote_port.is_some() => {
                            (Some(c.remote_host), c.remote_port)
                        }
                        _ => (None, None),
                    },
                };
                SessionFacts {
                    client_addr,
                    client_port,
                    // log_line_prefix %c: start time and pid in hex.
                    session_id: {
                        let (start, pid) = (pg_sys::MyStartTime, pg_sys::MyProcPid);
                        format!("{start:x}.{pid:x}")
                    },
                    backend_start: time::rfc3339_utc(
                        pg_sys::MyStartTimestamp + time::POSTGRES_EPOCH_UNIX_MICROS,
                    ),
                    cluster: pg_sys::GetSystemIdentifier().to_string(),
                    host: names::host(),
                }
            }
        }
    }
}

/// The client's TCP address, from the backend's status entry (`None` for Unix sockets
/// and background workers), as `inet_client_addr()`/`inet_client_port()` show it.
fn client_socket() -> Option<std::net::SocketAddr> {
    // SAFETY: MyBEEntry is this backend's own status entry (or NULL); the address was
    // stored at connection time with its length, and is read according to its family.
    unsafe {
        let entry = pg_sys::MyBEEntry;
        if entry.is_null() {
            return None;
        }
        let storage = &(*entry).st_clientaddr.addr as *const _ as *const libc::sockaddr_storage;
        match i32::from((*storage).ss_family) {
            libc::AF_INET => {
                let v4 = &*(storage as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                Some(std::net::SocketAddr::new(
                    ip.into(),
                    u16::from_be(v4.sin_port),
                ))
            }
            libc::AF_INET6 => {
                let v6 = &*(storage as *const libc::sockaddr_in6);
                let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
                Some(std::net::SocketAddr::new(
                    ip.into(),
                    u16::from_be(v6.sin6_port),
                ))
            }
            _ => None,
        }
    }
}

fn push_bytes_or_null(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => json::push_string(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// Names need the catalog: only inside a transaction.
fn in_transaction() -> bool {
    // SAFETY: reads transaction state.
    unsafe { pg_sys::IsTransactionState() }
}

/// Appends the record of `line` (`text` is the complete `AUDIT: ...` message) to the
/// spool. `Err` when the spool refused it: the caller writes the line to the server log.
pub fn spool(
    line: &Line<'_>,
    text: &[u8],
    max_string_length: Option<usize>,
) -> Result<u64, spool::Refused> {
    if text.len() > MAX_LINE_BYTES {
        spool::refuse_too_large();
        return Err(spool::Refused::TooLarge);
    }
    let Some(identity) = spool::identity() else {
        return Err(spool::Refused::Broken);
    };
    let who = Who::in_transaction();
    let action = String::from_utf8_lossy(line.command).to_ascii_lowercase();
    let (statement, parameter) = format::statement_fields(&line.statement, max_string_length);
    let audit = |out: &mut Vec<u8>| {
        // Members in name order (the record is written in canonical form).
        out.extend_from_slice(b",\"audit\":{\"class\":");
        json::push_string(out, line.class.as_bytes());
        out.extend_from_slice(b",\"command\":");
        json::push_string(out, line.command);
        out.extend_from_slice(b",\"object_name\":");
        push_bytes_or_null(out, line.object_name);
        out.extend_from_slice(b",\"object_type\":");
        push_bytes_or_null(out, line.object_type);
        out.extend_from_slice(b",\"parameter\":");
        json::push_string(out, &parameter);
        out.extend_from_slice(b",\"rows\":");
        match line.rows {
            Some(rows) => push_integer(out, rows),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"statement\":");
        push_bytes_or_null(out, statement.as_deref());
        out.extend_from_slice(b",\"statement_id\":");
        push_integer(out, line.statement_id);
        out.extend_from_slice(b",\"substatement_id\":");
        push_integer(out, line.substatement_id);
        out.extend_from_slice(if line.object_audit {
            b",\"type\":\"OBJECT\"}"
        } else {
            b",\"type\":\"SESSION\"}"
        });
    };
    let text = text.strip_prefix(b"AUDIT: ").unwrap_or(text);
    spool_record(identity, &action, &who, audit, LineMember::Text(text))
}

/// Appends an integer without allocating.
pub fn push_integer(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Whose session a record describes.
pub struct Who {
    pub database: String,
    pub session_user: String,
    pub current_user: String,
    pub application_name: String,
}

thread_local! {
    /// Names seen in a healthy transaction: (database, (session user oid, name),
    /// (current user oid, name)), for records built where the catalog cannot be read.
    static KNOWN_NAMES: RefCell<(String, (u32, String), (u32, String))> =
        const { RefCell::new((String::new(), (0, String::new()), (0, String::new()))) };
}

impl Who {
    /// From the catalog inside a transaction (remembered for [`Who::without_catalog`]),
    /// empty outside one.
    pub fn in_transaction() -> Who {
        // SAFETY: the setting's NUL-terminated value, or NULL.
        let application_name = unsafe { names::cstr_or_empty(pg_sys::application_name) };
        if !in_transaction() {
            return Who {
                database: String::new(),
                session_user: String::new(),
                current_user: String::new(),
                application_name,
            };
        }
        // SAFETY: plain reads of the session's role ids; syscache lookups in a transaction.
        let (session_oid, current_oid) =
            unsafe { (pg_sys::GetSessionUserId(), pg_sys::GetUserId()) };
        let who = Who {
            database: names::database(),
            session_user: names::role(session_oid),
            current_user: names::role(current_oid),
            application_name,
        };
        KNOWN_NAMES.with(|k| {
            let mut known = k.borrow_mut();
            let (database, session, current) = &mut *known;
            // Names are cached per backend (`names`): copied only when they change.
            if *database != who.database {
                *database = who.database.clone();
            }
            if session.0 != session_oid.to_u32() || session.1 != who.session_user {
                *session = (session_oid.to_u32(), who.session_user.clone());
            }
            if current.0 != current_oid.to_u32() || current.1 != who.current_user {
                *current = (current_oid.to_u32(), who.current_user.clone());
            }
        });
        who
    }

    /// Without catalog access (while an error is reported, during authentication): names
    /// remembered from earlier records, else the connection's own (login role, database).
    pub fn without_catalog() -> Who {
        let connection = port::current().unwrap_or_default();
        // SAFETY: plain reads of the session's role ids and a setting.
        let (session_oid, current_oid, application_name) = unsafe {
            (
                pg_sys::GetSessionUserId().to_u32(),
                pg_sys::GetUserId().to_u32(),
                names::cstr_or_empty(pg_sys::application_name),
            )
        };
        KNOWN_NAMES.with(|k| {
            let (database, (s_oid, s_name), (c_oid, c_name)) = &*k.borrow();
            let session_user = if *s_oid == session_oid && session_oid != 0 {
                s_name.clone()
            } else {
                connection.user_name.clone()
            };
            let current_user = if current_oid == *c_oid && current_oid != 0 {
                c_name.clone()
            } else if current_oid == session_oid || current_oid == 0 {
                session_user.clone()
            } else {
                String::new()
            };
            Who {
                database: if database.is_empty() {
                    connection.database_name.clone()
                } else {
                    database.clone()
                },
                session_user,
                current_user,
                application_name: if application_name.is_empty() {
                    connection.application_name.clone()
                } else {
                    application_name
                },
            }
        })
    }
}

/// The `line` member of a record: the AUDIT line, `null`, or none at all.
pub enum LineMember<'a> {
    Absent,
    Null,
    Text(&'a [u8]),
}

/// Builds one record of `action` about `who` and appends it to the spool. The record is
/// written in its canonical (RFC 8785) form, members in name order at every level, so
/// the shipper hashes it for the chain as it is: `before_event` writes the record's own
/// members whose names sort before `event` (`audit`, `connection`, `error`), each as
/// `,"name":value`, in name order; `line` comes between `id` and `org`.
pub fn spool_record(
    identity: spool::StreamIdentity,
    action: &str,
    who: &Who,
    before_event: impl FnOnce(&mut Vec<u8>),
    line: LineMember<'_>,
) -> Result<u64, spool::Refused> {
    let (spool_max_bytes, segment_bytes) = settings::session_stream_limits();
    HALVES.with(|halves| {
        let mut halves = halves.borrow_mut();
        let (head, tail) = &mut *halves;
        head.clear();
        tail.clear();
        let now = time::now_unix_micros();
        head.extend_from_slice(b"{\"actor\":");
        envelope::push_actor(head, &who.session_user, Order::Sorted);
        before_event(head);
        head.extend_from_slice(b",\"event\":");
        envelope::push_event(head, "session_audit", action, Order::Sorted);
        push_id(head, id::next_id(now));
        match line {
            LineMember::Absent => {}
            LineMember::Null => head.extend_from_slice(b",\"line\":null"),
            LineMember::Text(text) => {
                head.extend_from_slice(b",\"line\":");
                json::push_string(head, text);
            }
        }
        head.extend_from_slice(b",\"org\":");
        envelope::push_org(head, &who.database, Order::Sorted);
        head.extend_from_slice(b",\"sequence\":");
        // SAFETY: reads the top-level transaction id, if one was assigned.
        let xid = unsafe { pg_sys::GetTopFullTransactionIdIfAny() }.value;
        // SAFETY: plain reads of process globals.
        let (pid, standby) = unsafe { (pg_sys::MyProcPid, pg_sys::RecoveryInProgress()) };
        facts(|f| {
            tail.extend_from_slice(b",\"session\":{\"application_name\":");
            json::push_string(tail, who.application_name.as_bytes());
            tail.extend_from_slice(b",\"backend_start\":");
            json::push_string(tail, f.backend_start.as_bytes());
            tail.extend_from_slice(b",\"client_addr\":");
            push_bytes_or_null(tail, f.client_addr.as_deref().map(str::as_bytes));
            tail.extend_from_slice(b",\"client_port\":");
            match f.client_port {
                Some(p) => push_integer(tail, p),
                None => tail.extend_from_slice(b"null"),
            }
            tail.extend_from_slice(b",\"current_user\":");
            json::push_string(tail, who.current_user.as_bytes());
            tail.extend_from_slice(b",\"database\":");
            json::push_string(tail, who.database.as_bytes());
            tail.extend_from_slice(b",\"pid\":");
            push_integer(tail, pid);
            tail.extend_from_slice(b",\"session_id\":");
            json::push_string(tail, f.session_id.as_bytes());
            tail.extend_from_slice(b",\"session_user\":");
            json::push_string(tail, who.session_user.as_bytes());
            tail.extend_from_slice(b",\"transaction_id\":");
            if xid == 0 {
                tail.extend_from_slice(b"null");
            } else {
                push_integer(tail, xid);
            }
            tail.extend_from_slice(b"},\"source\":{\"cluster\":");
            json::push_string(tail, f.cluster.as_bytes());
            tail.extend_from_slice(b",\"host\":");
            json::push_string(tail, f.host.as_bytes());
            tail.extend_from_slice(b",\"role\":");
            json::push_string(tail, if standby { b"standby" } else { b"primary" });
            tail.extend_from_slice(b",\"stream\":\"");
            tail.extend_from_slice(
                uuid::Uuid::from_bytes(identity.stream_id)
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    .as_bytes(),
            );
            tail.extend_from_slice(b"\"}");
        });
        push_timestamp_and_close(tail, now);
        let result = spool::append(
            head,
            tail,
            spool_max_bytes,
            segment_bytes,
            |count, since| overflow_record(count, since, &who.database, &who.session_user),
        );
        // One huge statement must not keep its buffers alive for the whole session.
        for buffer in [head, tail] {
            if buffer.capacity() > RETAINED_BUFFER_BYTES {
                *buffer = Vec::new();
            }
        }
        result
    })
}

/// `,"id":"<uuid>"`.
fn push_id(out: &mut Vec<u8>, id: uuid::Uuid) {
    out.extend_from_slice(b",\"id\":\"");
    out.extend_from_slice(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer())
            .as_bytes(),
    );
    out.push(b'"');
}

/// `,"timestamp":"…"}`: the last member, which closes the record.
fn push_timestamp_and_close(out: &mut Vec<u8>, unix_micros: i64) {
    out.extend_from_slice(b",\"timestamp\":");
    json::push_string(out, time::rfc3339_utc(unix_micros).as_bytes());
    out.push(b'}');
}

/// The record that tells the SIEM `count` records went to the server log instead
/// (canonical form, as [`spool_record`]).
fn overflow_record(
    count: u64,
    since: i64,
    database: &str,
    session_user: &str,
) -> (Vec<u8>, Vec<u8>) {
    let now = time::now_unix_micros();
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"{\"actor\":");
    envelope::push_actor(&mut head, session_user, Order::Sorted);
    head.extend_from_slice(b",\"event\":");
    envelope::push_event(&mut head, "session_audit", "spool_overflow", Order::Sorted);
    push_id(&mut head, id::next_id(now));
    head.extend_from_slice(b",\"org\":");
    envelope::push_org(&mut head, database, Order::Sorted);
    head.extend_from_slice(b",\"overflow\":{\"records_in_server_log\":");
    push_integer(&mut head, count);
    head.extend_from_slice(b",\"since\":");
    json::push_string(&mut head, time::rfc3339_utc(since).as_bytes());
    head.extend_from_slice(b",\"until\":");
    json::push_string(&mut head, time::rfc3339_utc(now).as_bytes());
    head.extend_from_slice(b"},\"sequence\":");
    let mut tail = Vec::with_capacity(48);
    push_timestamp_and_close(&mut tail, now);
    (head, tail)
}
