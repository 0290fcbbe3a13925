//! The errors change capture raises, each with its SQLSTATE and a hint that says what to
//! do (message style: `pg::error`).

use pgrx::prelude::*;

/// What went wrong in change capture.
pub enum CaptureError {
    /// `capture_changes()` called other than as one of `track()`'s triggers (39P01).
    Misuse(String),
    /// A changed row whose JSON would not fit a part (54000).
    RowTooLarge,
    /// The outbox of this database is missing (55000).
    OutboxMissing,
    /// A statement capture runs itself failed (XX000: a bug or a broken installation).
    Internal(String),
    /// Managing capture refused (42501).
    NotAllowed(String),
    /// Track/untrack from inside a security-restricted operation (42501).
    SecurityRestricted,
    /// DROP EXTENSION/SCHEMA while events wait for delivery (55006).
    UndeliveredEvents(i64),
}

impl CaptureError {
    fn parts(&self) -> (PgSqlErrorCode, String, &'static str) {
        use PgSqlErrorCode::*;
        match self {
            CaptureError::Misuse(message) => (
                ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                message.clone(),
                "pgaudit_siem.capture_changes() runs only as the capture triggers that pgaudit_siem.track() installs.",
            ),
            CaptureError::RowTooLarge => (
                ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                "a changed row is too large to capture (its JSON would exceed 256 MB)".into(),
                "Exclude the large column from change capture: pgaudit_siem.track(table, category, exclude_columns).",
            ),
            CaptureError::OutboxMissing => (
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "the pgaudit_siem outbox table is missing in this database".into(),
                "Install the extension in this database (CREATE EXTENSION pgaudit_siem) or drop the capture triggers.",
            ),
            CaptureError::Internal(message) => (
                ERRCODE_INTERNAL_ERROR,
                message.clone(),
                "This is a bug in pgaudit_siem; the statement was rolled back and nothing was captured.",
            ),
            CaptureError::NotAllowed(message) => (
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                message.clone(),
                "Change capture is managed with pgaudit_siem.track() and pgaudit_siem.untrack() by the table owner or a pgaudit_admin member.",
            ),
            CaptureError::SecurityRestricted => (
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                "cannot track or untrack tables inside a security-restricted operation".into(),
                "Call pgaudit_siem.track() directly, not from an index expression, a materialized view or a maintenance command.",
            ),
            CaptureError::UndeliveredEvents(count) => (
                ERRCODE_OBJECT_IN_USE,
                format!("cannot drop extension pgaudit_siem: {count} captured events have not been delivered"),
                "Let the delivery worker deliver them (see pgaudit_siem.stats), or call pgaudit_siem.discard_undelivered() to discard them explicitly.",
            ),
        }
    }

    fn detail(&self) -> Option<&'static str> {
        match self {
            CaptureError::UndeliveredEvents(_) => {
                Some("Dropping the extension would delete the outbox and lose them.")
            }
            _ => None,
        }
    }

    /// Raises the error (the statement and its transaction roll back).
    pub fn raise(self) -> ! {
        let (code, message, hint) = self.parts();
        crate::pg::error::raise_with_detail(code, message, self.detail(), Some(hint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_specific_sqlstate_and_a_hint() {
        for error in [
            CaptureError::Misuse("x".into()),
            CaptureError::RowTooLarge,
            CaptureError::OutboxMissing,
            CaptureError::NotAllowed("x".into()),
        ] {
            let (code, message, hint) = error.parts();
            assert_ne!(code, PgSqlErrorCode::ERRCODE_INTERNAL_ERROR);
            assert!(!message.ends_with('.') && message.chars().next().unwrap().is_lowercase());
            assert!(hint.ends_with('.'));
        }
    }
}
