//! The change event: what is known about a statement's change besides its rows, and the
//! JSON document of one part, on the shared envelope (`events::envelope`).
//!
//! # Invariants
//! - Identity comes from PostgreSQL, never from the caller: database, roles, client
//!   address, application name, top-level transaction id.
//! - Every part of a statement shares the context (time, transaction); each part has its
//!   own id, strictly increasing within the backend.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::rows::Part;
use crate::events::{envelope::Head, id, json, time};
use crate::pg::names;

/// What a statement did to the table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Truncate => "truncate",
        }
    }
}

/// Everything about the event except the rows.
pub struct EventContext {
    pub category: String,
    pub action: Action,
    pub relid: pg_sys::Oid,
    pub schema: String,
    pub table: String,
    pub database: String,
    pub transaction_id: u64,
    pub session_user: String,
    pub current_user: String,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub unix_micros: i64,
}

thread_local! {
    static CLIENT_ADDR: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// The client's address as `inet_client_addr()` shows it, cached per backend.
fn client_addr() -> Option<String> {
    if let Some(cached) = CLIENT_ADDR.with(|c| c.borrow().clone()) {
        return cached;
    }
    let addr = crate::pg::internal::run(|| {
        Spi::get_one::<String>("SELECT pg_catalog.host(pg_catalog.inet_client_addr())")
    })
    .ok()
    .flatten();
    CLIENT_ADDR.with(|c| *c.borrow_mut() = Some(addr.clone()));
    addr
}

impl EventContext {
    pub fn current(category: &str, action: Action, relation: pg_sys::Relation) -> EventContext {
        // SAFETY: relation is open; catalog/name lookups on valid oids; the transaction
        // already has an xid because the statement wrote rows (TRUNCATE assigns one too).
        unsafe {
            let relid = (*relation).rd_id;
            let namespace = (*(*relation).rd_rel).relnamespace;
            EventContext {
                category: category.to_owned(),
                action,
                relid,
                schema: names::schema(namespace),
                table: names::cstr_or_empty((*(*relation).rd_rel).relname.data.as_ptr()),
                database: names::database(),
                transaction_id: pg_sys::GetTopFullTransactionId().value,
                session_user: names::role(pg_sys::GetSessionUserId()),
                current_user: names::role(pg_sys::GetUserId()),
                application_name: names::cstr_or_empty(pg_sys::application_name),
                client_addr: client_addr(),
                unix_micros: time::now_unix_micros(),
            }
        }
    }

    /// The event document for one part.
    pub fn payload(
        &self,
        row_count: Option<u64>,
        part: usize,
        parts: usize,
        rows: &Part,
    ) -> (Vec<u8>, [u8; 16]) {
        let id = id::next_id(self.unix_micros);
        let mut out = Vec::with_capacity(rows.bytes() + 768);
        let head = Head {
            id,
            unix_micros: self.unix_micros,
            category: &self.category,
            action: self.action.name(),
        };
        head.write(&mut out, &self.database, &self.session_user);
        out.extend_from_slice(b",\"changes\":{\"processed_row_count\":");
        match row_count {
            Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(
            format!(",\"part\":{part},\"part_count\":{parts},\"data_before\":[").as_bytes(),
        );
        out.extend_from_slice(&rows.before);
        out.extend_from_slice(b"],\"data_after\":[");
        out.extend_from_slice(&rows.after);
        out.extend_from_slice(b"]},\"source\":{\"database\":");
        json::push_string(&mut out, self.database.as_bytes());
        out.extend_from_slice(b",\"schema\":");
        json::push_string(&mut out, self.schema.as_bytes());
        out.extend_from_slice(b",\"table\":");
        json::push_string(&mut out, self.table.as_bytes());
        out.extend_from_slice(
            format!(
                ",\"transaction_id\":{},\"session_user\":",
                self.transaction_id
            )
            .as_bytes(),
        );
        json::push_string(&mut out, self.session_user.as_bytes());
        out.extend_from_slice(b",\"current_user\":");
        json::push_string(&mut out, self.current_user.as_bytes());
        out.extend_from_slice(b",\"application_name\":");
        json::push_string(&mut out, self.application_name.as_bytes());
        out.extend_from_slice(b",\"client_addr\":");
        match &self.client_addr {
            Some(addr) => json::push_string(&mut out, addr.as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}}");
        (out, *id.as_bytes())
    }
}
