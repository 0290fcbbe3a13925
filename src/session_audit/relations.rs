//! The SELECT/DML relation pass (pgAudit's `log_select_dml`): session lines for
//! statements with relations, one line per relation with `log_relation`, and object
//! audit lines through `pgaudit.role`.
//!
//! # Invariants
//! - Range-table entries that are not relations, or that require no permission
//!   (partitions the planner added, a view's NEW placeholder), are skipped (pgAudit 1.7.1+).
//! - The whole pass stops unless the session user is a member of the current user, so
//!   security-definer bodies and RI queries of other owners stay hidden (pgAudit).
//! - Object audit considers only SELECT/INSERT/UPDATE/DELETE granted to the audit role,
//!   directly or through roles whose privileges it has; grants to PUBLIC never count; a
//!   NULL ACL means no grant. Column ACLs are consulted only when the relation ACL fails.
//! - The object name stays valid after the pass (pgAudit freed it and could print
//!   garbage later: behaviour spec quirk Q8).

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::PgList;

use super::emit;
use super::stack::{self, StackId};
use crate::pg::syscache::with_row;
use crate::settings;
use pg_sys::SysCacheIdentifier::{ATTNUM, RELOID};

/// PostgreSQL functions that cannot raise an ERROR, declared without pgrx's per-call
/// `sigsetjmp` guard for this per-statement path.
mod unguarded {
    use pgrx::pg_sys;

    unsafe extern "C-unwind" {
        pub fn GetUserId() -> pg_sys::Oid;
        pub fn GetSessionUserId() -> pg_sys::Oid;
    }
}

const ACL_INSERT: u32 = pg_sys::ACL_INSERT;
const ACL_SELECT: u32 = pg_sys::ACL_SELECT;
const ACL_UPDATE: u32 = pg_sys::ACL_UPDATE;
const ACL_DELETE: u32 = pg_sys::ACL_DELETE;

/// Runs the pass for the event `id` over `range_table`.
pub fn log_select_dml(id: StackId, audit_oid: pg_sys::Oid, range_table: *mut pg_sys::List) {
    if crate::pg::internal::active() {
        return;
    }
    let mut first = true;
    let mut found = false;
    // SAFETY: `range_table` is the executor's List of RangeTblEntry pointers, alive for
    // the duration of the permission check (or, deferred, until ExecutorEnd).
    let rtes = unsafe { PgList::<pg_sys::RangeTblEntry>::from_pg(range_table) };
    for rte in rtes.iter_ptr() {
        // SAFETY: every element of a range table is a valid RangeTblEntry.
        let rte = unsafe { &*rte };
        if rte.rtekind != pg_sys::RTEKind::RTE_RELATION || rte.requiredPerms == 0 {
            continue;
        }
        found = true;
        // SAFETY: the user ids are plain reads (no ERROR possible, so called unguarded);
        // is_member_of_role is a cached catalog lookup.
        if !unsafe {
            pg_sys::is_member_of_role(unguarded::GetSessionUserId(), unguarded::GetUserId())
        } {
            return;
        }
        let rel_oid = rte.relid;
        // SAFETY: syscache lookup; returns InvalidOid for a vanished relation.
        let namespace = unsafe { pg_sys::get_rel_namespace(rel_oid) };
        if !settings::log_catalog() && namespace == pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE)
        {
            continue;
        }
        stack::with_event(id, |e| e.granted = false);
        if first && !settings::log_relation() {
            emit::log_event(id);
            first = false;
        }
        let (level, node_tag, command) = command_from_permissions(rte);
        let object_name = qualified_relation_name(namespace, rel_oid);
        let granted = audit_oid != pg_sys::InvalidOid && audit_on_rte(rte, rel_oid, audit_oid);
        stack::with_event(id, |e| {
            e.log_level = level;
            e.node_tag = node_tag;
            e.command = command;
            e.object_type = Some(object_type(rte.relkind as u8).as_bytes().into());
            e.object_name = object_name;
            e.granted = granted;
        });
        if granted {
            stack::with_event(id, |e| e.logged = false);
            emit::log_event(id);
        }
        if settings::log_relation() {
            stack::with_event(id, |e| {
                e.logged = false;
                e.granted = false;
            });
            emit::log_event(id);
        }
    }
    if !found {
        stack::with_event(id, |e| {
            e.granted = false;
            e.logged = false;
        });
        emit::log_event(id);
    }
}

