//! `ndjson`: events one per line, every line ending in `\n` (Vector, Fluent Bit, Logstash
//! HTTP inputs).

use super::{Event, Origin, Sink};

pub struct Ndjson;

impl Sink for Ndjson {
    fn name(&self) -> &'static str {
        "ndjson"
    }
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }
    fn encode_event(&self, body: &mut Vec<u8>, event: &Event, _origin: &Origin) {
        body.extend_from_slice(event.payload.as_bytes());
        body.push(b'\n');
    }
}
