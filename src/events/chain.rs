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
    if plain_run(s.as_bytes()) == s.len() {
        // Nothing to escape (the common case): the bytes as they are.
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(digest.len() * 2);
    for b in digest {
        text.push(char::from(HEX[usize::from(b >> 4)]));
        text.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    text
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
        self.seal_checked(key, record, is_canonical(record))
    }

    /// [`Chain::seal`] when the caller already knows whether `record` is canonical
    /// ([`canonical_members`] on these very bytes).
    pub fn seal_checked(
        &self,
        key: Option<&[u8]>,
        record: &[u8],
        canonical_already: bool,
    ) -> Result<(Vec<u8>, String), String> {
        let mut sealed = if canonical_already {
            // Written in canonical form already (the session-audit records are): hashing
            // the bytes as they are gives the same hash without a parse.
            let mut sealed = Vec::with_capacity(record.len() + SEAL_BYTES);
            sealed.extend_from_slice(record);
            sealed
        } else {
            canonical_of(record)?
        };
        let (hash, member) = self.link_member(key, &sealed);
        sealed.pop();
        sealed.extend_from_slice(member.as_bytes());
        Ok((sealed, hash))
    }

    /// [`Chain::seal_checked`] for a record the caller owns as text: a canonical one is
    /// sealed in its own buffer, neither copied nor validated again. `Err` gives back
    /// the record, unsealed, when it is not a JSON object.
    pub fn seal_owned(
        &self,
        key: Option<&[u8]>,
        record: String,
        canonical_already: bool,
    ) -> Result<(String, String), String> {
        let mut sealed = if canonical_already {
            record
        } else {
            match canonical_of(record.as_bytes()).map(String::from_utf8) {
                Ok(Ok(canonical)) => canonical,
                _ => return Err(record),
            }
        };
        let (hash, member) = self.link_member(key, sealed.as_bytes());
        sealed.pop();
        sealed.push_str(&member);
        Ok((sealed, hash))
    }

    /// Hashes `canonical` (a canonical record without `chain`) after the chain's last
    /// record; returns the hash and what replaces the record's closing `}`: the `chain`
    /// member and the `}`.
    fn link_member(&self, key: Option<&[u8]>, canonical: &[u8]) -> (String, String) {
        let hash = link(key, &self.prev, canonical);
        let mut member = Vec::with_capacity(SEAL_BYTES);
        if canonical.len() > 2 {
            member.push(b',');
        }
        member.extend_from_slice(b"\"chain\":{\"alg\":");
        write_string(algorithm(key), &mut member);
        member.extend_from_slice(b",\"hash\":");
        write_string(&hash, &mut member);
        member.extend_from_slice(b",\"prev\":");
        write_string(&self.prev, &mut member);
        member.extend_from_slice(b",\"stream\":");
        write_string(&self.stream, &mut member);
        member.extend_from_slice(b"}}");
        // JSON written from `str`s only.
        let member = String::from_utf8(member)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        (hash, member)
    }
}

/// Room for the `chain` member a sealed record gains.
const SEAL_BYTES: usize = 256;

/// The canonical form of a record without its `chain` member (parsed first).
fn canonical_of(record: &[u8]) -> Result<Vec<u8>, String> {
    let mut value: Value =
        serde_json::from_slice(record).map_err(|e| format!("a record is not JSON: {e}"))?;
    let Some(members) = value.as_object_mut() else {
        return Err("a record is not a JSON object".into());
    };
    members.remove("chain");
    Ok(canonical(&value))
}

/// Whether `record` is a JSON object already in the canonical form [`canonical`] would
/// give it, without a `chain` member: then its bytes are what is hashed. Conservative:
/// anything it is not sure of (a key that is not plain ASCII, a number that is not a
/// short integer, an escape JCS would not write) answers `false`, and the caller
/// canonicalises the parsed record instead, so the hash never depends on this check
/// being complete, only on it being right when it says `true`.
pub fn is_canonical(record: &[u8]) -> bool {
    canonical_members(record, []).is_some()
}

/// [`is_canonical`], and if so the raw values of the top-level members `names` (as
/// `events::json::top_level_members` gives them), found in the same pass.
pub fn canonical_members<'a, const N: usize>(
    record: &'a [u8],
    names: [&[u8]; N],
) -> Option<[Option<&'a [u8]>; N]> {
    let text = std::str::from_utf8(record).ok()?;
    canonical_text_members(text, names)
}

/// [`canonical_members`] of a record already known to be UTF-8 (not validated again).
pub fn canonical_text_members<'a, const N: usize>(
    record: &'a str,
    names: [&[u8]; N],
) -> Option<[Option<&'a [u8]>; N]> {
    let record = record.as_bytes();
    if record.first() != Some(&b'{') {
        return None;
    }
    let mut scan = Canonical {
        bytes: record,
        at: 0,
        depth: 0,
    };
    let mut found = [None; N];
    (scan.object(Some((&names, &mut found))) && scan.at == record.len()).then_some(found)
}

