//! The session-audit spool: the durable, ordered, per-server stream of AUDIT records
//! between the backends that write them and the shipper that posts them.
//!
//! Layout under the data directory, `pgaudit_siem_spool/`:
//! - `<first sequence, 16 hex digits>.seg`: append-only segments, one JSON record per
//!   line, in `sequence` order; the last may be followed by zeros (a prepared segment);
//! - `next.prepared`: a zeroed segment the shipper keeps ready for the next rotation;
//! - `identity`: the stream id and the (device, inode) of this directory;
//! - `shipped`: the last sequence the SIEM acknowledged and its chain hash;
//! - `dead_letter.ndjson`: records the SIEM refused for good, with its answer.
//!
//! # Invariants
//! - A record exists once its line would be emitted: a backend assigns the next
//!   `sequence` and writes the whole record with one `writev` (appended) or `pwritev`
//!   (over the zeros of a prepared segment, which allocates no page under the lock),
//!   under one exclusive lock, so file order is sequence order and a record in the page
//!   cache survives SIGKILL of any process, a crash restart and an immediate shutdown.
//!   Only an operating-system crash can lose what the shipper has not yet flushed
//!   (`session_audit_sync_interval`; nothing is flushed with PostgreSQL's `fsync = off`).
//! - Sequences are gapless and survive restarts: shared memory is rebuilt from the files
//!   (after a crash restart too) by the first process that needs it, which reads the
//!   last segment's records from its start while they are whole and consecutive, cuts
//!   what follows (a torn record, zeros) and continues after the last one.
//! - A copied directory (base backup, restore) is recognised by its inode: the copy's
//!   records belong to the server it was copied from, so they are dropped and the copy
//!   starts a stream of its own (new stream id, sequence 1).
//! - When the unshipped spool would exceed `session_audit_spool_max_size`, or the spool
//!   cannot be written, `append` refuses and the caller writes the line to the server log
//!   (never silently dropped); the next record that fits is preceded by an `overflow`
//!   record counting what went to the server log instead.
//! - Every buffer is bounded: a record is at most one statement's audit line plus fixed
//!   fields; readers read at most one batch.

use std::cell::RefCell;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

/// The spool directory, relative to the data directory (every server process's cwd).
pub const DIR: &str = "pgaudit_siem_spool";
const LAST_ERROR_BYTES: usize = 200;
/// No record line can be longer (records carry at most a 256 kB line, escaped twice).
const MAX_READ_LINE_BYTES: usize = 8 * 1024 * 1024;

/// The spool's shared state (rebuilt from the files when `ready` is false).
#[derive(Clone, Copy)]
pub struct SpoolState {
    ready: bool,
    /// The directory could not be used: when (Unix µs; 0 = fine). Records go to the
    /// server log; recovery is tried again after [`RETRY_BROKEN_MICROS`].
    broken_since: i64,
    next_sequence: u64,
    /// First sequence (and name) of the segment being written.
    segment: u64,
    segment_bytes: u64,
    /// The size of the segment being written when it is a prepared one (zeroed ahead by
    /// the shipper and written over its zeros with `pwritev`); 0 for one appended to.
    capacity: u64,
    /// Bytes of every segment still on disk.
    total_bytes: u64,
    /// Bytes of records not yet acknowledged (what `session_audit_spool_max_size`
    /// bounds; after a restart, conservatively everything on disk).
    unshipped_bytes: u64,
    stream_id: [u8; 16],
    /// Shipper's view, for the statistics.
    shipped: u64,
    /// The chain hash of the record `shipped` (hex), `events::chain::GENESIS` before any.
    shipped_hash: [u8; 64],
    dead_lettered: u64,
    oldest_unshipped_micros: i64,
    last_http_status: i32,
    last_error: [u8; LAST_ERROR_BYTES],
    last_error_len: usize,
    /// Records sent to the server log because the spool was full or broken.
    fallbacks: u64,
    /// Fallbacks not yet reported in the stream by an overflow record.
    overflow_pending: u64,
    overflow_since_micros: i64,
}

impl Default for SpoolState {
    fn default() -> Self {
        SpoolState {
            ready: false,
            broken_since: 0,
            next_sequence: 1,
            segment: 1,
            segment_bytes: 0,
            capacity: 0,
            total_bytes: 0,
            unshipped_bytes: 0,
            stream_id: [0; 16],
            shipped: 0,
            shipped_hash: genesis(),
            dead_lettered: 0,
            oldest_unshipped_micros: 0,
            last_http_status: 0,
            last_error: [0; LAST_ERROR_BYTES],
            last_error_len: 0,
            fallbacks: 0,
            overflow_pending: 0,
            overflow_since_micros: 0,
        }
    }
}

