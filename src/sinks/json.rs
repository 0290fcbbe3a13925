//! `json`: one event per request, the event document exactly as the source made it.

use super::{Event, Origin, Sink};

pub struct Json;

impl Sink for Json {
    fn name(&self) -> &'static str {
        "json"
    }
    fn content_type(&self) -> &'static str {
        "application/json"
    }
    fn batches(&self) -> bool {
        false
    }
    fn encode_event(&self, body: &mut Vec<u8>, event: &Event, _origin: &Origin) {
        body.extend_from_slice(event.payload.as_bytes());
    }
}
