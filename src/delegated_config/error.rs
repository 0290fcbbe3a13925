//! The errors delegated configuration raises, by kind, each with its SQLSTATE. Messages
//! of the `aiven_extras` functions keep aiven_extras' own wording (`Invalid parameter:
//! ...`, `Configuring superuser roles not allowed: ...`), which platform tooling matches;
//! everything else follows `pg::error`'s style.

use pgrx::prelude::*;

/// What kind of refusal.
#[derive(Clone, Copy)]
pub enum DelegationError {
    /// A required argument is NULL (22004).
    NullArgument,
    /// A parameter name, value or identifier is not acceptable (22023).
    InvalidValue,
    /// The caller may not configure this target or parameter (42501).
    NotAllowed,
    /// The named role (42704) or database (3D000) does not exist.
    UndefinedRole,
    UndefinedDatabase,
}

impl DelegationError {
    pub fn sqlstate(self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            DelegationError::NullArgument => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            DelegationError::InvalidValue => ERRCODE_INVALID_PARAMETER_VALUE,
            DelegationError::NotAllowed => ERRCODE_INSUFFICIENT_PRIVILEGE,
            DelegationError::UndefinedRole => ERRCODE_UNDEFINED_OBJECT,
            DelegationError::UndefinedDatabase => ERRCODE_INVALID_CATALOG_NAME,
        }
    }

    /// Raises the error; nothing is changed.
    pub fn raise(self, message: impl Into<String>, hint: Option<&str>) -> ! {
        crate::pg::error::raise(self.sqlstate(), message, hint)
    }
}