fn command_from_permissions(
    rte: &pg_sys::RangeTblEntry,
) -> (
    pg_sys::LogStmtLevel::Type,
    pg_sys::NodeTag,
    pg_sys::CommandTag::Type,
) {
    use pg_sys::CommandTag::*;
    use pg_sys::LogStmtLevel::*;
    use pg_sys::NodeTag::*;
    let perms = rte.requiredPerms;
    if perms & ACL_INSERT != 0 {
        (LOGSTMT_MOD, T_InsertStmt, CMDTAG_INSERT)
    } else if perms & ACL_UPDATE != 0 && rte.rellockmode >= pg_sys::RowExclusiveLock as i32 {
        (LOGSTMT_MOD, T_UpdateStmt, CMDTAG_UPDATE)
    } else if perms & ACL_DELETE != 0 {
        (LOGSTMT_MOD, T_DeleteStmt, CMDTAG_DELETE)
    } else if perms & ACL_SELECT != 0 {
        (LOGSTMT_ALL, T_SelectStmt, CMDTAG_SELECT)
    } else {
        (LOGSTMT_ALL, T_Invalid, CMDTAG_UNKNOWN)
    }
}

/// pgAudit's object type names for a relkind.
pub fn object_type(relkind: u8) -> &'static str {
    match relkind {
        pg_sys::RELKIND_RELATION | pg_sys::RELKIND_PARTITIONED_TABLE => "TABLE",
        pg_sys::RELKIND_INDEX | pg_sys::RELKIND_PARTITIONED_INDEX => "INDEX",
        pg_sys::RELKIND_SEQUENCE => "SEQUENCE",
        pg_sys::RELKIND_TOASTVALUE => "TOAST TABLE",
        pg_sys::RELKIND_VIEW => "VIEW",
        pg_sys::RELKIND_COMPOSITE_TYPE => "COMPOSITE TYPE",
        pg_sys::RELKIND_FOREIGN_TABLE => "FOREIGN TABLE",
        pg_sys::RELKIND_MATVIEW => "MATERIALIZED VIEW",
        _ => "UNKNOWN",
    }
}

/// `quote_qualified_identifier(schema, relname)`, or `None` if the relation vanished.
fn qualified_relation_name(namespace: pg_sys::Oid, rel_oid: pg_sys::Oid) -> Option<Vec<u8>> {
    // SAFETY: lsyscache lookups return palloc'd copies or NULL; we copy and free them.
    unsafe {
        let schema = pg_sys::get_namespace_name(namespace);
        let relname = pg_sys::get_rel_name(rel_oid);
        let quoted = pg_sys::quote_qualified_identifier(schema, relname);
        if quoted.is_null() {
            return None;
        }
        let name = CStr::from_ptr(quoted).to_bytes().to_vec();
        pg_sys::pfree(quoted.cast());
        Some(name)
    }
}

fn audit_on_rte(rte: &pg_sys::RangeTblEntry, rel_oid: pg_sys::Oid, audit_oid: pg_sys::Oid) -> bool {
    let perms = (ACL_SELECT | ACL_UPDATE | ACL_INSERT | ACL_DELETE) & rte.requiredPerms;
    if audit_on_relation(rel_oid, audit_oid, perms) {
        return true;
    }
    if perms == 0 {
        return false;
    }
    let mut granted = false;
    if perms & ACL_SELECT != 0 {
        granted = audit_on_any_attribute(rel_oid, audit_oid, rte.selectedCols, ACL_SELECT);
    }
    if !granted && perms & ACL_INSERT != 0 {
        granted = audit_on_any_attribute(rel_oid, audit_oid, rte.insertedCols, perms);
    }
    if !granted && perms & ACL_UPDATE != 0 {
        granted = audit_on_any_attribute(rel_oid, audit_oid, rte.updatedCols, perms);
    }
    granted
}

fn audit_on_relation(rel_oid: pg_sys::Oid, audit_oid: pg_sys::Oid, mask: u32) -> bool {
    // A NULL ACL means nobody was granted anything: not audited.
    with_row(RELOID, rel_oid.into(), 0.into(), |row| {
        row.attribute(pg_sys::Anum_pg_class_relacl)
            .is_some_and(|acl| audit_on_acl(acl, audit_oid, mask))
    })
    .unwrap_or(false)
}

