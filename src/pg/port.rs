//! The client connection as PostgreSQL knows it before and after authentication
//! (`MyProcPort`, `struct Port` of libpq-be.h), and the ClientAuthentication hook, which
//! pgrx does not bind.
//!
//! # Invariants
//! - `struct Port` is mirrored only up to `ssl_in_use`, for PostgreSQL 15 (the only
//!   major this extension builds for); the offsets below were taken from the server
//!   headers (`offsetof`) and are checked at compile time against this mirror, and at
//!   run time by a `#[pg_test]` that compares the names with the session's.
//! - Only plain reads: strings are copied out at once (PostgreSQL owns them), NULL
//!   pointers (background workers, fields not set) read as `None`.

use std::ffi::{c_char, c_int, c_void, CStr};

use pgrx::pg_sys;

/// `struct Port` of PostgreSQL 15, up to `ssl_in_use`.
#[repr(C)]
struct Port15 {
    _sock_noblock_proto_laddr: [u8; 152],
    _raddr: [u8; 136],
    remote_host: *const c_char,
    _remote_hostname: *const c_char,
    _remote_hostname_resolv: c_int,
    _remote_hostname_errcode: c_int,
    remote_port: *const c_char,
    _can_accept_connections: c_int,
    database_name: *const c_char,
    user_name: *const c_char,
    _cmdline_options: *const c_char,
    _guc_options: *mut pg_sys::List,
    application_name: *const c_char,
    hba: *const u8,
    _authn_id: *const c_char,
    _keepalives_and_timeouts: [c_int; 8],
    _gss: *mut c_void,
    ssl_in_use: bool,
}

// offsetof(Port, ...) in PostgreSQL 15.
const _: () = {
    assert!(std::mem::offset_of!(Port15, remote_host) == 288);
    assert!(std::mem::offset_of!(Port15, remote_port) == 312);
    assert!(std::mem::offset_of!(Port15, database_name) == 328);
    assert!(std::mem::offset_of!(Port15, user_name) == 336);
    assert!(std::mem::offset_of!(Port15, application_name) == 360);
    assert!(std::mem::offset_of!(Port15, hba) == 368);
    assert!(std::mem::offset_of!(Port15, ssl_in_use) == 424);
};

/// offsetof(HbaLine, auth_method) in PostgreSQL 15.
const HBA_AUTH_METHOD_OFFSET: usize = 320;

/// `UserAuth` of PostgreSQL 15, as pg_hba.conf spells the methods.
const AUTH_METHODS: [&str; 15] = [
    "reject",
    "implicit reject",
    "trust",
    "ident",
    "password",
    "md5",
    "scram-sha-256",
    "gss",
    "sspi",
    "pam",
    "bsd",
    "ldap",
    "cert",
    "radius",
    "peer",
];

/// What the client connection says about itself.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// The role name the client asked for (not checked yet before authentication).
    pub user_name: String,
    pub database_name: String,
    /// From the startup packet.
    pub application_name: String,
    pub remote_host: String,
    pub remote_port: Option<u16>,
    /// The pg_hba.conf method chosen, once a line matched.
    pub auth_method: Option<&'static str>,
    pub ssl: bool,
}

fn text(raw: *const c_char) -> String {
    if raw.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL Port strings are NUL-terminated and live as long as the Port.
    unsafe { CStr::from_ptr(raw) }
        .to_string_lossy()
        .into_owned()
}

/// Reads `port` (a `Port *` from PostgreSQL, or NULL).
///
/// # Safety
/// `port` must be NULL or PostgreSQL's `Port` of this backend.
pub unsafe fn read(port: *const c_void) -> Option<Connection> {
    if port.is_null() {
        return None;
    }
    // SAFETY: per the contract, `port` points to a PostgreSQL 15 Port, which starts with
    // the mirrored prefix; `hba` is NULL or a parsed HbaLine.
    unsafe {
        let port = &*(port as *const Port15);
        let auth_method = if port.hba.is_null() {
            None
        } else {
            let method =
                std::ptr::read_unaligned(port.hba.add(HBA_AUTH_METHOD_OFFSET) as *const c_int);
            usize::try_from(method)
                .ok()
                .and_then(|m| AUTH_METHODS.get(m).copied())
        };
        Some(Connection {
            user_name: text(port.user_name),
            database_name: text(port.database_name),
            application_name: text(port.application_name),
            remote_host: text(port.remote_host),
            remote_port: text(port.remote_port).parse().ok(),
            auth_method,
            ssl: port.ssl_in_use,
        })
    }
}

/// This backend's connection (`None` in background workers and other processes).
pub fn current() -> Option<Connection> {
    // SAFETY: MyProcPort is NULL or this backend's Port.
    unsafe { read(pg_sys::MyProcPort as *const c_void) }
}

/// `void (*ClientAuthentication_hook)(Port *, int status)`.
pub type ClientAuthenticationHook = Option<unsafe extern "C-unwind" fn(*mut c_void, c_int)>;

unsafe extern "C" {
    /// libpq/auth.h (not bound by pgrx).
    pub static mut ClientAuthentication_hook: ClientAuthenticationHook;
}

/// `STATUS_OK` of c.h.
pub const STATUS_OK: c_int = 0;

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn the_port_mirror_reads_this_sessions_connection() {
        let connection = super::current().expect("a client backend has a Port");
        let (user, database) =
            Spi::get_two::<String, String>("SELECT session_user::text, current_database()::text")
                .unwrap();
        assert_eq!(Some(connection.user_name), user);
        assert_eq!(Some(connection.database_name), database);
    }
}
