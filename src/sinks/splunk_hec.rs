//! `splunk_hec`: Splunk HTTP Event Collector envelopes (`time`, `host`, `source`,
//! `sourcetype`, `fields.event_id`, `event`) concatenated back to back, as HEC expects;
//! the HEC health endpoint checks the token for `test_connection()`.

use std::io::Write;

use super::{Event, Origin, Sink};
use crate::events::json::push_string;

pub const SOURCETYPE: &str = "pgaudit_siem";

pub struct SplunkHec;

impl Sink for SplunkHec {
    fn name(&self) -> &'static str {
        "splunk_hec"
    }
    fn content_type(&self) -> &'static str {
        "application/json"
    }
    fn encode_event(&self, body: &mut Vec<u8>, event: &Event, origin: &Origin) {
        body.extend_from_slice(b"{\"time\":");
        let _ = write!(body, "{:.6}", event.epoch_seconds);
        body.extend_from_slice(b",\"host\":");
        push_string(body, origin.host.as_bytes());
        body.extend_from_slice(b",\"source\":");
        push_string(body, origin.source.as_bytes());
        body.extend_from_slice(b",\"sourcetype\":\"");
        body.extend_from_slice(SOURCETYPE.as_bytes());
        body.extend_from_slice(b"\",\"fields\":{\"event_id\":");
        push_string(body, event.id.as_bytes());
        body.extend_from_slice(b",\"category\":");
        push_string(body, event.category.as_bytes());
        body.extend_from_slice(b"},\"event\":");
        body.extend_from_slice(event.payload.as_bytes());
        body.push(b'}');
    }
    fn needs_time(&self) -> bool {
        true
    }
    fn health_check_url(&self, url: &str) -> Option<String> {
        let uri = url.parse::<ureq::http::Uri>().ok()?;
        Some(format!(
            "{}://{}/services/collector/health/1.0",
            uri.scheme_str()?,
            uri.authority()?
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_check_is_on_the_same_host() {
        assert_eq!(
            SplunkHec
                .health_check_url("https://hec.example:8088/services/collector/event")
                .as_deref(),
            Some("https://hec.example:8088/services/collector/health/1.0")
        );
        assert_eq!(SplunkHec.health_check_url("not a url"), None);
    }
}