/// The top-level members a [`Canonical`] scan collects: names, and where each value is.
type Wanted<'n, 'f, 'a, const N: usize> = (&'n [&'n [u8]; N], &'f mut [Option<&'a [u8]>; N]);

/// The deepest nesting [`is_canonical`] follows (records nest three levels).
const MAX_CANONICAL_DEPTH: usize = 32;

struct Canonical<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: usize,
}

impl<'a> Canonical<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let ok = self.peek() == Some(b);
        self.at += usize::from(ok);
        ok
    }

    fn value(&mut self) -> bool {
        match self.peek() {
            Some(b'{') => self.object::<0>(None),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().is_some(),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let ok = self.bytes[self.at..].starts_with(word);
        self.at += if ok { word.len() } else { 0 };
        ok
    }

    /// `-?(0|[1-9][0-9]*)` with at most 18 digits: an i64 written back unchanged.
    fn integer(&mut self) -> bool {
        let negative = self.eat(b'-');
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = &self.bytes[start..self.at];
        let ok = !digits.is_empty()
            && digits.len() <= 18
            && !(digits[0] == b'0' && (digits.len() > 1 || negative));
        ok && !matches!(self.peek(), Some(b'.' | b'e' | b'E'))
    }

    /// A string as JCS writes it; returns its raw bytes (between the quotes).
    fn string(&mut self) -> Option<(usize, usize)> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        loop {
            self.at += plain_run(&self.bytes[self.at..]);
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some((start, self.at - 1));
                }
                b'\\' => {
                    let escape = *self.bytes.get(self.at + 1)?;
                    match escape {
                        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                        b'u' => {
                            // Only controls without a short form, in lowercase hex.
                            let hex = self.bytes.get(self.at + 2..self.at + 6)?;
                            let lower = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
                            if hex[0] != b'0'
                                || hex[1] != b'0'
                                || !matches!(hex[2], b'0' | b'1')
                                || !lower(hex[3])
                            {
                                return None;
                            }
                            let code = (hex[2] - b'0') * 16
                                + if hex[3] <= b'9' {
                                    hex[3] - b'0'
                                } else {
                                    hex[3] - b'a' + 10
                                };
                            if matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            self.at += 6;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a raw control character
            }
        }
    }

    fn array(&mut self) -> bool {
        self.depth += 1;
        if self.depth > MAX_CANONICAL_DEPTH || !self.eat(b'[') {
            return false;
        }
        if !self.eat(b']') {
            loop {
                if !self.value() {
                    return false;
                }
                if self.eat(b']') {
                    break;
                }
                if !self.eat(b',') {
                    return false;
                }
            }
        }
        self.depth -= 1;
        true
    }

    /// Members in strictly increasing key order (plain ASCII keys compare as UTF-16
    /// does); the top level (`wanted` given) must not hold `chain`, and the values of
    /// the wanted members are noted.
    fn object<const N: usize>(&mut self, mut wanted: Option<Wanted<'_, '_, 'a, N>>) -> bool {
        let top = wanted.is_some();
        self.depth += 1;
        if self.depth > MAX_CANONICAL_DEPTH || !self.eat(b'{') {
            return false;
        }
        if !self.eat(b'}') {
            let mut previous: Option<(usize, usize)> = None;
            loop {
                let Some((start, end)) = self.string() else {
                    return false;
                };
                let key = &self.bytes[start..end];
                if !key.iter().all(|b| b.is_ascii() && *b != b'\\')
                    || previous.is_some_and(|(s, e)| self.bytes[s..e] >= *key)
                    || (top && key == b"chain")
                {
                    return false;
                }
                previous = Some((start, end));
                if !self.eat(b':') {
                    return false;
                }
                let value_start = self.at;
                if !self.value() {
                    return false;
                }
                if let Some((names, found)) = wanted.as_mut() {
                    for (name, slot) in names.iter().zip(found.iter_mut()) {
                        if *name == key {
                            *slot = Some(&self.bytes[value_start..self.at]);
                        }
                    }
                }
                if self.eat(b'}') {
                    break;
                }
                if !self.eat(b',') {
                    return false;
                }
            }
        }
        self.depth -= 1;
        true
    }
}