fn genesis() -> [u8; 64] {
    let mut hash = [0u8; 64];
    hash.copy_from_slice(super::chain::GENESIS.as_bytes());
    hash
}

/// `shipped`'s contents: the sequence, then the chain hash of that record.
fn parse_shipped(text: &str) -> (u64, [u8; 64]) {
    let mut words = text.split_whitespace();
    let sequence = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let mut hash = genesis();
    if let Some(h) = words
        .next()
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        hash.copy_from_slice(h.as_bytes());
    }
    (sequence, hash)
}

// SAFETY: plain old data (integers and byte arrays); no pointers.
unsafe impl PGRXSharedMemory for SpoolState {}

// SAFETY: initialised once from _PG_init through pg_shmem_init!, before any use.
static SPOOL: PgLwLock<SpoolState> = unsafe { PgLwLock::new(c"pgaudit_siem_session_spool") };

/// Reserves the shared state. `_PG_init` only.
pub fn init() {
    pg_shmem_init!(SPOOL);
}

pub fn segment_path(first: u64) -> PathBuf {
    Path::new(DIR).join(format!("{first:016x}.seg"))
}

fn identity_path() -> PathBuf {
    Path::new(DIR).join("identity")
}

fn shipped_path() -> PathBuf {
    Path::new(DIR).join("shipped")
}

/// Segments on disk, by first sequence, ascending.
pub fn segments() -> Vec<u64> {
    let mut found: Vec<u64> = fs::read_dir(DIR)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let hex = name.strip_suffix(".seg")?;
                    (hex.len() == 16)
                        .then(|| u64::from_str_radix(hex, 16).ok())
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_unstable();
    found
}

/// The top-level `"sequence":N` of a record line, if it has one.
pub fn sequence_of(line: &[u8]) -> Option<u64> {
    super::json::top_level_u64(line, b"sequence")
}

/// The records of the segment that starts at `first`: the last one's sequence and where
/// it ends. Records are read from the start while each is whole and numbered one after
/// the other; whatever follows (a record torn by an operating-system crash, the zeroed
/// rest of a prepared segment, bytes of a page that never reached the disk) is cut off.
/// Memory is bounded by one record.
fn last_record(path: &Path, first: u64) -> std::io::Result<(Option<u64>, u64)> {
    let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut reader = std::io::BufReader::with_capacity(1024 * 1024, &file);
    let mut line = Vec::new();
    let (mut end, mut last) = (0u64, None::<u64>);
    'records: loop {
        line.clear();
        // One line, stopping at a NUL byte (never part of a record: JSON escapes it).
        loop {
            let buffer = std::io::BufRead::fill_buf(&mut reader)?;
            if buffer.is_empty() {
                break 'records; // no newline before the end: torn, or nothing
            }
            match memchr::memchr2(b'\n', 0, buffer) {
                Some(i) if buffer[i] == b'\n' => {
                    line.extend_from_slice(&buffer[..i]);
                    std::io::BufRead::consume(&mut reader, i + 1);
                    break;
                }
                Some(_) => break 'records,
                None => {
                    let n = buffer.len();
                    line.extend_from_slice(buffer);
                    std::io::BufRead::consume(&mut reader, n);
                    if line.len() > MAX_READ_LINE_BYTES {
                        break 'records;
                    }
                }
            }
        }
        let expected = last.map_or(first, |s| s + 1);
        if sequence_of(&line) != Some(expected) {
            break;
        }
        last = Some(expected);
        end += line.len() as u64 + 1;
    }
    drop(reader);
    if end < len {
        // Never acknowledged to anyone as written: dropped, their numbers reused.
        file.set_len(end)?;
    }
    Ok((last, end))
}

fn directory_identity() -> std::io::Result<(u64, u64)> {
    let meta = fs::metadata(DIR)?;
    Ok((meta.dev(), meta.ino()))
}

