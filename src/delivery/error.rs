//! The errors delivery raises, each with its SQLSTATE (message style: `pg::error`).

use pgrx::prelude::*;

pub enum DeliveryError<'a> {
    /// A configuration value is not acceptable (22023); the hint says what is.
    InvalidValue { message: &'a str, hint: &'a str },
    /// The endpoint's host is outside `pgaudit_siem.delivery_allowed_hosts` (42501).
    HostNotAllowed,
    /// The worker cannot go on (XX000); it exits and the launcher restarts it.
    Internal(String),
}

impl DeliveryError<'_> {
    pub fn raise(self) -> ! {
        use PgSqlErrorCode::*;
        match self {
            DeliveryError::InvalidValue { message, hint } => {
                crate::pg::error::raise(ERRCODE_INVALID_PARAMETER_VALUE, message, Some(hint))
            }
            DeliveryError::HostNotAllowed => crate::pg::error::raise(
                ERRCODE_INSUFFICIENT_PRIVILEGE,
                "this SIEM endpoint host is not allowed on this server",
                Some("The server setting pgaudit_siem.delivery_allowed_hosts lists the hosts SIEM delivery may use."),
            ),
            DeliveryError::Internal(message) => crate::pg::error::raise(
                ERRCODE_INTERNAL_ERROR,
                format!("pgaudit_siem: {message}"),
                Some("The delivery worker exits and is restarted; undelivered events stay in the outbox."),
            ),
        }
    }
}
