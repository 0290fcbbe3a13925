//! Delegated configuration: lets a non-superuser platform admin (a member of
//! `pgaudit_admin`) configure auditing per database, role and role-in-database, without
//! the power to silence its own session.
//!
//! Two ways in, one set of rules:
//! - `aiven_extras.set_pgaudit_parameter(parameter, database, value)`,
//!   `aiven_extras.set_pgaudit_role_parameter(parameter, role, value)` and
//!   `aiven_extras.set_pgaudit_role_in_database_parameter(parameter, role, database, value)`:
//!   SECURITY DEFINER wrappers (search_path pinned to `pg_catalog, pg_temp`), EXECUTE for
//!   `pgaudit_admin` only, around [`apply_delegated_setting`].
//! - `ALTER DATABASE d SET pgaudit.x = ...` / `ALTER ROLE r [IN DATABASE d] SET ...` /
//!   `... RESET pgaudit.x`, which the utility hook lets a `pgaudit_admin` member run for
//!   the accepted parameters ([`elevate_for`]).
//!
//! # Invariants
//! - Accepted parameters (case-insensitive): featureEnabled, log, log_catalog,
//!   log_max_string_length, log_nested_statements, log_parameter, log_relation, log_rows,
//!   log_statement, log_statement_once. `log_client`, `log_level`, `role` and anything
//!   else are refused.
//! - A delegated admin never targets a superuser role, its own role, or a role it is a
//!   member of; for ALTER it must also pass PostgreSQL's usual checks (database owner;
//!   CREATEROLE for roles), which are done here before the statement runs with elevated
//!   rights, because PostgreSQL would skip them for the superuser it then runs as.
//! - Identifiers and values reach SQL only through `quote_identifier`/`quote_literal`;
//!   the value is validated by the setting's own check hook when PostgreSQL stores it,
//!   so an invalid value fails with the setting's own message and nothing is stored.
//! - Every delegated change is written to the server log (LOG) whatever the audit
//!   settings. When auditing is on, the admin's statement is audit-logged like any other
//!   (`ALTER ...`, or the `aiven_extras` call with its arguments); the statement the
//!   extension runs on its behalf is internal and takes no line or statement id.
//! - The admin never configures itself: not its own role, roles it is a member of, roles
//!   that are members of it (they can act as it), or other pgaudit_admin members; and in
//!   sessions of pgaudit_admin members the server level is a floor (see `settings`).
//! - Plain `SET pgaudit.*` in a session stays superuser-only; `GRANT SET ON PARAMETER` is
//!   not used because it would allow exactly that.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi;

use crate::pg::user::SavedUser;
use error::DelegationError;

pub mod error;

/// Parameters a delegated admin may set, by canonical name (without the prefix).
pub const ACCEPTED_PARAMETERS: [&str; 10] = [
    "featureEnabled",
    "log",
    "log_catalog",
    "log_max_string_length",
    "log_nested_statements",
    "log_parameter",
    "log_relation",
    "log_rows",
    "log_statement",
    "log_statement_once",
];

/// The canonical `pgaudit.<name>` for an accepted parameter, matched case-insensitively
/// and with or without the `pgaudit.` prefix.
pub fn canonical_parameter(name: &str) -> Option<String> {
    let bare = match name.get(..8) {
        Some(prefix) if prefix.eq_ignore_ascii_case("pgaudit.") => &name[8..],
        _ => name,
    };
    ACCEPTED_PARAMETERS
        .iter()
        .find(|p| p.eq_ignore_ascii_case(bare))
        .map(|p| format!("pgaudit.{p}"))
}

extension_sql_file!(
    "../../sql/delegated_config.sql",
    name = "delegated_config",
    requires = [apply_delegated_setting],
);

fn accepted_list_hint() -> String {
    format!("Accepted parameters: {}.", ACCEPTED_PARAMETERS.join(", "))
}

