//! The DDL event-trigger functions installed by `CREATE EXTENSION pgaudit_siem`, which
//! supply object types and names for DDL lines (pgAudit's `pgaudit_ddl_command_end` and
//! `pgaudit_sql_drop`, same names, same queries, same filters).
//!
//! # Invariants
//! - They are `SECURITY DEFINER` with `search_path = pg_catalog, pg_temp`, and every
//!   name in their queries is schema-qualified, so a caller's search_path or shadowing
//!   objects cannot change what they read.
//! - Their own SPI queries are flagged internal and never audited.
//! - Without the extension in a database, DDL is still logged once per statement, with
//!   empty object fields (pgAudit behaviour).

use std::ffi::{c_char, CStr};

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::emit;
use super::error::AuditError;
use super::stack;
use crate::settings;
use crate::settings::log_classes as classes;

const DDL_COMMANDS_QUERY: &CStr = crate::sql_query!("ddl_commands.sql");
const DROPPED_OBJECTS_QUERY: &CStr = crate::sql_query!("dropped_objects.sql");

// The SQL that creates the functions and event triggers. `pg_finfo_*` records come from
// `pgrx::pg_sys::pg_finfo_record`-style exports below, so PostgreSQL calls them as V1.
pgrx::extension_sql_file!("../../sql/session_audit.sql", name = "ddl_event_triggers",);

crate::function_info_v1!(pg_finfo_pgaudit_ddl_command_end, pg_finfo_pgaudit_sql_drop);

#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pgaudit_ddl_command_end(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let bits = settings::log_classes();
    // DDL the extension runs itself (track() creating triggers) is not audited.
    if (bits & classes::DDL == 0 && bits & classes::ROLE == 0) || crate::pg::internal::active() {
        return null_datum(fcinfo);
    }
    let Some(top) = stack::top_id() else {
        AuditError::NotLoaded {
            function: "pgaudit_ddl_command_end",
        }
        .raise();
    };
    let _internal = crate::pg::internal::InternalScope::enter();
    // SAFETY: fcinfo is valid; `context` is checked to be EventTriggerData before use.
    let trigger = unsafe { event_trigger_data(fcinfo) };
    // SAFETY: the parse tree of the DDL command, valid during the trigger.
    let (level, tag, command) = unsafe {
        let tree = (*trigger).parsetree;
        (
            pg_sys::GetCommandLogLevel(tree),
            (*tree).type_,
            pg_sys::CreateCommandTag(tree),
        )
    };
    stack::with_event(top, |e| {
        e.log_level = level;
        e.node_tag = tag;
        e.command = command;
    });
    for row in spi_rows(DDL_COMMANDS_QUERY, 3, "pgaudit_ddl_command_end") {
        let command_tag = row[2].clone().unwrap_or_default();
        let mut tag_cstr = command_tag;
        tag_cstr.push(0);
        // SAFETY: NUL-terminated command tag name.
        let command = unsafe { pg_sys::GetCommandTagEnum(tag_cstr.as_ptr() as *const c_char) };
        let grant = matches!(
            command,
            pg_sys::CommandTag::CMDTAG_GRANT | pg_sys::CommandTag::CMDTAG_REVOKE
        );
        let saved_tag = stack::with_event(top, |e| {
            e.object_type = row[0].clone().map(Into::into);
            e.object_name = row[1].clone();
            e.command = command;
            e.logged = false;
            let saved = e.node_tag;
            if grant {
                e.node_tag = pg_sys::NodeTag::T_GrantStmt;
            }
            saved
        });
        emit::log_event(top);
        if let Some(saved) = saved_tag {
            stack::with_event(top, |e| e.node_tag = saved);
        }
    }
    null_datum(fcinfo)
}

#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn pgaudit_sql_drop(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    if settings::log_classes() & classes::DDL == 0 || crate::pg::internal::active() {
        return null_datum(fcinfo);
    }
    let Some(top) = stack::top_id() else {
        AuditError::NotLoaded {
            function: "pgaudit_sql_drop",
        }
        .raise();
    };
    let _internal = crate::pg::internal::InternalScope::enter();
    // SAFETY: as above; only validates that we were fired as an event trigger.
    let _ = unsafe { event_trigger_data(fcinfo) };
    for row in spi_rows(DROPPED_OBJECTS_QUERY, 2, "pgaudit_ddl_drop") {
        stack::with_event(top, |e| {
            e.object_type = row[0].clone().map(Into::into);
            e.object_name = row[1].clone();
            e.logged = false;
        });
        emit::log_event(top);
    }
    null_datum(fcinfo)
}

/// `PG_RETURN_NULL()`.
fn null_datum(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: fcinfo is the valid call frame PostgreSQL passed us.
    unsafe { (*fcinfo).isnull = true };
    pg_sys::Datum::from(0)
}

/// `CALLED_AS_EVENT_TRIGGER` check, then the trigger data.
///
/// # Safety
/// `fcinfo` must be PostgreSQL's call frame.
unsafe fn event_trigger_data(fcinfo: pg_sys::FunctionCallInfo) -> *mut pg_sys::EventTriggerData {
    // SAFETY: per the contract; `context` is a Node or NULL.
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null() || (*context).type_ != pg_sys::NodeTag::T_EventTriggerData {
            AuditError::NotFiredByEventTriggerManager.raise();
        }
        context as *mut pg_sys::EventTriggerData
    }
}

/// Runs a read-only query through SPI and returns each row's first `columns` values as
/// text (`None` for NULL), copied out of SPI memory.
fn spi_rows(query: &CStr, columns: i32, caller: &str) -> Vec<Vec<Option<Vec<u8>>>> {
    // SAFETY: classic SPI protocol: connect, execute, read SPI_tuptable, finish. Values
    // are copied to Rust before SPI_finish frees them.
    unsafe {
        let rc = pg_sys::SPI_connect();
        if rc < 0 {
            AuditError::Spi {
                caller,
                call: "SPI_connect",
                code: rc,
            }
            .raise();
        }
        let rc = pg_sys::SPI_execute(query.as_ptr(), true, 0);
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            AuditError::Spi {
                caller,
                call: "SPI_execute",
                code: rc,
            }
            .raise();
        }
        let table = pg_sys::SPI_tuptable;
        let count = pg_sys::SPI_processed as usize;
        let mut rows = Vec::with_capacity(count);
        for i in 0..count {
            let tuple = *(*table).vals.add(i);
            let row = (1..=columns)
                .map(|col| {
                    let value = pg_sys::SPI_getvalue(tuple, (*table).tupdesc, col);
                    if value.is_null() {
                        None
                    } else {
                        Some(CStr::from_ptr(value).to_bytes().to_vec())
                    }
                })
                .collect();
            rows.push(row);
        }
        pg_sys::SPI_finish();
        rows
    }
}
