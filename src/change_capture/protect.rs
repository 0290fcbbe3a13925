//! Utility-hook rules that keep change capture switched on: only superusers and
//! `pgaudit_admin` members may drop, rename, disable or demote the capture triggers, and
//! `DROP EXTENSION` refuses while undelivered events exist.
//!
//! # Invariants
//! - Table owners can still do everything else to their tables (ALTER TABLE adding or
//!   dropping columns keeps capture working; DROP TABLE is itself an audit event).
//! - The checks run before PostgreSQL executes the statement, so a refused statement
//!   changes nothing.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;

use super::error::CaptureError;

const TRIGGER_PREFIX: &str = "pgaudit_siem_capture_";

fn privileged() -> bool {
    crate::pg::admin::current_user_acts_as_admin()
}

fn refuse(message: String) -> ! {
    CaptureError::NotAllowed(message).raise()
}

fn string_value(node: *mut pg_sys::Node) -> String {
    // SAFETY: names in DROP/RENAME object lists are String nodes.
    unsafe {
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_String {
            return String::new();
        }
        CStr::from_ptr((*(node as *mut pg_sys::String)).sval)
            .to_string_lossy()
            .into_owned()
    }
}

fn is_capture_trigger(name: &str) -> bool {
    name.starts_with(TRIGGER_PREFIX)
}

/// Refuses `verb` on a capture trigger `name` unless the user may manage capture.
fn guard_trigger(name: &str, verb: &str) {
    if is_capture_trigger(name) && !privileged() {
        refuse(format!(
            "permission denied to {verb} change-capture trigger \"{name}\""
        ));
    }
}

/// Checks a utility statement before it runs.
pub fn check_utility(utility: *mut pg_sys::Node) {
    // SAFETY: node tags identify the statement types whose fields are read below.
    unsafe {
        match (*utility).type_ {
            pg_sys::NodeTag::T_DropStmt => {
                let stmt = &*(utility as *mut pg_sys::DropStmt);
                match stmt.removeType {
                    pg_sys::ObjectType::OBJECT_TRIGGER => {
                        for object in PgList::<pg_sys::List>::from_pg(stmt.objects).iter_ptr() {
                            let names = PgList::<pg_sys::Node>::from_pg(object);
                            let name = names
                                .iter_ptr()
                                .last()
                                .map(string_value)
                                .unwrap_or_default();
                            guard_trigger(&name, "drop");
                        }
                    }
                    // The extension's schema goes with the outbox, extension or not.
                    pg_sys::ObjectType::OBJECT_EXTENSION | pg_sys::ObjectType::OBJECT_SCHEMA => {
                        for object in PgList::<pg_sys::Node>::from_pg(stmt.objects).iter_ptr() {
                            if string_value(object) == "pgaudit_siem" {
                                refuse_drop_with_undelivered_events();
                            }
                        }
                    }
                    _ => {}
                }
            }
            // Capture trigger names are reserved: CREATE OR REPLACE TRIGGER would swap the
            // function (or the transition tables) of a capture trigger.
            pg_sys::NodeTag::T_CreateTrigStmt => {
                let stmt = &*(utility as *mut pg_sys::CreateTrigStmt);
                if !stmt.trigname.is_null() {
                    guard_trigger(
                        &CStr::from_ptr(stmt.trigname).to_string_lossy(),
                        "create or replace",
                    );
                }
            }
            // ALTER TRIGGER ... DEPENDS ON EXTENSION would let dropping that extension drop
            // a capture trigger.
            pg_sys::NodeTag::T_AlterObjectDependsStmt => {
                let stmt = &*(utility as *mut pg_sys::AlterObjectDependsStmt);
                if stmt.objectType == pg_sys::ObjectType::OBJECT_TRIGGER && !stmt.object.is_null() {
                    let names = PgList::<pg_sys::Node>::from_pg(stmt.object as *mut pg_sys::List);
                    let name = names
                        .iter_ptr()
                        .last()
                        .map(string_value)
                        .unwrap_or_default();
                    guard_trigger(&name, "alter");
                }
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let stmt = &*(utility as *mut pg_sys::RenameStmt);
                if stmt.renameType == pg_sys::ObjectType::OBJECT_TRIGGER && !stmt.subname.is_null()
                {
                    guard_trigger(&CStr::from_ptr(stmt.subname).to_string_lossy(), "rename");
                }
            }
            pg_sys::NodeTag::T_AlterTableStmt => {
                let stmt = &*(utility as *mut pg_sys::AlterTableStmt);
                for cmd in PgList::<pg_sys::AlterTableCmd>::from_pg(stmt.cmds).iter_ptr() {
                    use pg_sys::AlterTableType as At;
                    let cmd = &*cmd;
                    let named = if cmd.name.is_null() {
                        None
                    } else {
                        Some(CStr::from_ptr(cmd.name).to_string_lossy().into_owned())
                    };
                    let touches_capture = match cmd.subtype {
                        At::AT_DisableTrig | At::AT_EnableReplicaTrig => {
                            named.as_deref().is_some_and(is_capture_trigger)
                        }
                        At::AT_DisableTrigAll | At::AT_DisableTrigUser => {
                            has_capture_triggers(stmt.relation)
                        }
                        _ => false,
                    };
                    if touches_capture && !privileged() {
                        refuse("permission denied to disable change-capture triggers".to_owned());
                    }
                }
            }
            _ => {}
        }
    }
}

fn has_capture_triggers(relation: *mut pg_sys::RangeVar) -> bool {
    // SAFETY: a RangeVar from the parse tree; missing relations are left to PostgreSQL.
    let relid = unsafe {
        pg_sys::RangeVarGetRelidExtended(
            relation,
            pg_sys::NoLock as i32,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    };
    if relid == pg_sys::InvalidOid {
        return false;
    }
    crate::pg::internal::run(|| {
        Spi::get_one_with_args::<bool>(
            include_str!("../../sql/queries/protect_has_capture_triggers.sql"),
            &[relid.into()],
        )
    })
    .unwrap_or_else(|e| {
        CaptureError::Internal(format!("checking for capture triggers failed: {e}")).raise()
    })
    .unwrap_or(false)
}

fn refuse_drop_with_undelivered_events() {
    // The guard's own query is internal: it must not appear in the audit trail or take
    // a statement id.
    // A failing check refuses the DROP rather than letting undelivered events go.
    let failed = |e: pgrx::spi::Error| -> ! {
        CaptureError::Internal(format!("counting undelivered events failed: {e}")).raise()
    };
    let undelivered = crate::pg::internal::run(|| {
        let exists = Spi::get_one::<bool>(
            "SELECT pg_catalog.to_regclass('pgaudit_siem.outbox') IS NOT NULL",
        )
        .unwrap_or_else(|e| failed(e));
        if exists != Some(true) {
            return 0;
        }
        Spi::get_one::<i64>(include_str!(
            "../../sql/queries/protect_undelivered_count.sql"
        ))
        .unwrap_or_else(|e| failed(e))
        .unwrap_or(0)
    });
    if undelivered > 0 {
        CaptureError::UndeliveredEvents(undelivered).raise();
    }
}