/// Rebuilds `state` from the directory (under the exclusive lock).
fn recover(state: &mut SpoolState) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(DIR)?;
    let (_, ino) = directory_identity()?;
    // Only a missing identity file means "new"; any other read error stops here (the
    // spool is left alone and recovery is retried later).
    let recorded = match fs::read_to_string(identity_path()) {
        Ok(text) => {
            let mut parts = text.split_whitespace();
            let parsed = (|| {
                let id = uuid::Uuid::parse_str(parts.next()?).ok()?;
                let _device: u64 = parts.next()?.parse().ok()?;
                let inode: u64 = parts.next()?.parse().ok()?;
                Some((id, inode))
            })();
            Some(parsed.ok_or_else(|| std::io::Error::other("unreadable identity file"))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let stream_id = match recorded {
        // The inode alone: device numbers of some filesystems change across mounts.
        Some((id, inode)) if inode == ino => id,
        previous => {
            // New, or a copy of another server's spool: its records are not ours to
            // ship. They are kept aside (never deleted) under foreign-<stream>/.
            let existing = segments();
            if !existing.is_empty() {
                let label = previous.map_or_else(|| "unknown".to_owned(), |(id, _)| id.to_string());
                let aside = Path::new(DIR).join(format!("foreign-{label}"));
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&aside)?;
                for first in existing {
                    fs::rename(segment_path(first), aside.join(format!("{first:016x}.seg")))?;
                }
                let _ = fs::rename(shipped_path(), aside.join("shipped"));
            } else {
                let _ = fs::remove_file(shipped_path());
            }
            let id = super::id::next_id(super::time::now_unix_micros());
            let temporary = Path::new(DIR).join("identity.tmp");
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)?;
            writeln!(file, "{id} 0 {ino}")?;
            file.sync_all()?;
            fs::rename(&temporary, identity_path())?;
            fs::File::open(DIR)?.sync_all()?;
            id
        }
    };
    let (shipped, shipped_hash) =
        parse_shipped(&fs::read_to_string(shipped_path()).unwrap_or_default());
    let list = segments();
    let mut total = 0u64;
    for first in &list {
        total += fs::metadata(segment_path(*first))
            .map(|m| m.len())
            .unwrap_or(0);
    }
    let (segment, segment_bytes, next) = match list.last() {
        Some(&last) => {
            let (last_sequence, size) = last_record(&segment_path(last), last)?;
            total = total.saturating_sub(
                fs::metadata(segment_path(last))
                    .map(|m| m.len())
                    .unwrap_or(0),
            ) + size;
            (last, size, last_sequence.map_or(last, |s| s + 1))
        }
        None => (shipped + 1, 0, shipped + 1),
    };
    let next = next.max(shipped + 1);
    let segment = if list.is_empty() || segment > next {
        next
    } else {
        segment
    };
    fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(segment_path(segment))?;
    state.stream_id = *stream_id.as_bytes();
    state.next_sequence = next;
    state.segment = segment;
    state.segment_bytes = segment_bytes;
    // Recovery cuts the segment to its records: it continues as a written one.
    state.capacity = 0;
    state.total_bytes = total;
    // Segments whose records are all shipped (kept for session_audit_retention) do not
    // count against the spool's limit; the one holding the shipped position does, whole.
    let retained: u64 = list
        .windows(2)
        .filter(|w| w[1] <= shipped + 1)
        .map(|w| {
            fs::metadata(segment_path(w[0]))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    state.unshipped_bytes = total.saturating_sub(retained);
    state.shipped = shipped;
    state.shipped_hash = shipped_hash;
    state.ready = true;
    state.broken_since = 0;
    Ok(())
}

const RETRY_BROKEN_MICROS: i64 = 10_000_000;

/// Makes sure the shared state reflects the directory (after start or a crash restart).
/// `Err` carries the problem to report once the lock is released (a WARNING may block
/// on the client's socket: never under the lock).
fn ensure_ready(state: &mut SpoolState) -> Result<(), Option<String>> {
    if state.ready {
        return Ok(());
    }
    let now = super::time::now_unix_micros();
    if state.broken_since != 0 && now - state.broken_since < RETRY_BROKEN_MICROS {
        return Err(None);
    }
    match recover(state) {
        Ok(()) => Ok(()),
        Err(e) => {
            state.broken_since = now;
            Err(Some(format!("pgaudit_siem: the session-audit spool {DIR} cannot be used ({e}); AUDIT lines go to the server log")))
        }
    }
}

fn report(problem: Result<(), Option<String>>) {
    if let Err(Some(message)) = problem {
        warn(&message);
    }
}

thread_local! {
    /// Set while a record is written from PostgreSQL's error reporting or
    /// authentication, where raising even a WARNING would recurse.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the spool's own WARNINGs suppressed (the caller's record then just
/// fails; what it describes is in the server log already).
pub fn quietly<R>(f: impl FnOnce() -> R) -> R {
    let previous = QUIET.with(|q| q.replace(true));
    let result = f();
    QUIET.with(|q| q.set(previous));
    result
}

fn warn(message: &str) {
    if !QUIET.with(std::cell::Cell::get) {
        warning!("{message}");
    }
}

thread_local! {
    /// This process's open segment: (first sequence, file).
    static OPEN_SEGMENT: RefCell<Option<(u64, fs::File)>> = const { RefCell::new(None) };
}

/// Why a record was not spooled (the caller logs the line instead).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Broken,
    /// Longer than a stream record may be (see `session_audit::record`).
    TooLarge,
}

/// What a writer knows about the stream (cached per process).
#[derive(Clone, Copy)]
pub struct StreamIdentity {
    pub stream_id: [u8; 16],
}

thread_local! {
    static IDENTITY: RefCell<Option<StreamIdentity>> = const { RefCell::new(None) };
}

/// The stream's identity, if the spool is usable.
pub fn identity() -> Option<StreamIdentity> {
    if let Some(known) = IDENTITY.with(|i| *i.borrow()) {
        return Some(known);
    }
    let mut state = SPOOL.exclusive();
    if let Err(problem) = ensure_ready(&mut state) {
        fall_back(state, problem);
        return None;
    }
    let known = StreamIdentity {
        stream_id: state.stream_id,
    };
    drop(state);
    IDENTITY.with(|i| *i.borrow_mut() = Some(known));
    Some(known)
}

/// Appends one record: `head` + the sequence + `tail` + `\n`, where `head` ends with
/// `"sequence":` and `tail` starts right after the number. `overflow` builds the record
/// that reports records the server log took instead (given its count and first time).
pub fn append(
    head: &[u8],
    tail: &[u8],
    max_bytes: u64,
    segment_size: u64,
    overflow: impl FnOnce(u64, i64) -> (Vec<u8>, Vec<u8>),
) -> Result<u64, Refused> {
    let mut state = SPOOL.exclusive();
    if let Err(problem) = ensure_ready(&mut state) {
        fall_back(state, problem);
        return Err(Refused::Broken);
    }
    let size = (head.len() + tail.len() + 21) as u64;
    if state.unshipped_bytes + size > max_bytes {
        state.fallbacks += 1;
        note_overflow(&mut state);
        return Err(Refused::Full);
    }
    if state.overflow_pending > 0 {
        let (h, t) = overflow(state.overflow_pending, state.overflow_since_micros);
        if write_record(&mut state, &h, &t, segment_size).is_err() {
            state.fallbacks += 1;
            return Err(Refused::Broken);
        }
        state.overflow_pending = 0;
    }
    match write_record(&mut state, head, tail, segment_size) {
        Ok(sequence) => Ok(sequence),
        Err(e) => {
            state.fallbacks += 1;
            note_overflow(&mut state);
            drop(state);
            warn(&format!("pgaudit_siem: writing to the session-audit spool failed ({e}); the AUDIT line goes to the server log"));
            Err(Refused::Broken)
        }
    }
}

/// The spool is unusable: count the fallback, release the lock, then report.
fn fall_back(mut state: pgrx::PgLwLockExclusiveGuard<'_, SpoolState>, problem: Option<String>) {
    state.fallbacks += 1;
    note_overflow(&mut state);
    drop(state);
    report(Err(problem));
}

/// A record went to the server log instead: the next spooled record is preceded by an
/// overflow record that counts it.
fn note_overflow(state: &mut SpoolState) {
    if state.overflow_pending == 0 {
        state.overflow_since_micros = super::time::now_unix_micros();
    }
    state.overflow_pending += 1;
}

/// A record too large for the stream (`record::MAX_RECORD_BYTES`): the line goes to the
/// server log, counted like any other fallback.
pub fn refuse_too_large() {
    let mut state = SPOOL.exclusive();
    state.fallbacks += 1;
    note_overflow(&mut state);
}

/// Writes one record with the next sequence (exclusive lock held by the caller).
fn write_record(
    state: &mut SpoolState,
    head: &[u8],
    tail: &[u8],
    segment_size: u64,
) -> std::io::Result<u64> {
    let sequence = state.next_sequence;
    let mut number = itoa::Buffer::new();
    let number = number.format(sequence).as_bytes();
    let size = (head.len() + number.len() + tail.len() + 1) as u64;
    let limit = if state.capacity > 0 {
        state.capacity
    } else {
        segment_size
    };
    if state.segment_bytes > 0 && state.segment_bytes + size > limit {
        rotate(state, sequence, size)?;
    }
    if state.capacity > 0 && state.segment_bytes + size > state.capacity {
        // A record larger than an empty prepared segment: the segment is written the
        // ordinary way instead (it holds no record).
        fs::OpenOptions::new()
            .write(true)
            .open(segment_path(state.segment))?
            .set_len(state.segment_bytes)?;
        state.capacity = 0;
    }
    let parts = [head, number, tail, b"\n"];
    if state.capacity > 0 {
        write_at(state.segment, state.segment_bytes, &parts)?;
    } else {
        write_appended(state.segment, &parts, size)?;
    }
    state.next_sequence += 1;
    state.segment_bytes += size;
    state.total_bytes += size;
    state.unshipped_bytes += size;
    Ok(sequence)
}

/// Starts the segment whose first record is `first`: the prepared one when there is one
/// that can hold a record of `size` bytes, else a new empty file.
fn rotate(state: &mut SpoolState, first: u64, size: u64) -> std::io::Result<()> {
    if state.capacity > 0 {
        // The finished segment ends at its last record (a prepared one was longer).
        // Before the next segment exists, so that only the last segment can ever hold
        // anything after its records.
        fs::OpenOptions::new()
            .write(true)
            .open(segment_path(state.segment))?
            .set_len(state.segment_bytes)?;
        state.capacity = 0;
    }
    let path = segment_path(first);
    let capacity = match fs::rename(prepared_path(), &path) {
        Ok(()) => {
            let len = fs::metadata(&path)?.len();
            if len >= size {
                len
            } else {
                fs::OpenOptions::new().write(true).open(&path)?.set_len(0)?;
                0
            }
        }
        Err(_) => {
            // Emptied if a failed rotation left the file behind: a segment is named by
            // its first record, which does not exist yet.
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            0
        }
    };
    state.segment = first;
    state.segment_bytes = 0;
    state.capacity = capacity;
    Ok(())
}

/// Appends a record to a segment written the ordinary way.
fn write_appended(segment: u64, parts: &[&[u8]; 4], size: u64) -> std::io::Result<()> {
    OPEN_SEGMENT.with(|open| -> std::io::Result<()> {
        let mut open = open.borrow_mut();
        if open.as_ref().is_none_or(|(first, _)| *first != segment) {
            let file = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(segment_path(segment))?;
            *open = Some((segment, file));
        }
        let (_, file) = open.as_mut().expect("opened above");
        let slices = parts.map(std::io::IoSlice::new);
        let written = file.write_vectored(&slices)?;
        if written as u64 != size {
            // A short write (disk full): cut it so the segment ends on a whole record.
            let len = file.metadata()?.len();
            file.set_len(len - written as u64)?;
            return Err(std::io::Error::other("short write to the spool"));
        }
        Ok(())
    })
}

thread_local! {
    /// This process's descriptor of the prepared segment being written: (first sequence,
    /// file, not opened for appending).
    static PREPARED_SEGMENT: RefCell<Option<(u64, fs::File)>> = const { RefCell::new(None) };
}

/// Writes a record at `offset` of a prepared segment with one `pwritev`.
fn write_at(segment: u64, offset: u64, parts: &[&[u8]; 4]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    PREPARED_SEGMENT.with(|open| -> std::io::Result<()> {
        let mut open = open.borrow_mut();
        if open.as_ref().is_none_or(|(first, _)| *first != segment) {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(segment_path(segment))?;
            *open = Some((segment, file));
        }
        let (_, file) = open.as_ref().expect("opened above");
        let slices = parts.map(std::io::IoSlice::new);
        let size: usize = parts.iter().map(|p| p.len()).sum();
        let offset = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
        // SAFETY: IoSlice is ABI-compatible with iovec; four valid slices.
        let written = unsafe { libc::pwritev(file.as_raw_fd(), slices.as_ptr().cast(), 4, offset) };
        if written < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if written as usize != size {
            // Beyond the records nothing counts: the next record overwrites the rest.
            return Err(std::io::Error::other("short write to the spool"));
        }
        Ok(())
    })
}

/// The size of each write that zeroes a prepared segment (see there).
const PREPARE_WRITE_BYTES: usize = 4096;

fn prepared_path() -> PathBuf {
    Path::new(DIR).join("next.prepared")
}

/// Makes sure a zeroed segment of `size` bytes waits for the next rotation (the
/// shipper, between batches): the backends then write records over pages that already
/// exist instead of growing the file (allocating and zeroing page-cache pages), which
/// keeps the exclusive lock short.
pub fn prepare_next_segment(size: u64) -> std::io::Result<()> {
    if fs::metadata(prepared_path()).is_ok_and(|m| m.len() == size) {
        return Ok(());
    }
    if !SPOOL.share().ready {
        return Ok(());
    }
    let temporary = Path::new(DIR).join("next.prepared.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    // A page at a time: the page cache then holds the file in single pages. Larger
    // writes get large folios (ext4 on Linux 6.x), and every small record written into
    // one later walks all of its blocks (ext4_block_write_begin), a cost per record that
    // grows with the folio.
    let zeros = vec![0u8; PREPARE_WRITE_BYTES];
    let mut left = size;
    let written = loop {
        if left == 0 {
            break Ok(());
        }
        let n = left.min(zeros.len() as u64) as usize;
        if let Err(e) = file.write_all(&zeros[..n]) {
            break Err(e);
        }
        left -= n as u64;
    };
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&temporary, prepared_path())) {
        // A full disk: the space goes back to the records.
        let _ = fs::remove_file(&temporary);
        return Err(e);
    }
    Ok(())
}

/// A snapshot for the shipper and the statistics.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub ready: bool,
    pub next_sequence: u64,
    pub segment: u64,
    /// Bytes of records in `segment` (a prepared segment's file is longer).
    pub segment_bytes: u64,
    pub total_bytes: u64,
    pub unshipped_bytes: u64,
    pub shipped: u64,
    /// The chain hash of record `shipped`.
    pub shipped_hash: [u8; 64],
    pub dead_lettered: u64,
    pub fallbacks: u64,
    pub oldest_unshipped_micros: i64,
    pub last_http_status: i32,
    pub stream_id: [u8; 16],
}

