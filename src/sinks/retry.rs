//! Retry policy for SIEM delivery (pure Rust, unit-tested without PostgreSQL).
//!
//! - Transport failures (DNS, connect, TLS, timeouts, dropped connections), 408, 429 and
//!   every 5xx are retried; the event stays in the outbox.
//! - Any other status outside 2xx is permanent for that event: it goes to the dead-letter
//!   table with the status and a response excerpt.
//! - Backoff is exponential with full jitter (AWS "full jitter": uniform in
//!   `[base, min(cap, base * 2^(attempt+1))]`), and a `Retry-After` from the receiver wins
//!   when it asks for longer (capped, so a bogus header cannot stall delivery for days).

use std::time::Duration;

/// What to do with an event after one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    Delivered,
    Retry,
    DeadLetter,
}

/// Classifies an HTTP status code.
pub fn classify_status(status: u16) -> Disposition {
    match status {
        200..=299 => Disposition::Delivered,
        408 | 429 => Disposition::Retry,
        500..=599 => Disposition::Retry,
        _ => Disposition::DeadLetter,
    }
}

/// Classifies one item of an OpenSearch bulk response: a `create` that collides with an
/// existing `_id` (409) was delivered earlier.
pub fn classify_bulk_item(status: u16) -> Disposition {
    if status == 409 {
        Disposition::Delivered
    } else {
        classify_status(status)
    }
}

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses `Retry-After` as delay-seconds (HTTP-dates are rare from SIEMs and treated as
/// absent; the exponential backoff applies then).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Exponential backoff with full jitter: attempt `n` (from 0) waits between `base` and
/// `base * 2^(n+1)`, capped. `random` is a uniform sample in `[0, 1)`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, random: f64) -> Duration {
    let exponent = attempt.saturating_add(1).min(30);
    let ceiling = base
        .saturating_mul(1u32 << exponent.min(31))
        .min(cap)
        .max(base);
    let span = ceiling.saturating_sub(base);
    base + span.mul_f64(random.clamp(0.0, 1.0))
}

/// The delay before the next attempt: the backoff, or longer if the receiver asked.
pub fn next_delay(
    attempt: u32,
    base: Duration,
    cap: Duration,
    random: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let computed = backoff(attempt, base, cap, random);
    match retry_after {
        Some(asked) if asked > computed => asked,
        _ => computed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_policy() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(classify_status(s), Disposition::Delivered, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(s), Disposition::Retry, "{s}");
        }
        for s in [100, 301, 400, 401, 403, 404, 413, 422] {
            assert_eq!(classify_status(s), Disposition::DeadLetter, "{s}");
        }
        assert_eq!(classify_bulk_item(409), Disposition::Delivered);
        assert_eq!(classify_bulk_item(400), Disposition::DeadLetter);
        assert_eq!(classify_bulk_item(429), Disposition::Retry);
    }

    #[test]
    fn backoff_grows_within_bounds() {
        let (base, cap) = (Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(backoff(0, base, cap, 0.0), base);
        assert_eq!(backoff(0, base, cap, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, cap, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(20, base, cap, 1.0), cap);
        assert_eq!(
            backoff(u32::MAX, base, cap, 0.999_999).min(cap),
            backoff(u32::MAX, base, cap, 0.999_999)
        );
        let mid = backoff(4, base, cap, 0.5);
        assert!(
            mid > Duration::from_secs(4) && mid < Duration::from_secs(16),
            "{mid:?}"
        );
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let (base, cap) = (Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            next_delay(0, base, cap, 0.0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            next_delay(10, base, cap, 1.0, Some(Duration::from_secs(1))),
            cap
        );
    }
}
