//! The envelope every event shares, whatever its source (change capture today, the
//! session-audit stream next): `id`, `timestamp`, `event {category, action}`, `org` and
//! `actor`. A source appends its own members after the head and closes the object.
//!
//! # Invariants
//! - `actor`/`org` come from the `pgaudit_siem.actor_*`/`org_*` settings when set; with
//!   no actor id or email the actor is the session's login role, with no org the org is
//!   the database.
//! - Members are written in one fixed order, so a receiver can read the head of a
//!   document without parsing the rest.

use uuid::Uuid;

use super::json;
use super::time;
use crate::settings;

/// The identity and time of one event.
pub struct Head<'a> {
    pub id: Uuid,
    pub unix_micros: i64,
    pub category: &'a str,
    pub action: &'a str,
}

impl Head<'_> {
    /// Appends `{"id":…,"timestamp":…,"event":{…},"org":{…},"actor":{…}` (object left
    /// open for the source's members).
    pub fn write(&self, out: &mut Vec<u8>, database: &str, session_user: &str) {
        write_identity(out, self.id, self.unix_micros);
        write_event(out, self.category, self.action, database, session_user);
    }
}

/// Appends `{"id":…,"timestamp":…` (the object left open).
pub fn write_identity(out: &mut Vec<u8>, id: Uuid, unix_micros: i64) {
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(
        id.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"timestamp\":");
    json::push_string(out, time::rfc3339_utc(unix_micros).as_bytes());
}

/// Appends `,"event":{…},"org":{…},"actor":{…}`.
pub fn write_event(
    out: &mut Vec<u8>,
    category: &str,
    action: &str,
    database: &str,
    session_user: &str,
) {
    out.extend_from_slice(b",\"event\":{\"category\":");
    json::push_string(out, category.as_bytes());
    out.extend_from_slice(b",\"action\":");
    json::push_string(out, action.as_bytes());
    out.extend_from_slice(b"},\"org\":");
    push_org(out, database);
    out.extend_from_slice(b",\"actor\":");
    push_actor(out, session_user);
}

/// `org`: from `pgaudit_siem.org_*`, or the current database when no org is set.
fn push_org(out: &mut Vec<u8>, database: &str) {
    let (id, name, alias) = settings::org();
    if id.is_empty() && name.is_empty() && alias.is_empty() {
        out.extend_from_slice(b"{\"id\":null,\"name\":");
        json::push_string(out, database.as_bytes());
        out.extend_from_slice(b",\"alias\":");
        json::push_string(out, database.as_bytes());
        out.push(b'}');
        return;
    }
    out.extend_from_slice(b"{\"id\":");
    json::push_id(out, &id);
    out.extend_from_slice(b",\"name\":");
    json::push_optional_string(out, &name);
    out.extend_from_slice(b",\"alias\":");
    json::push_optional_string(out, &alias);
    out.push(b'}');
}

/// `actor`: from `pgaudit_siem.actor_*`, or the login role when no actor id is set.
fn push_actor(out: &mut Vec<u8>, session_user: &str) {
    let (id, email, first_name, last_name) = settings::actor();
    out.extend_from_slice(b"{\"id\":");
    if id.is_empty() && email.is_empty() {
        json::push_string(out, session_user.as_bytes());
    } else {
        json::push_id(out, &id);
    }
    out.extend_from_slice(b",\"email\":");
    json::push_optional_string(out, &email);
    out.extend_from_slice(b",\"first_name\":");
    json::push_optional_string(out, &first_name);
    out.extend_from_slice(b",\"last_name\":");
    json::push_optional_string(out, &last_name);
    out.push(b'}');
}