pub fn snapshot() -> Snapshot {
    let mut state = SPOOL.exclusive();
    let ready = ensure_ready(&mut state);
    let snapshot = Snapshot {
        ready: state.ready,
        next_sequence: state.next_sequence,
        segment: state.segment,
        segment_bytes: state.segment_bytes,
        total_bytes: state.total_bytes,
        unshipped_bytes: state.unshipped_bytes,
        shipped: state.shipped,
        shipped_hash: state.shipped_hash,
        dead_lettered: state.dead_lettered,
        fallbacks: state.fallbacks,
        oldest_unshipped_micros: state.oldest_unshipped_micros,
        last_http_status: state.last_http_status,
        stream_id: state.stream_id,
    };
    drop(state);
    report(ready);
    snapshot
}

/// The last error the shipper recorded (already masked).
pub fn last_error() -> Option<String> {
    let state = SPOOL.share();
    (state.last_error_len > 0)
        .then(|| String::from_utf8_lossy(&state.last_error[..state.last_error_len]).into_owned())
}

/// The shipper acknowledged everything up to `sequence`: persists it (the shipper then
/// removes expired segments, see [`remove_expired`]).
/// `bytes`: the size of the acknowledged records in the spool (lines and newlines).
pub fn acknowledge(
    sequence: u64,
    hash: &str,
    bytes: u64,
    dead: u64,
    status: Option<u16>,
) -> std::io::Result<()> {
    // Memory first: a failure to persist the position only means duplicates after a
    // restart, never a batch resent forever.
    let temporary = Path::new(DIR).join("shipped.tmp");
    let persisted = fs::write(&temporary, format!("{sequence} {hash}\n"))
        .and_then(|()| fs::rename(&temporary, shipped_path()));
    let (_, hash) = parse_shipped(&format!("0 {hash}"));
    let mut state = SPOOL.exclusive();
    state.shipped = sequence;
    state.shipped_hash = hash;
    state.unshipped_bytes = state.unshipped_bytes.saturating_sub(bytes);
    state.dead_lettered += dead;
    state.oldest_unshipped_micros = 0;
    if let Some(status) = status {
        state.last_http_status = i32::from(status);
    }
    state.last_error_len = 0;
    drop(state);
    persisted
}

