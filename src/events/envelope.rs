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
    out.extend_from_slice(b",\"event\":");
    push_event(out, category, action, Order::Fixed);
    out.extend_from_slice(b",\"org\":");
    push_org(out, database, Order::Fixed);
    out.extend_from_slice(b",\"actor\":");
    push_actor(out, session_user, Order::Fixed);
}

/// Whether an object's members are written in the envelope's fixed order (change events)
/// or in name order (the session-audit records, which are written in their canonical
/// RFC 8785 form so that the hash chain needs no parse).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Fixed,
    Sorted,
}

/// `event`: `{"category":…,"action":…}` (in name order: action first).
pub fn push_event(out: &mut Vec<u8>, category: &str, action: &str, order: Order) {
    let (first, second) = match order {
        Order::Fixed => (("category", category), ("action", action)),
        Order::Sorted => (("action", action), ("category", category)),
    };
    out.push(b'{');
    push_member_start(out, first.0, true);
    json::push_string(out, first.1.as_bytes());
    push_member_start(out, second.0, false);
    json::push_string(out, second.1.as_bytes());
    out.push(b'}');
}

/// `"name":` (after a comma unless `first`).
fn push_member_start(out: &mut Vec<u8>, name: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `org`: from `pgaudit_siem.org_*`, or the current database when no org is set.
pub fn push_org(out: &mut Vec<u8>, database: &str, order: Order) {
    let (id, name, alias) = settings::org();
    let from_settings = !(id.is_empty() && name.is_empty() && alias.is_empty());
    let write_id = |out: &mut Vec<u8>| {
        if from_settings {
            json::push_id(out, &id);
        } else {
            out.extend_from_slice(b"null");
        }
    };
    let write_text = |out: &mut Vec<u8>, value: &str| {
        if from_settings {
            json::push_optional_string(out, value);
        } else {
            json::push_string(out, database.as_bytes());
        }
    };
    out.push(b'{');
    match order {
        Order::Fixed => {
            push_member_start(out, "id", true);
            write_id(out);
            push_member_start(out, "name", false);
            write_text(out, &name);
            push_member_start(out, "alias", false);
            write_text(out, &alias);
        }
        Order::Sorted => {
            push_member_start(out, "alias", true);
            write_text(out, &alias);
            push_member_start(out, "id", false);
            write_id(out);
            push_member_start(out, "name", false);
            write_text(out, &name);
        }
    }
    out.push(b'}');
}

/// `actor`: from `pgaudit_siem.actor_*`, or the login role when no actor id is set.
pub fn push_actor(out: &mut Vec<u8>, session_user: &str, order: Order) {
    let (id, email, first_name, last_name) = settings::actor();
    let write_id = |out: &mut Vec<u8>| {
        if id.is_empty() && email.is_empty() {
            json::push_string(out, session_user.as_bytes());
        } else {
            json::push_id(out, &id);
        }
    };
    out.push(b'{');
    if order == Order::Fixed {
        push_member_start(out, "id", true);
        write_id(out);
    }
    push_member_start(out, "email", order == Order::Sorted);
    json::push_optional_string(out, &email);
    push_member_start(out, "first_name", false);
    json::push_optional_string(out, &first_name);
    if order == Order::Sorted {
        push_member_start(out, "id", false);
        write_id(out);
    }
    push_member_start(out, "last_name", false);
    json::push_optional_string(out, &last_name);
    out.push(b'}');
}
