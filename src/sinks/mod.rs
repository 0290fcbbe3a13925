//! Sinks: how events are put on the wire for a SIEM, one file per format behind the
//! [`Sink`] trait, with the HTTP transport ([`http`]) and the retry policy ([`retry`])
//! shared by all of them. Pure Rust (no PostgreSQL calls), unit-tested without a server.
//!
//! - [`json`]: one event per request, the event object exactly as stored.
//! - [`ndjson`]: a batch of events, one per line, each line ending in `\n`.
//! - [`splunk_hec`]: HEC event envelopes back to back, as HEC expects.
//! - [`opensearch_bulk`]: `create` actions with the event id as `_id`, so a redelivered
//!   event collides (409) instead of being indexed twice.
//!
//! Adding a format is one file implementing [`Sink`] and one line in [`SINKS`].
//!
//! # Invariants
//! - Payloads are copied byte for byte: sources hand over valid JSON objects.
//! - Every format carries the event id, so receivers can deduplicate redeliveries.

pub mod http;
pub mod json;
pub mod ndjson;
pub mod opensearch_bulk;
pub mod retry;
pub mod splunk_hec;

/// One event as a sink sees it: ordered, identified, its JSON document ready.
#[derive(Clone, Debug)]
pub struct Event {
    /// The source's order key (outbox: top-level xid and sequence).
    pub xid: u64,
    pub seq: i64,
    pub id: String,
    pub category: String,
    /// Creation time, seconds since the Unix epoch (HEC's `time`).
    pub epoch_seconds: f64,
    pub payload: String,
}

/// Where events say they came from (HEC `host`/`source`).
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub host: String,
    pub source: String,
}

/// A receiver's answer for one item of a request.
pub type ItemStatus = (u16, String);

/// A wire format for a SIEM.
pub trait Sink: Sync {
    /// The name users configure (`pgaudit_siem.configure(format => ...)`).
    fn name(&self) -> &'static str;
    fn content_type(&self) -> &'static str;
    /// Whether several events go in one request (`json` sends each on its own).
    fn batches(&self) -> bool {
        true
    }
    /// Appends one event to a request body.
    fn encode_event(&self, body: &mut Vec<u8>, event: &Event, origin: &Origin);
    /// For receivers that answer per item inside a 2xx response: one status per item in
    /// request order, or `None` when the answer cannot be matched item by item (the whole
    /// request is then retried). Other sinks: `Some(None)` means "judge by HTTP status".
    fn item_statuses(&self, _response: &[u8], _items: usize) -> Option<Option<Vec<ItemStatus>>> {
        Some(None)
    }
    /// Whether the envelope needs each event's time (`Event::epoch_seconds`); sources
    /// that must parse it from the document skip that otherwise.
    fn needs_time(&self) -> bool {
        false
    }
    /// An endpoint that checks credentials without sending an event, if the SIEM has one.
    fn health_check_url(&self, _url: &str) -> Option<String> {
        None
    }
}

/// Every sink, by name.
pub static SINKS: [&dyn Sink; 4] = [
    &json::Json,
    &ndjson::Ndjson,
    &splunk_hec::SplunkHec,
    &opensearch_bulk::OpensearchBulk,
];

/// The sink called `name`.
pub fn by_name(name: &str) -> Option<&'static dyn Sink> {
    SINKS.iter().copied().find(|s| s.name() == name)
}

/// The names, for hints: `json, ndjson, splunk_hec, opensearch_bulk`.
pub fn names() -> String {
    SINKS
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Encodes `events` as one request body.
pub fn encode(sink: &dyn Sink, events: &[&Event], origin: &Origin) -> Vec<u8> {
    let payload_bytes: usize = events.iter().map(|e| e.payload.len() + 160).sum();
    let mut body: Vec<u8> = Vec::with_capacity(payload_bytes);
    for event in events {
        sink.encode_event(&mut body, event, origin);
    }
    body
}

/// A clearly marked synthetic event for `test_connection()`.
pub fn test_event(id: &str, timestamp: &str, database: &str) -> String {
    use crate::events::json::push_string;
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
            encode(&json::Json, &[&e], &Origin::default()),
            e.payload.as_bytes()
        );
    }

    #[test]
    fn ndjson_ends_every_line() {
        let (a, b) = (event("a", r#"{"id":"a"}"#), event("b", r#"{"id":"b"}"#));
        let body = encode(&ndjson::Ndjson, &[&a, &b], &Origin::default());
        assert_eq!(body, b"{\"id\":\"a\"}\n{\"id\":\"b\"}\n");
    }

    #[test]
    fn hec_envelopes_are_concatenated() {
        let a = event("a", r#"{"id":"a"}"#);
        let hec = Origin {
            host: "db1".into(),
            source: "pgaudit_siem:app".into(),
        };
        let body = String::from_utf8(encode(&splunk_hec::SplunkHec, &[&a, &a], &hec)).unwrap();
        let one = r#"{"time":1735138630.500000,"host":"db1","source":"pgaudit_siem:app","sourcetype":"pgaudit_siem","fields":{"event_id":"a","category":"orgs"},"event":{"id":"a"}}"#;
        assert_eq!(body, format!("{one}{one}"));
    }

    #[test]
    fn bulk_uses_the_event_id_and_ends_with_newline() {
        let a = event("0193fe52-5bed-75a4-8aec-829c1bdd9b7f", r#"{"x":1}"#);
        let body = String::from_utf8(encode(
            &opensearch_bulk::OpensearchBulk,
            &[&a],
            &Origin::default(),
        ))
        .unwrap();
        assert_eq!(
            body,
            "{\"create\":{\"_id\":\"0193fe52-5bed-75a4-8aec-829c1bdd9b7f\"}}\n{\"x\":1}\n"
        );
    }

    #[test]
    fn bulk_responses_give_item_statuses() {
        let ok =
            opensearch_bulk::bulk_items(br#"{"took":3,"errors":false,"items":[]}"#, 2).unwrap();
        assert_eq!(ok.iter().map(|i| i.0).collect::<Vec<_>>(), [200, 200]);
        let mixed = br#"{"took":3,"errors":true,"items":[{"create":{"_id":"a","status":201}},{"create":{"_id":"b","status":429,"error":{"type":"es_rejected_execution_exception","reason":"x"}}},{"create":{"_id":"c","status":409,"error":{"type":"version_conflict_engine_exception"}}}]}"#;
        let items = opensearch_bulk::bulk_items(mixed, 3).unwrap();
        assert_eq!(
            items.iter().map(|i| i.0).collect::<Vec<_>>(),
            [201, 429, 409]
        );
        assert!(
            items[1].1.contains("es_rejected_execution_exception")
                && !items[1].1.contains("version_conflict")
        );
        assert!(
            opensearch_bulk::bulk_items(mixed, 2).is_none(),
            "item count mismatch is not trusted"
        );
        assert!(opensearch_bulk::bulk_items(b"ok", 1).is_none());
    }

    #[test]
    fn every_sink_is_registered_under_its_name() {
        assert_eq!(names(), "json, ndjson, splunk_hec, opensearch_bulk");
        for sink in SINKS {
            assert_eq!(by_name(sink.name()).map(|s| s.name()), Some(sink.name()));
        }
        assert!(by_name("xml").is_none());
        assert!(!json::Json.batches() && ndjson::Ndjson.batches());
    }

    #[test]
    fn test_event_is_marked() {
        let e = test_event("id1", "2026-01-01T00:00:00Z", "app");
        assert!(e.contains(r#""category":"pgaudit_siem_test""#) && e.contains(r#""test":true"#));
    }
}
