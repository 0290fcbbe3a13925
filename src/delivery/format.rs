//! Wire formats for SIEM delivery (pure Rust, unit-tested without PostgreSQL).
//!
//! - `json`: one event per request, the event object exactly as stored in the outbox
//!   (the payload of the Postgres.AI document).
//! - `ndjson`: a batch of events, one per line, each line ending in `\n`.
//! - `splunk_hec`: HEC event envelopes (`time`, `host`, `source`, `sourcetype`,
//!   `event`, `fields.event_id`) concatenated back to back, as HEC expects.
//! - `opensearch_bulk`: `create` actions with the event id as `_id`, so a redelivered
//!   event collides (409) instead of being indexed twice; the body ends with `\n`.
//!
//! # Invariants
//! - Payloads are copied byte for byte: the outbox already holds valid JSON objects.
//! - Every format carries the event id, so receivers can deduplicate redeliveries.

use std::io::Write;

use crate::change_capture::json::push_string;

/// How events are put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    SplunkHec,
    OpensearchBulk,
}

pub const FORMAT_NAMES: &str = "json, ndjson, splunk_hec, opensearch_bulk";

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "json" => Some(Format::Json),
            "ndjson" => Some(Format::Ndjson),
            "splunk_hec" => Some(Format::SplunkHec),
            "opensearch_bulk" => Some(Format::OpensearchBulk),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json | Format::SplunkHec => "application/json",
            Format::Ndjson | Format::OpensearchBulk => "application/x-ndjson",
        }
    }

    /// Events per request: `json` sends each event on its own.
    pub fn batches(self) -> bool {
        self != Format::Json
    }
}

/// One outbox event, as the worker holds it in memory.
#[derive(Clone, Debug)]
pub struct Event {
    pub xid: u64,
    pub seq: i64,
    pub id: String,
    pub category: String,
    /// Capture time, seconds since the Unix epoch (HEC's `time`).
    pub epoch_seconds: f64,
    pub payload: String,
}

/// Where a HEC event says it came from.
#[derive(Clone, Debug, Default)]
pub struct HecSource {
    pub host: String,
    pub source: String,
}

pub const HEC_SOURCETYPE: &str = "pgaudit_siem";

/// Encodes `events` as one request body.
pub fn encode(format: Format, events: &[&Event], hec: &HecSource) -> Vec<u8> {
    let payload_bytes: usize = events.iter().map(|e| e.payload.len() + 160).sum();
    let mut body: Vec<u8> = Vec::with_capacity(payload_bytes);
    match format {
        Format::Json => {
            for event in events {
                body.extend_from_slice(event.payload.as_bytes());
            }
        }
        Format::Ndjson => {
            for event in events {
                body.extend_from_slice(event.payload.as_bytes());
                body.push(b'\n');
            }
        }
        Format::SplunkHec => {
            for event in events {
                body.extend_from_slice(b"{\"time\":");
                let _ = write!(body, "{:.6}", event.epoch_seconds);
                body.extend_from_slice(b",\"host\":");
                push_string(&mut body, hec.host.as_bytes());
                body.extend_from_slice(b",\"source\":");
                push_string(&mut body, hec.source.as_bytes());
                body.extend_from_slice(b",\"sourcetype\":\"");
                body.extend_from_slice(HEC_SOURCETYPE.as_bytes());
                body.extend_from_slice(b"\",\"fields\":{\"event_id\":");
                push_string(&mut body, event.id.as_bytes());
                body.extend_from_slice(b",\"category\":");
                push_string(&mut body, event.category.as_bytes());
                body.extend_from_slice(b"},\"event\":");
                body.extend_from_slice(event.payload.as_bytes());
                body.push(b'}');
            }
        }
        Format::OpensearchBulk => {
            for event in events {
                body.extend_from_slice(b"{\"create\":{\"_id\":");
                push_string(&mut body, event.id.as_bytes());
                body.extend_from_slice(b"}}\n");
                body.extend_from_slice(event.payload.as_bytes());
                body.push(b'\n');
            }
        }
    }
    body
}

/// The per-item outcome of an OpenSearch bulk response: `None` if the response is not a
/// bulk response for these items (then the whole request is retried), otherwise one
/// (HTTP status, the item's own answer as JSON text) per item, in request order.
pub fn bulk_items(response: &[u8], expected_items: usize) -> Option<Vec<(u16, String)>> {
    let answer: serde_json::Value = serde_json::from_slice(response).ok()?;
    if answer.get("errors") == Some(&serde_json::Value::Bool(false)) {
        return Some(vec![(200, String::new()); expected_items]);
    }
    let items = answer.get("items")?.as_array()?;
    if items.len() != expected_items {
        return None;
    }
    items
        .iter()
        .map(|item| {
            // Each item is {"<action>": {..., "status": N, "error": {...}}}.
            let result = item.as_object()?.values().next()?;
            let status = u16::try_from(result.get("status")?.as_u64()?).ok()?;
            Some((status, result.to_string()))
        })
        .collect()
}

