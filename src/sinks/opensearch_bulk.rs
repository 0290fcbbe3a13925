//! `opensearch_bulk`: `create` actions with the event id as `_id` (a redelivered event
//! collides with 409 instead of being indexed twice); the body ends with `\n`. The bulk
//! API answers 200 with a status per item, which decides each event's fate.

use super::{Event, ItemStatus, Origin, Sink};
use crate::events::json::push_string;

pub struct OpensearchBulk;

impl Sink for OpensearchBulk {
    fn name(&self) -> &'static str {
        "opensearch_bulk"
    }
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }
    fn encode_event(&self, body: &mut Vec<u8>, event: &Event, _origin: &Origin) {
        body.extend_from_slice(b"{\"create\":{\"_id\":");
        push_string(body, event.id.as_bytes());
        body.extend_from_slice(b"}}\n");
        body.extend_from_slice(event.payload.as_bytes());
        body.push(b'\n');
    }
    fn item_statuses(&self, response: &[u8], items: usize) -> Option<Option<Vec<ItemStatus>>> {
        bulk_items(response, items).map(Some)
    }
}

/// The per-item outcome of a bulk response: `None` if the response is not a bulk
/// response for these items, otherwise one (HTTP status, the item's own answer as JSON
/// text) per item, in request order.
pub fn bulk_items(response: &[u8], expected_items: usize) -> Option<Vec<ItemStatus>> {
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