/// Deletes segments whose records were all shipped and whose last write is older than
/// `retention` (`session_audit_log()` reads the others); never the segment being
/// written. Segments are examined oldest first and the first one to keep ends the
/// scan (a later segment was written later), so a spool retaining thousands of
/// segments costs one directory listing and one `stat`, not one per segment.
/// Returns how long until the oldest segment kept could expire, if one is a candidate.
pub fn remove_expired(
    retention: std::time::Duration,
) -> std::io::Result<Option<std::time::Duration>> {
    let (current, shipped) = {
        let state = SPOOL.share();
        (state.segment, state.shipped)
    };
    let list = segments();
    let now = std::time::SystemTime::now();
    let mut freed = 0u64;
    let mut removal = || -> std::io::Result<Option<std::time::Duration>> {
        for window in list.windows(2) {
            let (first, next) = (window[0], window[1]);
            // Every record of `first` is below `next`; later segments hold later records.
            if next > shipped + 1 || first == current {
                break;
            }
            let meta = fs::metadata(segment_path(first))?;
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age < retention {
                return Ok(Some(retention - age));
            }
            fs::remove_file(segment_path(first))?;
            freed += meta.len();
        }
        Ok(None)
    };
    let result = removal();
    // What was removed before a failure is accounted for too.
    if freed > 0 {
        let mut state = SPOOL.exclusive();
        state.total_bytes = state.total_bytes.saturating_sub(freed);
    }
    result
}