/// The worker behind the `aiven_extras` functions. Runs as the extension owner (a
/// superuser) through their SECURITY DEFINER; the caller is the outer user.
#[pg_extern(volatile, parallel_unsafe)]
fn apply_delegated_setting(
    parameter: Option<&str>,
    role: Option<&str>,
    database: Option<&str>,
    value: Option<&str>,
    scope: &str,
) -> String {
    let needs_role = scope != "database";
    let needs_database = scope != "role";
    let (Some(parameter), Some(value)) = (parameter, value) else {
        DelegationError::NullArgument.raise("parameter and value must not be NULL", None)
    };
    if (needs_role && role.is_none()) || (needs_database && database.is_none()) {
        DelegationError::NullArgument.raise(
            format!(
                "{} must not be NULL",
                if needs_role && role.is_none() {
                    "role"
                } else {
                    "database"
                }
            ),
            None,
        )
    }
    let Some(name) = canonical_parameter(parameter) else {
        DelegationError::InvalidValue.raise(
            format!("Invalid parameter: {parameter}"),
            Some(&accepted_list_hint()),
        )
    };
    // SAFETY: the outer user is the role that called the SECURITY DEFINER wrapper.
    let caller = unsafe { pg_sys::GetOuterUserId() };
    if let Some(database) = database {
        database_oid(database);
    }
    if let Some(role) = role {
        let target = role_oid(role);
        check_role_target(caller, target, role);
    }
    let target_sql = match (role, database) {
        (Some(r), Some(d)) => format!(
            "ROLE {} IN DATABASE {}",
            spi::quote_identifier(r),
            spi::quote_identifier(d)
        ),
        (Some(r), None) => format!("ROLE {}", spi::quote_identifier(r)),
        (None, Some(d)) => format!("DATABASE {}", spi::quote_identifier(d)),
        (None, None) => unreachable!("checked above"),
    };
    let statement = format!(
        "ALTER {target_sql} SET {name} = {}",
        spi::quote_literal(value)
    );
    Spi::run(&statement).unwrap_or_else(|e| error!("{e}"));
    let target_text = match (role, database) {
        (Some(r), Some(d)) => format!("role \"{r}\" in database \"{d}\""),
        (Some(r), None) => format!("role \"{r}\""),
        (None, Some(d)) => format!("database \"{d}\""),
        (None, None) => unreachable!(),
    };
    log_delegated_change(caller, &format!("set {name} = '{value}' for {target_text}"));
    notice!("{name} set for {target_text}; it applies to new connections");
    format!("{name} set to '{value}' for {target_text}; applies to new connections")
}

fn database_oid(name: &str) -> pg_sys::Oid {
    named_oid(
        "database",
        name,
        DelegationError::UndefinedDatabase,
        pg_sys::get_database_oid,
    )
}

fn role_oid(name: &str) -> pg_sys::Oid {
    named_oid(
        "role",
        name,
        DelegationError::UndefinedRole,
        pg_sys::get_role_oid,
    )
}

/// Looks up a database or role by exact name, refusing a missing one with `missing`.
fn named_oid(
    kind: &str,
    name: &str,
    missing: DelegationError,
    lookup: unsafe fn(*const std::ffi::c_char, bool) -> pg_sys::Oid,
) -> pg_sys::Oid {
    let c_name = std::ffi::CString::new(name).unwrap_or_else(|_| {
        DelegationError::InvalidValue.raise(format!("{kind} name contains a NUL byte"), None)
    });
    // SAFETY: missing_ok = true, so the lookup only reads the catalog.
    let oid = unsafe { lookup(c_name.as_ptr(), true) };
    if oid == pg_sys::InvalidOid {
        missing.raise(format!("{kind} \"{name}\" does not exist"), None);
    }
    oid
}

