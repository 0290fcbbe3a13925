//! Membership of `pgaudit_admin`, the role of delegated admins: one definition for the
//! Rust checks and, through `pgaudit_siem._acts_as_admin(oid)`, for the SQL ones.
//!
//! # Invariants
//! - *Acting as* an admin (may manage capture, configure others) needs the privileges of
//!   `pgaudit_admin` (membership with INHERIT, or being it): PostgreSQL's
//!   `has_privs_of_role`, `pg_has_role(..., 'USAGE')` in SQL. Superusers act as admins.
//! - *Could act as* an admin (its sessions get the server-level floor) is any
//!   membership, with or without INHERIT, because SET ROLE reaches it:
//!   `is_member_of_role_nosuper`.
//! - Without a `pgaudit_admin` role nobody is a delegated admin.

use pgrx::pg_sys;
use pgrx::prelude::*;

/// The name of the delegated admins' role.
pub const ADMIN_ROLE: &std::ffi::CStr = c"pgaudit_admin";

fn admin_oid() -> pg_sys::Oid {
    // SAFETY: a syscache lookup; missing_ok.
    unsafe { pg_sys::get_role_oid(ADMIN_ROLE.as_ptr(), true) }
}

/// Whether `role` has the privileges of `pgaudit_admin` (superusers do).
pub fn acts_as_admin(role: pg_sys::Oid) -> bool {
    let admin = admin_oid();
    // SAFETY: catalog lookups with valid oids.
    admin != pg_sys::InvalidOid && unsafe { pg_sys::has_privs_of_role(role, admin) }
}

/// Whether `role` is a member of `pgaudit_admin` in any way (superuser status aside).
pub fn could_act_as_admin(role: pg_sys::Oid) -> bool {
    let admin = admin_oid();
    // SAFETY: catalog lookups with valid oids.
    admin != pg_sys::InvalidOid
        && role != pg_sys::InvalidOid
        && unsafe { pg_sys::is_member_of_role_nosuper(role, admin) }
}

/// Whether the current user may act as a delegated admin (or is a superuser).
pub fn current_user_acts_as_admin() -> bool {
    // SAFETY: plain reads of the current user.
    unsafe { pg_sys::superuser() || acts_as_admin(pg_sys::GetUserId()) }
}

/// `pgaudit_siem._acts_as_admin(role)`: [`acts_as_admin`] for the extension's SQL.
#[pg_extern(name = "_acts_as_admin", stable, parallel_safe)]
fn acts_as_admin_sql(role: pg_sys::Oid) -> bool {
    acts_as_admin(role)
}