/// Releases the page cache of the segments whose records were all shipped, from
/// `from` on, as PostgreSQL does for WAL segments it no longer needs: the next segment
/// is prepared in pages just freed instead of pages the machine never touched (the
/// costliest kind on a virtual machine), and the spool's history does not push the
/// database's pages out of the cache. Pages still dirty are only queued for writing;
/// the caller advises again in later passes. Returns the first segment not fully
/// shipped (every segment below it is shipped) and the first failure, if any (a
/// segment that cannot be advised is skipped). `session_audit_log()` reads retained
/// segments from disk.
pub fn release_shipped_pages(from: u64) -> (u64, Option<std::io::Error>) {
    let (current, shipped) = {
        let state = SPOOL.share();
        (state.segment, state.shipped)
    };
    let list = segments();
    let mut released_below = from;
    let mut failure = None;
    for window in list.windows(2) {
        let (first, next) = (window[0], window[1]);
        if next > shipped + 1 || first == current {
            break;
        }
        released_below = next;
        if first < from {
            continue;
        }
        let file = match fs::File::open(segment_path(first)) {
            Ok(file) => file,
            // Removed meanwhile (retention): nothing cached any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                failure.get_or_insert(e);
                continue;
            }
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: advice on our own open descriptor; it changes no file content.
        let advised = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        if advised != 0 {
            failure.get_or_insert(std::io::Error::from_raw_os_error(advised));
        }
    }
    (released_below, failure)
}