/// Refuses superuser targets, and (for non-superuser callers) the caller's own role and
/// roles it is a member of, so an admin cannot switch off auditing of its own sessions.
fn check_role_target(caller: pg_sys::Oid, target: pg_sys::Oid, target_name: &str) {
    // SAFETY: catalog lookups on valid role oids.
    let (target_is_superuser, caller_is_superuser, caller_is_member) = unsafe {
        (
            pg_sys::superuser_arg(target),
            pg_sys::superuser_arg(caller),
            pg_sys::is_member_of_role(caller, target)
                || pg_sys::is_member_of_role(pg_sys::GetSessionUserId(), target),
        )
    };
    if target_is_superuser {
        DelegationError::NotAllowed.raise(
            format!("Configuring superuser roles not allowed: {target_name}"),
            None,
        );
    }
    if caller_is_superuser {
        return;
    }
    if caller_is_member {
        DelegationError::NotAllowed.raise(format!("Configuring your own role or a role you are a member of is not allowed: {target_name}"),
            Some("Ask another administrator to configure auditing of your own sessions."),
        );
    }
    // A member of the caller's role (with or without INHERIT) can act as the caller, and
    // a pgaudit_admin member can configure the caller: both are "itself".
    // SAFETY: catalog lookups on valid role oids.
    let acts_as_caller = unsafe {
        pg_sys::is_member_of_role(target, caller)
            || pg_sys::is_member_of_role(target, pg_sys::GetSessionUserId())
    };
    let is_admin = crate::pg::admin::could_act_as_admin(target);
    if acts_as_caller {
        DelegationError::NotAllowed.raise(
            format!("Configuring a role that is a member of yours is not allowed: {target_name}"),
            Some(
                "A member of your role can act as you; its auditing is configured by a superuser.",
            ),
        );
    }
    if is_admin {
        DelegationError::NotAllowed.raise(
            format!("Configuring a pgaudit_admin member is not allowed: {target_name}"),
            Some("Auditing of delegated administrators is configured by a superuser."),
        );
    }
}

/// Writes the change to the server log, whatever the audit settings.
fn log_delegated_change(caller: pg_sys::Oid, what: &str) {
    // SAFETY: GetUserNameFromId returns a palloc'd name for a valid role oid.
    let who = unsafe { CStr::from_ptr(pg_sys::GetUserNameFromId(caller, true)) }.to_string_lossy();
    ereport!(
        PgLogLevel::LOG_SERVER_ONLY,
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        format!("pgaudit_siem: delegated configuration by role \"{who}\": {what}")
    );
}

// ---- ALTER DATABASE / ALTER ROLE ... SET through the utility hook ----