/// How many leading bytes of `bytes` a string holds as they are (no quote, backslash
/// or control character), eight at a time.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let special = |word: u64| {
        let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        // Bytes below 0x20 (bytes of 0x80 and above are UTF-8, never special).
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
        zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')))
            | control
    };
    let mut at = 0;
    // 32 bytes at a time: four words or'ed together without a branch between them.
    while let Some(block) = bytes.get(at..at + 32) {
        let word =
            |i: usize| u64::from_le_bytes(block[i * 8..i * 8 + 8].try_into().expect("eight bytes"));
        if (special(word(0)) | special(word(1)) | special(word(2)) | special(word(3))) != 0 {
            break;
        }
        at += 32;
    }
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        if special(word) != 0 {
            break;
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        at += 1;
    }
    at
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

    /// A small deterministic generator of JSON values (no extra dependency).
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn text(&mut self) -> String {
            const PIECES: &[&str] = &[
                "a",
                "Z",
                " ",
                "\"",
                "\\",
                "/",
                "\n",
                "\t",
                "\r",
                "\u{8}",
                "\u{c}",
                "\u{1}",
                "\u{1f}",
                "\u{7f}",
                "é",
                "€",
                "\u{2028}",
                "\u{10000}",
                "\u{fb01}",
                "0",
                ",\"k\":",
            ];
            (0..self.below(12))
                .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
                .collect()
        }

        fn value(&mut self, depth: u32) -> Value {
            match self.below(if depth > 3 { 5 } else { 7 }) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 => Value::from((self.next() as i64) >> self.below(64)),
                3 => Value::from(self.below(1000) as f64 / 8.0),
                4 => Value::String(self.text()),
                5 => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
                _ => {
                    const KEYS: &[&str] =
                        &["id", "a", "b_c", "sequence", "chain", "Z", "é", "\u{10000}"];
                    let mut members = serde_json::Map::new();
                    for _ in 0..self.below(6) {
                        let key = KEYS[self.below(KEYS.len() as u64) as usize];
                        members.insert(key.to_owned(), self.value(depth + 1));
                    }
                    Value::Object(members)
                }
            }
        }
    }

    #[test]
    fn plain_runs_stop_at_the_first_quote_backslash_or_control_wherever_it_is() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        for len in 0..100 {
            let plain: Vec<u8> = (0..len).map(|i| b"az~ \x7f\xc3\xa9"[i % 7]).collect();
            assert_eq!(plain_run(&plain), len);
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut text = plain.clone();
                    text[at] = special;
                    assert_eq!(plain_run(&text), naive(&text), "{len} {at} {special}");
                }
            }
        }
    }

    #[test]
    fn the_canonical_check_never_accepts_what_canonicalising_would_change() {
        let chain = Chain {
            stream: "s".into(),
            prev: GENESIS.into(),
        };
        let mut random = Random(0x2545_f491_4f6c_dd1d);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut value = random.value(0);
            if !value.is_object() {
                value = serde_json::json!({ "v": value });
            }
            let variants = [
                canonical(&value),
                serde_json::to_vec(&value).unwrap(),
                serde_json::to_vec_pretty(&value).unwrap(),
            ];
            for text in variants {
                let names: [&[u8]; 3] = [b"id", b"sequence", b"a"];
                if let Some(found) = canonical_members(&text, names) {
                    // The one-pass lookup finds each top-level member's value, whole.
                    let parsed: Value = serde_json::from_slice(&text).unwrap();
                    for (name, raw) in names.iter().zip(found) {
                        let name = std::str::from_utf8(name).unwrap();
                        let raw = raw.map(|r| serde_json::from_slice::<Value>(r).unwrap());
                        assert_eq!(raw.as_ref(), parsed.get(name));
                    }
                    accepted += 1;
                    assert_eq!(
                        canonical(&serde_json::from_slice(&text).unwrap()),
                        text,
                        "accepted a record canonicalising would change: {}",
                        String::from_utf8_lossy(&text)
                    );
                }
                // Either way the hash is the one of the parsed record's canonical form.
                if let Ok(slow) = chain.seal_checked(None, &text, false) {
                    assert_eq!(chain.seal(None, &text).unwrap(), slow);
                    // Sealing an owned record (the shipper's way) gives the same bytes.
                    let owned = String::from_utf8(text.clone()).unwrap();
                    let fast = canonical_text_members(&owned, []).is_some();
                    let (sealed, hash) = chain.seal_owned(None, owned, fast).unwrap();
                    assert_eq!((sealed.into_bytes(), hash), slow);
                }
            }
        }
        assert!(accepted > 5_000, "the fast path is taken ({accepted})");
    }

    #[test]
    fn the_canonical_check_refuses_each_kind_of_difference() {
        for text in [
            r#"{"a":1,"b":2}"#,
            r#"{"a":{"b":[1,-2,true,false,null,"x\u001f\n\"\\é"]},"z":{}}"#,
            "{}",
        ] {
            assert!(is_canonical(text.as_bytes()), "{text}");
        }
        for text in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a": 1}"#,
            r#" {"a":1}"#,
            r#"{"a":1} "#,
            r#"{"a":"\/"}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"\u000A"}"#,
            r#"{"a":"\u000a"}"#,
            r#"{"a":"\u001F"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":1.0}"#,
            r#"{"a":1e3}"#,
            r#"{"a":-0}"#,
            r#"{"a":01}"#,
            r#"{"a":12345678901234567890}"#,
            r#"{"chain":1}"#,
            r#"{"é":1}"#,
            r#"{"a\"":1}"#,
            r#"[1]"#,
            r#"{"a":1"#,
            r#"{"a":tru}"#,
        ] {
            assert!(!is_canonical(text.as_bytes()), "{text}");
        }
        assert!(!is_canonical(b"{\"a\":\"\xff\"}"));
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