/// The creation time of the oldest record not yet shipped (set when the shipper reads
/// it; cleared by [`acknowledge`]).
pub fn set_oldest_unshipped(unix_micros: i64) {
    SPOOL.exclusive().oldest_unshipped_micros = unix_micros;
}

/// A failed attempt, for the statistics.
pub fn record_failure(status: Option<u16>, error: &str) {
    let mut state = SPOOL.exclusive();
    if let Some(status) = status {
        state.last_http_status = i32::from(status);
    }
    let bytes = crate::pg::text::utf8_prefix(error.as_bytes(), LAST_ERROR_BYTES);
    state.last_error[..bytes.len()].copy_from_slice(bytes);
    state.last_error_len = bytes.len();
}

/// Appends refused records to the dead-letter file.
pub fn dead_letter(lines: &[String]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(Path::new(DIR).join("dead_letter.ndjson"))?;
    for line in lines {
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
    }
    Ok(())
}

/// Flushes segments at or after `from` to disk (the shipper, every sync interval).
/// With PostgreSQL's `fsync = off` nothing is flushed, as for the server's own files:
/// the administrator has accepted that an operating-system crash may lose data.
pub fn sync_from(from: u64) -> std::io::Result<()> {
    // SAFETY: a plain read of a GUC variable in this process.
    if !unsafe { pg_sys::enableFsync } {
        return Ok(());
    }
    for first in segments().into_iter().filter(|f| *f >= from) {
        fs::File::open(segment_path(first))?.sync_data()?;
    }
    fs::File::open(DIR)?.sync_all()
}

/// Reads records after `after`, in order, at most `max_records` and about `max_bytes`,
/// and only up to `below` (the next sequence at the time of the snapshot: every record
/// below it is completely written).
pub struct Reader {
    /// Where the next record starts: (segment, byte offset), and its sequence.
    position: Option<(u64, u64)>,
    next: u64,
}

impl Reader {
    pub fn after(acknowledged: u64) -> Reader {
        Reader {
            position: None,
            next: acknowledged + 1,
        }
    }

    /// Forgets the position (after a failure that may have moved files).
    pub fn rewind(&mut self, acknowledged: u64) {
        *self = Reader::after(acknowledged);
    }

