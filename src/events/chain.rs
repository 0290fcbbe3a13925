//! The tamper-evident hash chain over shipped records: each record carries
//! `"chain": {"alg", "stream", "prev", "hash"}`, where `hash` is HMAC-SHA256 (with the
//! key of `pgaudit_siem.chain_key_file`) or plain SHA-256 (without a key) over `prev`
//! followed by the record's canonical JSON (RFC 8785 JCS, without its `chain` member).
//! A SIEM that re-serialises the JSON does not break verification.
//!
//! Pure Rust without PostgreSQL: the extension's shippers and the verifier
//! (`verify/`, which includes this file) share it.
//!
//! # Invariants
//! - Canonical form: object members sorted by their UTF-16 code units, no whitespace,
//!   strings escaped as JCS says (`\b \t \n \f \r \" \\`, other controls as `\u00xx`),
//!   integers as decimal digits. The records the extension writes hold no fractional
//!   numbers; others are written in Rust's shortest round-trip form.
//! - The first record of a chain has `prev` = [`GENESIS`].

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev` of a chain's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain's algorithm name for the key in use.
pub fn algorithm(key: Option<&[u8]>) -> &'static str {
    if key.is_some() {
        "hmac-sha256"
    } else {
        "sha256"
    }
}

/// The canonical (RFC 8785) form of `value`.
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e21 {
                    out.extend_from_slice(format!("{}", f as i128).as_bytes());
                } else {
                    out.extend_from_slice(format!("{f}").as_bytes());
                }
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut keys: Vec<(&String, Vec<u16>)> = members
                .keys()
                .map(|k| (k, k.encode_utf16().collect()))
                .collect();
            keys.sort_by(|a, b| a.1.cmp(&b.1));
            out.push(b'{');
            for (i, (key, _)) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(&members[key.as_str()], out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{9}' => out.extend_from_slice(b"\\t"),
            '\u{a}' => out.extend_from_slice(b"\\n"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\u{d}' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// The hash of a record whose canonical form (without `chain`) is `canonical`, after
/// the record whose hash is `prev`: lowercase hex.
pub fn link(key: Option<&[u8]>, prev: &str, canonical: &[u8]) -> String {
    let digest: Vec<u8> = match key {
        Some(key) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(prev.as_bytes());
            mac.update(canonical);
            mac.finalize().into_bytes().to_vec()
        }
        None => {
            let mut hasher = Sha256::new();
            hasher.update(prev.as_bytes());
            hasher.update(canonical);
            hasher.finalize().to_vec()
        }
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A chain being extended: its id (the session stream's id, or `database:<oid>` of an
/// outbox) and the hash of its last record.
#[derive(Clone, Debug)]
pub struct Chain {
    pub stream: String,
    pub prev: String,
}

impl Chain {
    /// Links `record` (a JSON object without `chain`) after the chain's last record and
    /// returns the record as shipped: its canonical form with the `chain` member added,
    /// and its hash (the caller moves `prev` once the record is acknowledged).
    pub fn seal(&self, key: Option<&[u8]>, record: &[u8]) -> Result<(Vec<u8>, String), String> {
        let mut value: Value =
            serde_json::from_slice(record).map_err(|e| format!("a record is not JSON: {e}"))?;
        let Some(members) = value.as_object_mut() else {
            return Err("a record is not a JSON object".into());
        };
        members.remove("chain");
        let canonical = canonical(&value);
        let hash = link(key, &self.prev, &canonical);
        let mut sealed = canonical;
        sealed.pop();
        if sealed.len() > 1 {
            sealed.push(b',');
        }
        sealed.extend_from_slice(b"\"chain\":{\"alg\":");
        write_string(algorithm(key), &mut sealed);
        sealed.extend_from_slice(b",\"hash\":");
        write_string(&hash, &mut sealed);
        sealed.extend_from_slice(b",\"prev\":");
        write_string(&self.prev, &mut sealed);
        sealed.extend_from_slice(b",\"stream\":");
        write_string(&self.stream, &mut sealed);
        sealed.extend_from_slice(b"}}");
        Ok((sealed, hash))
    }
}

/// What a received record says about its place in a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub stream: String,
    pub prev: String,
    pub hash: String,
    /// The hash recomputed from the record (equal to `hash` unless it was altered).
    pub computed: String,
    /// Its canonical form without `chain` (to tell an exact duplicate).
    pub canonical: Vec<u8>,
}

/// Reads the chain member of a received record and recomputes its hash.
pub fn examine(key: Option<&[u8]>, record: &Value) -> Result<Link, String> {
    let mut record = record.clone();
    let Some(members) = record.as_object_mut() else {
        return Err("not a JSON object".into());
    };
    let Some(chain) = members.remove("chain") else {
        return Err("no chain member".into());
    };
    let field = |name: &str| -> Result<String, String> {
        chain
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("chain.{name} is missing"))
    };
    let (stream, prev, hash) = (field("stream")?, field("prev")?, field("hash")?);
    let canonical = canonical(&record);
    let computed = link(key, &prev, &canonical);
    Ok(Link {
        stream,
        prev,
        hash,
        computed,
        canonical,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_members_and_escapes_as_jcs() {
        let value: Value = serde_json::from_str(
            r#"{"b": [1, {"z": null, "a": true}], "a": "x\u0001\n\"/é", "\u20ac": 0, "c": -5}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(canonical(&value)).unwrap(),
            "{\"a\":\"x\\u0001\\n\\\"/é\",\"b\":[1,{\"a\":true,\"z\":null}],\"c\":-5,\"\u{20ac}\":0}"
        );
        // UTF-16 order: U+10000 (surrogates D800..) sorts before U+FB01.
        let value: Value = serde_json::from_str("{\"\u{fb01}\":1,\"\u{10000}\":2}").unwrap();
        assert_eq!(
            String::from_utf8(canonical(&value)).unwrap(),
            "{\"\u{10000}\":2,\"\u{fb01}\":1}"
        );
    }

    #[test]
    fn sealed_records_verify_and_any_change_shows() {
        let key = Some(b"k3y".as_slice());
        let chain = Chain {
            stream: "s".into(),
            prev: GENESIS.into(),
        };
        let (sealed, hash) = chain.seal(key, br#"{"sequence":1, "line":"x"}"#).unwrap();
        let value: Value = serde_json::from_slice(&sealed).unwrap();
        let link = examine(key, &value).unwrap();
        assert_eq!(link.hash, hash);
        assert_eq!(link.computed, hash);
        assert_eq!(link.prev, GENESIS);
        // Re-serialised with other spacing and member order: still verifies.
        let reordered: Value =
            serde_json::from_str(&serde_json::to_string_pretty(&value).unwrap()).unwrap();
        assert_eq!(examine(key, &reordered).unwrap().computed, hash);
        // One changed value, or another key, does not.
        let mut altered = value.clone();
        altered["line"] = "y".into();
        assert_ne!(examine(key, &altered).unwrap().computed, hash);
        assert_ne!(examine(Some(b"other"), &value).unwrap().computed, hash);
        assert_ne!(examine(None, &value).unwrap().computed, hash);
    }
}
