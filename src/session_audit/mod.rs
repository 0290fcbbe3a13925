//! Session and object audit logging, pgAudit 1.7 compatible.
//!
//! Today this holds the class grammar; the hooks, the audit event stack and the line
//! formatter arrive with the session-audit issue.

pub mod classes;