    /// The next records, as (sequence, line without `\n`).
    pub fn read(
        &mut self,
        below: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> std::io::Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let more = |out: &Vec<(u64, String)>, bytes: usize, next: u64| {
            next < below && out.len() < max_records && bytes < max_bytes
        };
        // Each pass reads one segment; a pass that finds nothing new moves to the next
        // segment or stops.
        for _ in 0..64 {
            if !more(&out, bytes, self.next) {
                break;
            }
            let (segment, offset) = match self.position {
                Some(p) => p,
                None => {
                    // The segment holding `next`: the last one starting at or before it.
                    let list = segments();
                    match list
                        .iter()
                        .rev()
                        .find(|&&f| f <= self.next)
                        .or(list.first())
                    {
                        Some(&segment) => (segment, 0),
                        None => break,
                    }
                }
            };
            let file = match fs::File::open(segment_path(segment)) {
                Ok(f) => f,
                // Deleted once fully acknowledged: look the position up again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.position = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
            reader.seek(SeekFrom::Start(offset))?;
            let mut offset = offset;
            let mut line = Vec::new();
            let mut found = false;
            while more(&out, bytes, self.next) {
                line.clear();
                let n = std::io::BufRead::read_until(&mut reader, b'\n', &mut line)?;
                if line.len() > MAX_READ_LINE_BYTES {
                    // Not written by this version (records are capped far below): skip
                    // it rather than hold it, and say so.
                    warning!(
                        "pgaudit_siem: skipping an oversized line in {}",
                        segment_path(segment).display()
                    );
                }
                if n == 0 || line.last() != Some(&b'\n') {
                    break; // the end of this segment, or a record still being written
                }
                offset += n as u64;
                line.pop();
                if line.len() > MAX_READ_LINE_BYTES {
                    line = Vec::new();
                    continue;
                }
                if let Some(sequence) = sequence_of(&line) {
                    if sequence >= self.next {
                        self.next = sequence + 1;
                        bytes += line.len();
                        found = true;
                        let text = String::from_utf8(std::mem::take(&mut line))
                            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                        out.push((sequence, text));
                    }
                }
            }
            self.position = Some((segment, offset));
            if !found {
                match segments().into_iter().find(|&f| f > segment) {
                    Some(following) => self.position = Some((following, 0)),
                    None => break,
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sequence: u64) -> String {
        format!("{{\"actor\":{{\"id\":\"x\"}},\"line\":\"\\\"sequence\\\":1\",\"sequence\":{sequence},\"timestamp\":\"t\"}}\n")
    }

    /// Writes `content` as a segment file and recovers it.
    fn recovered(content: &[u8], first: u64) -> (Option<u64>, u64, Vec<u8>) {
        let path = std::env::temp_dir().join(format!(
            "pgaudit_siem-spool-test-{}-{first}-{}.seg",
            std::process::id(),
            content.len()
        ));
        fs::write(&path, content).unwrap();
        let (last, end) = last_record(&path, first).unwrap();
        let left = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        (last, end, left)
    }

    #[test]
    fn recovery_keeps_the_whole_consecutive_records_and_cuts_what_follows() {
        let three = [record(5), record(6), record(7)].concat();
        let whole = three.len() as u64;
        // Followed by nothing, by a torn record, by a prepared segment's zeros, by a torn
        // record and zeros, by a stale record of an earlier number, or after a page that
        // never reached the disk, by a record that would skip one.
        let cases: Vec<Vec<u8>> = vec![
            three.clone().into_bytes(),
            [three.as_bytes(), &record(8).as_bytes()[..40]].concat(),
            [three.as_bytes(), &[0u8; 70_000][..]].concat(),
            [
                three.as_bytes(),
                &record(8).as_bytes()[..40],
                &[0u8; 5000][..],
            ]
            .concat(),
            [three.as_bytes(), record(3).as_bytes()].concat(),
            [three.as_bytes(), &[0u8; 4096][..], record(8).as_bytes()].concat(),
            [three.as_bytes(), record(9).as_bytes()].concat(),
        ];
        for content in cases {
            let (last, end, left) = recovered(&content, 5);
            assert_eq!((last, end), (Some(7), whole));
            assert_eq!(left, three.as_bytes());
        }
        // A segment named for a record it does not start with holds none of ours.
        assert_eq!(recovered(three.as_bytes(), 4).0, None);
        assert_eq!(recovered(&[0u8; 100], 1), (None, 0, Vec::new()));
    }

    #[test]
    fn sequences_are_read_from_the_record() {
        assert_eq!(
            sequence_of(br#"{"id":"x","timestamp":"t","sequence":42,"event":{}}"#),
            Some(42)
        );
        assert_eq!(sequence_of(br#"{"id":"x"}"#), None);
    }
}