/// Decides whether a utility statement is a delegated pgaudit setting change by a
/// `pgaudit_admin` member. Returns the caller's saved user (the statement then runs as
/// the bootstrap superuser until the dispatcher restores it; deliberately `Copy`, since
/// ERRORs longjmp through the utility hook, where PostgreSQL's (sub)transaction abort
/// restores the user instead), `None` to let PostgreSQL apply its normal rules, or
/// raises a clear error.
pub fn elevate_for(utility: *mut pg_sys::Node) -> Option<SavedUser> {
    // SAFETY: `utility` is the statement PostgreSQL is about to run; node tags tell the
    // concrete type, and only its fields are read.
    let (setstmt, role, database) = unsafe {
        match (*utility).type_ {
            pg_sys::NodeTag::T_AlterDatabaseSetStmt => {
                let s = utility as *mut pg_sys::AlterDatabaseSetStmt;
                ((*s).setstmt, std::ptr::null_mut(), (*s).dbname)
            }
            pg_sys::NodeTag::T_AlterRoleSetStmt => {
                let s = utility as *mut pg_sys::AlterRoleSetStmt;
                // ALTER ROLE ALL [IN DATABASE] ... SET is the server level: superusers
                // only, by PostgreSQL's own rule.
                if (*s).role.is_null() {
                    return None;
                }
                ((*s).setstmt, (*s).role, (*s).database)
            }
            _ => return None,
        }
    };
    // SAFETY: a VariableSetStmt's name is NULL only for RESET ALL.
    let name_ptr = unsafe { (*setstmt).name };
    if name_ptr.is_null() {
        return None;
    }
    // SAFETY: NUL-terminated identifier from the parser.
    let name = unsafe { CStr::from_ptr(name_ptr) }.to_string_lossy();
    if !name.to_ascii_lowercase().starts_with("pgaudit.") {
        return None;
    }
    // SAFETY: plain reads of the current user; superusers need no delegation.
    let caller = unsafe { pg_sys::GetUserId() };
    if unsafe { pg_sys::superuser() } || !crate::pg::admin::acts_as_admin(caller) {
        return None;
    }
    let Some(canonical) = canonical_parameter(&name) else {
        DelegationError::NotAllowed.raise(
            format!("permission denied to set parameter \"{name}\""),
            Some(&format!(
                "pgaudit_admin members may set only these pgaudit parameters: {}.",
                ACCEPTED_PARAMETERS.join(", ")
            )),
        );
    };
    let database_name = (!database.is_null()).then(|| {
        // SAFETY: NUL-terminated identifier from the parser.
        unsafe { CStr::from_ptr(database) }
            .to_string_lossy()
            .into_owned()
    });
    let database_oid = database_name.as_deref().map(database_oid);
    let target_text = if role.is_null() {
        // ALTER DATABASE always names its database.
        let (Some(db), Some(dboid)) = (database_name.clone(), database_oid) else {
            return None;
        };
        // PostgreSQL's own rule for ALTER DATABASE SET: the owner may.
        // SAFETY: catalog lookup with valid oids.
        if !unsafe { pg_sys::pg_database_ownercheck(dboid, caller) } {
            return None; // PostgreSQL refuses with its usual "must be owner of database"
        }
        format!("database \"{db}\"")
    } else {
        // SAFETY: ALTER ROLE ALL has no RoleSpec... which is `role == NULL`, handled above;
        // get_rolespec_oid raises the usual error for a missing role.
        let target = unsafe { pg_sys::get_rolespec_oid(role, false) };
        // SAFETY: GetUserNameFromId returns a palloc'd name.
        let target_name = unsafe { CStr::from_ptr(pg_sys::GetUserNameFromId(target, false)) }
            .to_string_lossy()
            .into_owned();
        check_role_target(caller, target, &target_name);
        if !has_createrole(caller) {
            return None; // PostgreSQL refuses with its usual permission error
        }
        match &database_name {
            Some(db) => format!("role \"{target_name}\" in database \"{db}\""),
            None => format!("role \"{target_name}\""),
        }
    };
    // SAFETY: the set statement's kind field is always valid.
    let kind = unsafe { (*setstmt).kind };
    let action = if kind == pg_sys::VariableSetKind::VAR_SET_VALUE {
        "set"
    } else {
        "reset"
    };
    log_delegated_change(
        caller,
        &format!("ALTER ... {action} {canonical} for {target_text}"),
    );
    Some(SavedUser::switch_to(pg_sys::Oid::from(
        pg_sys::BOOTSTRAP_SUPERUSERID,
    )))
}

fn has_createrole(role: pg_sys::Oid) -> bool {
    crate::pg::syscache::with_row(
        pg_sys::SysCacheIdentifier::AUTHOID,
        role.into(),
        0.into(),
        |row| {
            // SAFETY: the AUTHOID cache covers pg_authid.
            unsafe { row.form::<pg_sys::FormData_pg_authid>() }.rolcreaterole
        },
    )
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::canonical_parameter;

    #[test]
    fn parameters_match_case_insensitively_with_or_without_prefix() {
        assert_eq!(canonical_parameter("log").as_deref(), Some("pgaudit.log"));
        assert_eq!(
            canonical_parameter("FEATUREENABLED").as_deref(),
            Some("pgaudit.featureEnabled")
        );
        assert_eq!(
            canonical_parameter("pgaudit.Log_Relation").as_deref(),
            Some("pgaudit.log_relation")
        );
        for refused in [
            "log_client",
            "log_level",
            "role",
            "pgaudit.role",
            "",
            "log; DROP TABLE x",
            "shared_preload_libraries",
        ] {
            assert_eq!(canonical_parameter(refused), None, "{refused:?}");
        }
    }
}