/// A clearly marked synthetic event for `test_connection()`.
pub fn test_event(id: &str, timestamp: &str, database: &str) -> String {
    let mut s = Vec::with_capacity(256);
    s.extend_from_slice(b"{\"id\":");
    push_string(&mut s, id.as_bytes());
    s.extend_from_slice(b",\"timestamp\":");
    push_string(&mut s, timestamp.as_bytes());
    s.extend_from_slice(b",\"event\":{\"category\":\"pgaudit_siem_test\",\"action\":\"test_connection\"},\"test\":true,\"message\":\"pgaudit_siem connection test; safe to ignore\",\"source\":{\"database\":");
    push_string(&mut s, database.as_bytes());
    s.extend_from_slice(b"}}");
    String::from_utf8(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, payload: &str) -> Event {
        Event {
            xid: 1,
            seq: 1,
            id: id.into(),
            category: "orgs".into(),
            epoch_seconds: 1735138630.5,
            payload: payload.into(),
        }
    }

    #[test]
    fn json_is_the_payload_itself() {
        let e = event("a", r#"{"id":"a","event":{"category":"orgs"}}"#);
        assert_eq!(
            encode(Format::Json, &[&e], &HecSource::default()),
            e.payload.as_bytes()
        );
    }

    #[test]
    fn ndjson_ends_every_line() {
        let (a, b) = (event("a", r#"{"id":"a"}"#), event("b", r#"{"id":"b"}"#));
        let body = encode(Format::Ndjson, &[&a, &b], &HecSource::default());
        assert_eq!(body, b"{\"id\":\"a\"}\n{\"id\":\"b\"}\n");
    }

    #[test]
    fn hec_envelopes_are_concatenated() {
        let a = event("a", r#"{"id":"a"}"#);
        let hec = HecSource {
            host: "db1".into(),
            source: "pgaudit_siem:app".into(),
        };
        let body = String::from_utf8(encode(Format::SplunkHec, &[&a, &a], &hec)).unwrap();
        let one = r#"{"time":1735138630.500000,"host":"db1","source":"pgaudit_siem:app","sourcetype":"pgaudit_siem","fields":{"event_id":"a","category":"orgs"},"event":{"id":"a"}}"#;
        assert_eq!(body, format!("{one}{one}"));
    }

    #[test]
    fn bulk_uses_the_event_id_and_ends_with_newline() {
        let a = event("0193fe52-5bed-75a4-8aec-829c1bdd9b7f", r#"{"x":1}"#);
        let body = String::from_utf8(encode(Format::OpensearchBulk, &[&a], &HecSource::default()))
            .unwrap();
        assert_eq!(
            body,
            "{\"create\":{\"_id\":\"0193fe52-5bed-75a4-8aec-829c1bdd9b7f\"}}\n{\"x\":1}\n"
        );
    }

    #[test]
    fn bulk_responses_give_item_statuses() {
        let ok = bulk_items(br#"{"took":3,"errors":false,"items":[]}"#, 2).unwrap();
        assert_eq!(ok.iter().map(|i| i.0).collect::<Vec<_>>(), [200, 200]);
        let mixed = br#"{"took":3,"errors":true,"items":[{"create":{"_id":"a","status":201}},{"create":{"_id":"b","status":429,"error":{"type":"es_rejected_execution_exception","reason":"x"}}},{"create":{"_id":"c","status":409,"error":{"type":"version_conflict_engine_exception"}}}]}"#;
        let items = bulk_items(mixed, 3).unwrap();
        assert_eq!(
            items.iter().map(|i| i.0).collect::<Vec<_>>(),
            [201, 429, 409]
        );
        assert!(
            items[1].1.contains("es_rejected_execution_exception")
                && !items[1].1.contains("version_conflict")
        );
        assert!(
            bulk_items(mixed, 2).is_none(),
            "item count mismatch is not trusted"
        );
        assert!(bulk_items(b"ok", 1).is_none());
    }

    #[test]
    fn test_event_is_marked() {
        let e = test_event("id1", "2026-01-01T00:00:00Z", "app");
        assert!(e.contains(r#""category":"pgaudit_siem_test""#) && e.contains(r#""test":true"#));
    }
}