fn audit_on_attribute(
    rel_oid: pg_sys::Oid,
    attnum: i16,
    audit_oid: pg_sys::Oid,
    mask: u32,
) -> bool {
    with_row(ATTNUM, rel_oid.into(), pg_sys::Datum::from(attnum), |row| {
        // SAFETY: the ATTNUM cache covers pg_attribute.
        let dropped = unsafe { row.form::<pg_sys::FormData_pg_attribute>() }.attisdropped;
        !dropped
            && row
                .attribute(pg_sys::Anum_pg_attribute_attacl)
                .is_some_and(|acl| audit_on_acl(acl, audit_oid, mask))
    })
    .unwrap_or(false)
}

fn audit_on_any_attribute(
    rel_oid: pg_sys::Oid,
    audit_oid: pg_sys::Oid,
    columns: *mut pg_sys::Bitmapset,
    mask: u32,
) -> bool {
    // SAFETY: bms_* accept NULL (empty set).
    unsafe {
        if pg_sys::bms_is_empty(columns) {
            // SAFETY: the RELOID cache covers pg_class.
            let Some(natts) = with_row(RELOID, rel_oid.into(), 0.into(), |row| {
                row.form::<pg_sys::FormData_pg_class>().relnatts
            }) else {
                return false;
            };
            if (1..=natts).any(|att| audit_on_attribute(rel_oid, att, audit_oid, mask)) {
                return true;
            }
        }
        let mut member = -1;
        loop {
            member = pg_sys::bms_next_member(columns, member);
            if member < 0 {
                return false;
            }
            let attnum = member + pg_sys::FirstLowInvalidHeapAttributeNumber;
            if attnum != 0 && audit_on_attribute(rel_oid, attnum as i16, audit_oid, mask) {
                return true;
            }
        }
    }
}

/// pgAudit's `audit_on_acl`: a direct grant to the audit role, else a grant to a role
/// whose privileges it has (never PUBLIC).
fn audit_on_acl(acl_datum: pg_sys::Datum, audit_oid: pg_sys::Oid, mask: u32) -> bool {
    // SAFETY: an ACL is a one-dimensional, NULL-free array of AclItem; we detoast it,
    // read ARR_DIMS[0] items at the data offset, and free the detoasted copy if any.
    unsafe {
        let raw = acl_datum.cast_mut_ptr::<pg_sys::varlena>();
        let acl = pg_sys::pg_detoast_datum(raw) as *mut pg_sys::ArrayType;
        let items = acl_items(acl);
        let result = items
            .iter()
            .any(|item| item.ai_grantee == audit_oid && item.ai_privs & mask != 0)
            || items.iter().any(|item| {
                item.ai_grantee != pg_sys::Oid::from(pg_sys::ACL_ID_PUBLIC)
                    && item.ai_grantee != audit_oid
                    && item.ai_privs & mask != 0
                    && pg_sys::has_privs_of_role(audit_oid, item.ai_grantee)
            });
        if acl as *mut pg_sys::varlena != raw {
            pg_sys::pfree(acl.cast());
        }
        result
    }
}

/// The AclItems of an ACL array (`ACL_DAT`/`ACL_NUM`).
///
/// # Safety
/// `acl` must point to a detoasted one-dimensional AclItem array without NULLs.
unsafe fn acl_items<'a>(acl: *mut pg_sys::ArrayType) -> &'a [pg_sys::AclItem] {
    // SAFETY: layout of ArrayType: header, then dims[ndim], lbounds[ndim], then data at
    // `dataoffset` or, without a NULL bitmap, MAXALIGN(header + 2 * ndim * sizeof(int)).
    unsafe {
        let ndim = (*acl).ndim;
        if ndim < 1 {
            return &[];
        }
        let header = std::mem::size_of::<pg_sys::ArrayType>();
        let dims = (acl as *const u8).add(header) as *const i32;
        let count = *dims as usize;
        let offset = if (*acl).dataoffset != 0 {
            (*acl).dataoffset as usize
        } else {
            let unaligned = header + 2 * std::mem::size_of::<i32>() * ndim as usize;
            (unaligned + 7) & !7
        };
        std::slice::from_raw_parts(
            (acl as *const u8).add(offset) as *const pg_sys::AclItem,
            count,
        )
    }
}
