//! Event timestamps: PostgreSQL's clock in Unix microseconds, written as RFC 3339 UTC with
//! microseconds (`2024-12-25T14:57:10.123456Z`) by `chrono`.
//!
//! # Invariants
//! - One clock for every event source: `GetCurrentTimestamp()` (the transaction's clock
//!   is not used, so parts and records of one transaction still order by creation).
//! - Conversions to and from PostgreSQL's epoch (2000-01-01) are exact.

use pgrx::pg_sys;

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Now, in Unix microseconds.
pub fn now_unix_micros() -> i64 {
    // SAFETY: a clock read; cannot raise an ERROR.
    unsafe { pg_sys::GetCurrentTimestamp() + POSTGRES_EPOCH_UNIX_MICROS }
}

/// A PostgreSQL `timestamptz` value for a Unix time in µs.
pub fn to_postgres_timestamp(unix_micros: i64) -> i64 {
    unix_micros - POSTGRES_EPOCH_UNIX_MICROS
}

/// RFC 3339 UTC with microseconds for a Unix time in µs.
pub fn rfc3339_utc(unix_micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(unix_micros) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        // Outside chrono's range (±262 000 years): PostgreSQL's clock never gets there.
        None => String::from("1970-01-01T00:00:00.000000Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_micros() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_utc(1_735_138_630_123_456),
            "2024-12-25T14:57:10.123456Z"
        );
        assert_eq!(
            rfc3339_utc(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(to_postgres_timestamp(POSTGRES_EPOCH_UNIX_MICROS), 0);
    }
}
