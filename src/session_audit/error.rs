//! The errors session audit raises. They are pgAudit 1.7's own `elog(ERROR, ...)`
//! messages, word for word and with its SQLSTATE (XX000, internal error), because
//! pgAudit's regression suite and users' log filters match them; they signal an
//! inconsistent audit stack or a broken installation, never a user mistake.

use pgrx::prelude::*;

pub enum AuditError<'a> {
    /// A top-level utility statement found unexpected entries on the stack.
    StackNotEmpty,
    /// The statement's own entry vanished while it ran.
    ItemNotFound { id: i64, top: i64 },
    /// The entry to pop is not on top.
    CannotPop { id: i64 },
    /// An event trigger function ran without the audit hooks in place.
    NotLoaded { function: &'a str },
    /// An event trigger function was called directly.
    NotFiredByEventTriggerManager,
    /// SPI failed inside an event trigger.
    Spi {
        caller: &'a str,
        call: &'a str,
        code: i32,
    },
    /// A function vanished between its execution and its audit line.
    FunctionLookup { oid: u32 },
}

impl AuditError<'_> {
    fn message(&self) -> String {
        match self {
            AuditError::StackNotEmpty => "pgaudit stack is not empty".into(),
            AuditError::ItemNotFound { id, top } => {
                format!("pgaudit stack item {id} not found - top of stack is {top}")
            }
            AuditError::CannotPop { id } => {
                format!("pgaudit stack item {id} not found on top - cannot pop")
            }
            AuditError::NotLoaded { function } => {
                format!("pgaudit not loaded before call to {function}()")
            }
            AuditError::NotFiredByEventTriggerManager => {
                "not fired by event trigger manager".into()
            }
            AuditError::Spi { caller, call, code } => format!("{caller}: {call} returned {code}"),
            AuditError::FunctionLookup { oid } => format!("cache lookup failed for function {oid}"),
        }
    }

    pub fn raise(self) -> ! {
        crate::pg::error::raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, self.message(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_pgaudit_s_own() {
        assert_eq!(
            AuditError::ItemNotFound { id: 3, top: -1 }.message(),
            "pgaudit stack item 3 not found - top of stack is -1"
        );
        assert_eq!(
            AuditError::NotLoaded {
                function: "pgaudit_sql_drop"
            }
            .message(),
            "pgaudit not loaded before call to pgaudit_sql_drop()"
        );
        assert_eq!(
            AuditError::Spi {
                caller: "pgaudit_ddl_command_end",
                call: "SPI_connect",
                code: -1
            }
            .message(),
            "pgaudit_ddl_command_end: SPI_connect returned -1"
        );
    }
}
