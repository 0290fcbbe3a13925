//! Event ids: UUIDv7 (RFC 9562) from the `uuid` crate, with one monotonic context per
//! backend.
//!
//! # Invariants
//! - Ids of one backend strictly increase, also within a millisecond and across a clock
//!   step back (the context's counter, RFC 9562 method 1), so events of one backend sort
//!   by id in creation order. The SQL function `pgaudit_siem.uuid_v7()` and the capture
//!   trigger draw from the same context.
//! - Random bits come from a per-thread CSPRNG seeded from the OS (`fast-rng`), not a
//!   system call per id.

use uuid::{ContextV7, Timestamp, Uuid};

thread_local! {
    static CONTEXT: ContextV7 = const { ContextV7::new() };
}

/// The next id of this backend, for an event created at `unix_micros`.
pub fn next_id(unix_micros: i64) -> Uuid {
    let micros = unix_micros.max(0) as u64;
    let (seconds, nanos) = (micros / 1_000_000, (micros % 1_000_000) as u32 * 1000);
    CONTEXT.with(|context| Uuid::new_v7(Timestamp::from_unix(context, seconds, nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_and_strictly_increase() {
        let t = 1_735_138_630_123_456;
        let a = next_id(t);
        let b = next_id(t);
        let c = next_id(t + 1000);
        let d = next_id(t - 50_000); // the clock went back
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        for id in [a, b, c, d] {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        assert_eq!(&a.as_bytes()[..6], &1_735_138_630_123u64.to_be_bytes()[2..]);
        let ids: Vec<Uuid> = (0..10_000).map(|_| next_id(5_000)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
