//! HTTP transport for SIEM delivery (pure Rust: no PostgreSQL calls, so it may run on a
//! helper thread).
//!
//! - [`post`] sends one request with `ureq` (keep-alive agent, connect and total
//!   timeouts, rustls, optional gzip request bodies) and classifies failures into the
//!   kinds `test_connection()` reports: DNS, connect, TLS, timeout, HTTP status,
//!   authentication.
//! - [`Sender`] runs requests on one helper thread so the worker's main thread keeps
//!   waiting on its latch: SIGTERM, DROP DATABASE and ProcSignalBarriers are served while
//!   a SIEM hangs. The thread blocks every signal (PostgreSQL's handlers must run on the
//!   main thread) and wakes the main thread through a socket pair.
//!
//! # Invariants
//! - Error texts never contain header values or URL credentials (URLs with userinfo are
//!   refused at configuration time; here only the host and port are named).
//! - At most one request is in flight per worker; response bodies are read up to
//!   [`MAX_RESPONSE_BYTES`].

pub use crate::settings::TlsFiles;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;

/// Bulk responses list every item; 16 MB covers tens of thousands of items.
pub const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// Dead-letter excerpts keep the start of the receiver's answer.
pub const EXCERPT_BYTES: usize = 1024;

/// Why a request failed before an HTTP status arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Dns,
    Connect,
    Tls,
    Timeout,
    /// The connection broke mid-request or the answer was not HTTP.
    Protocol,
    Http,
    Authentication,
    /// The endpoint resolved only to addresses the server may not reach (link-local,
    /// cloud metadata) and the platform did not allow them explicitly.
    NotAllowed,
}

impl FailureKind {
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Dns => "dns",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Protocol => "protocol",
            FailureKind::Http => "http_status",
            FailureKind::Authentication => "authentication",
            FailureKind::NotAllowed => "not_allowed",
        }
    }
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub gzip: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub tls: TlsFiles,
    /// `pgaudit_siem.delivery_allowed_hosts`: literal addresses listed there may be
    /// reached even when [`forbidden_address`] says no.
    pub allowed_hosts: String,
}

/// What came back.
#[derive(Clone, Debug)]
pub enum Outcome {
    Response {
        status: u16,
        retry_after: Option<String>,
        body: Vec<u8>,
    },
    Failed {
        kind: FailureKind,
        message: String,
    },
}

/// A finished request and how long it took.
#[derive(Clone, Debug)]
pub struct Reply {
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// The host and port a URL points at, for error messages.
pub fn endpoint_label(url: &str) -> String {
    url.parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| {
            u.authority().map(|a| {
                let host = a.host();
                match a.port_u16() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.to_owned(),
                }
            })
        })
        .unwrap_or_else(|| "the endpoint".to_owned())
}

fn read_pem(what: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} file \"{path}\": {}", e.kind()))
}

fn tls_config(tls: &TlsFiles) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{
        parse_pem, Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig,
    };
    let certificates = |what: &str, path: &str| -> Result<Vec<Certificate<'static>>, String> {
        let pem = read_pem(what, path)?;
        let certs: Vec<Certificate<'static>> = parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!(
                "the {what} file \"{path}\" holds no PEM certificate"
            ));
        }
        Ok(certs)
    };
    let mut builder = TlsConfig::builder();
    if !tls.ca_file.is_empty() {
        builder = builder.root_certs(RootCerts::new_with_certs(&certificates(
            "CA",
            &tls.ca_file,
        )?));
    }
    match (tls.client_cert_file.is_empty(), tls.client_key_file.is_empty()) {
        (true, true) => {}
        (false, false) => {
            let chain = certificates("client certificate", &tls.client_cert_file)?;
            let key_pem = read_pem("client key", &tls.client_key_file)?;
            let key = PrivateKey::from_pem(&key_pem)
                .map_err(|_| format!("the client key file \"{}\" holds no PEM private key", tls.client_key_file))?;
            builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        _ => return Err("a client certificate needs both delivery_client_cert_file and delivery_client_key_file".into()),
    }
    Ok(builder.build())
}

/// Addresses a SIEM endpoint may not resolve to unless the platform lists them in
/// `delivery_allowed_hosts`: link-local ranges (where cloud metadata services live,
/// 169.254.169.254 and fd00:ec2::254 among them), Alibaba's metadata address, and the
/// unspecified and broadcast addresses. Checked on the *resolved* address at connect
/// time, so DNS rebinding between a check and the connection does not help.
pub fn forbidden_address(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets() == [100, 100, 100, 200]
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_address(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_unspecified()
                || (s[0] & 0xffc0) == 0xfe80
                || s == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
        }
    }
}

/// Whether `allowed` (the allowed-hosts setting) names `ip` literally.
fn listed(ip: std::net::IpAddr, allowed: &str) -> bool {
    allowed.split(',').any(|p| {
        p.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|listed| listed == ip)
    })
}

/// Whether the server may connect to `ip` under `allowed`.
pub fn address_allowed(ip: std::net::IpAddr, allowed: &str) -> bool {
    !forbidden_address(ip) || listed(ip, allowed)
}

/// ureq's resolver, keeping only the addresses [`address_allowed`] accepts.
#[derive(Debug)]
struct GuardedResolver {
    allowed: String,
}

impl ureq::unversioned::resolver::Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let resolved = ureq::unversioned::resolver::DefaultResolver::default()
            .resolve(uri, config, timeout)?;
        let mut kept = self.empty();
        for addr in resolved.iter() {
            if address_allowed(addr.ip(), &self.allowed) {
                kept.push(*addr);
            }
        }
        if kept.is_empty() {
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the endpoint resolves only to link-local or metadata addresses",
            )));
        }
        Ok(kept)
    }
}

/// A keep-alive agent trusting `tls`, connecting only where [`address_allowed`] says.
/// Timeouts are set per request.
pub fn agent(tls: &TlsFiles, allowed_hosts: &str) -> Result<ureq::Agent, String> {
    let config = ureq::Agent::config_builder()
        .tls_config(tls_config(tls)?)
        .http_status_as_error(false)
        .max_idle_connections(4)
        .max_idle_connections_per_host(2)
        .max_redirects(0)
        // No proxy from the environment: a proxy would resolve the name itself, past
        // the address check below.
        .proxy(None)
        .user_agent(concat!("pgaudit_siem/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new(),
        GuardedResolver {
            allowed: allowed_hosts.to_owned(),
        },
    ))
}

/// Sends `request` with a fresh agent (no connection reuse): for one-off requests.
pub fn post_once(request: &Request) -> Reply {
    match agent(&request.tls, &request.allowed_hosts) {
        Ok(agent) => post(&agent, request),
        Err(message) => Reply {
            outcome: failed(FailureKind::Tls, message),
            elapsed: Duration::ZERO,
        },
    }
}

/// Sends `request` and waits for the answer.
pub fn post(agent: &ureq::Agent, request: &Request) -> Reply {
    let started = Instant::now();
    let outcome = send(agent, request);
    Reply {
        outcome,
        elapsed: started.elapsed(),
    }
}

fn send(agent: &ureq::Agent, request: &Request) -> Outcome {
    let endpoint = endpoint_label(&request.url);
    let body = if request.gzip && !request.body.is_empty() {
        let mut encoder = GzEncoder::new(
            Vec::with_capacity(request.body.len() / 4),
            Compression::fast(),
        );
        if encoder.write_all(&request.body).is_err() {
            return failed(FailureKind::Protocol, "gzip compression failed".into());
        }
        match encoder.finish() {
            Ok(b) => b,
            Err(_) => return failed(FailureKind::Protocol, "gzip compression failed".into()),
        }
    } else {
        Vec::new()
    };
    let payload: &[u8] = if request.gzip && !request.body.is_empty() {
        &body
    } else {
        &request.body
    };
    let result = if request.method == "GET" {
        with_headers_and_timeouts(agent.get(&request.url), request).call()
    } else {
        let mut builder = agent
            .post(&request.url)
            .header("Content-Type", request.content_type);
        if request.gzip && !request.body.is_empty() {
            builder = builder.header("Content-Encoding", "gzip");
        }
        with_headers_and_timeouts(builder, request).send(payload)
    };
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut body = Vec::new();
            let read = response
                .body_mut()
                .as_reader()
                .take(MAX_RESPONSE_BYTES)
                .read_to_end(&mut body);
            if let Err(e) = read {
                // The status arrived; a broken body only matters for bulk item parsing.
                if status < 300 {
                    return failed(
                        FailureKind::Protocol,
                        format!("reading the response from {endpoint} failed: {}", e.kind()),
                    );
                }
            }
            Outcome::Response {
                status,
                retry_after,
                body,
            }
        }
        Err(e) => {
            let (kind, what) = classify_error(&e);
            failed(kind, format!("{what} ({endpoint})"))
        }
    }
}

fn with_headers_and_timeouts<B>(
    mut builder: ureq::RequestBuilder<B>,
    request: &Request,
) -> ureq::RequestBuilder<B> {
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .config()
        .timeout_connect(Some(request.connect_timeout))
        .timeout_global(Some(request.timeout))
        .build()
}

fn failed(kind: FailureKind, message: String) -> Outcome {
    Outcome::Failed { kind, message }
}

/// Maps a ureq error to a failure kind and a message free of secrets.
pub fn classify_error(error: &ureq::Error) -> (FailureKind, String) {
    use std::io::ErrorKind;
    match error {
        ureq::Error::HostNotFound => (FailureKind::Dns, "host name could not be resolved".into()),
        ureq::Error::Timeout(which) => (FailureKind::Timeout, format!("timed out ({which})")),
        ureq::Error::ConnectionFailed => (FailureKind::Connect, "connection failed".into()),
        ureq::Error::Tls(what) => (FailureKind::Tls, format!("TLS error: {what}")),
        ureq::Error::Rustls(e) => (FailureKind::Tls, format!("TLS error: {e}")),
        ureq::Error::Io(e) => match e.kind() {
            ErrorKind::PermissionDenied => (
                FailureKind::NotAllowed,
                "the endpoint resolves only to link-local or cloud metadata addresses".into(),
            ),
            ErrorKind::ConnectionRefused => (FailureKind::Connect, "connection refused".into()),
            ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                (FailureKind::Timeout, "timed out".into())
            }
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => (
                FailureKind::Protocol,
                format!("connection closed by the receiver ({})", e.kind()),
            ),
            // rustls reports handshake and certificate failures as InvalidData I/O errors.
            ErrorKind::InvalidData => (
                FailureKind::Tls,
                format!("TLS error: {}", sanitize(&e.to_string())),
            ),
            other => (FailureKind::Connect, format!("I/O error: {other}")),
        },
        ureq::Error::Protocol(e) => (FailureKind::Protocol, format!("invalid HTTP response: {e}")),
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => (
            FailureKind::Protocol,
            "invalid request URL or header".into(),
        ),
        ureq::Error::BodyStalled => (FailureKind::Timeout, "response body stalled".into()),
        other => (
            FailureKind::Protocol,
            format!("request failed: {}", sanitize(&other.to_string())),
        ),
    }
}

/// Keeps only the first line and drops anything after a `?` (query strings may carry tokens).
fn sanitize(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    match line.find('?') {
        Some(i) => line[..i].to_owned(),
        None => line.to_owned(),
    }
}

/// The start of a response body, as text, for the dead-letter table and `last_error`.
pub fn excerpt(body: &[u8]) -> String {
    let kept = crate::pg::text::utf8_prefix(body, EXCERPT_BYTES);
    String::from_utf8_lossy(kept).replace('\0', "")
}

/// Runs requests on a helper thread; the caller waits on [`Sender::wake_fd`].
pub struct Sender {
    jobs: mpsc::Sender<Request>,
    replies: mpsc::Receiver<Reply>,
    wake_read: UnixStream,
}

impl Sender {
    /// A sender posting with ureq, one agent (and its pooled connections) kept until the
    /// TLS files or allowed hosts change.
    pub fn spawn() -> std::io::Result<Sender> {
        let mut current: Option<((TlsFiles, String), Result<ureq::Agent, String>)> = None;
        Sender::spawn_serving(move |request| {
            let key = (request.tls.clone(), request.allowed_hosts.clone());
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                current = Some((key, agent(&request.tls, &request.allowed_hosts)));
            }
            match current.as_ref().map(|(_, a)| a) {
                Some(Ok(agent)) => post(agent, &request),
                Some(Err(message)) => Reply {
                    outcome: failed(FailureKind::Tls, message.clone()),
                    elapsed: Duration::ZERO,
                },
                None => unreachable!("set just above"),
            }
        })
    }

    /// Runs `handle` for each request on the helper thread. A panic in it must not end
    /// the thread (the worker would wait for a reply that never comes): it fails that
    /// request. Should the thread end anyway, its end of the wake socket closes, so the
    /// waiting worker wakes and [`Sender::poll`] says [`Poll::Gone`].
    fn spawn_serving(
        mut handle: impl FnMut(Request) -> Reply + Send + 'static,
    ) -> std::io::Result<Sender> {
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        let (job_tx, job_rx) = mpsc::channel::<Request>();
        let (reply_tx, reply_rx) = mpsc::channel::<Reply>();
        spawn_with_signals_blocked("pgaudit_siem http", move || {
            let mut wake_write = wake_write;
            while let Ok(request) = job_rx.recv() {
                let reply =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(request)))
                        .unwrap_or_else(|_| Reply {
                            outcome: failed(
                                FailureKind::Protocol,
                                "the HTTP client failed unexpectedly".into(),
                            ),
                            elapsed: Duration::ZERO,
                        });
                if reply_tx.send(reply).is_err() {
                    break;
                }
                let _ = wake_write.write_all(&[1]);
            }
        })?;
        Ok(Sender {
            jobs: job_tx,
            replies: reply_rx,
            wake_read,
        })
    }

    /// Queues a request; the reply arrives through [`Sender::poll`].
    pub fn start(&self, request: Request) -> bool {
        self.jobs.send(request).is_ok()
    }

    pub fn wake_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.wake_read.as_raw_fd()
    }

    /// The reply, if the helper thread has finished; [`Poll::Gone`] if the thread ended.
    pub fn poll(&mut self) -> Poll {
        let mut sink = [0u8; 64];
        while matches!(self.wake_read.read(&mut sink), Ok(n) if n > 0) {}
        match self.replies.try_recv() {
            Ok(reply) => Poll::Ready(reply),
            Err(mpsc::TryRecvError::Empty) => Poll::Pending,
            Err(mpsc::TryRecvError::Disconnected) => Poll::Gone,
        }
    }
}

/// What [`Sender::poll`] found.
pub enum Poll {
    Ready(Reply),
    Pending,
    /// The helper thread is gone: start a new [`Sender`].
    Gone,
}

/// The reply given for a request whose helper thread ended: retried like a transport error.
pub fn thread_gone() -> Reply {
    Reply {
        outcome: failed(
            FailureKind::Protocol,
            "the HTTP thread stopped; it was restarted".into(),
        ),
        elapsed: Duration::ZERO,
    }
}

/// Starts a thread that never runs a signal handler.
///
/// PostgreSQL's handlers (SIGHUP, SIGTERM, SIGUSR1 and the latch's) touch process state
/// meant for the main thread, and pgrx aborts the process when one of its wrappers runs
/// on another thread: a signal delivered to a helper thread would crash the server
/// (the postmaster then resets every backend). A thread inherits its creator's signal
/// mask, so the mask is full from the thread's first instruction when every signal is
/// blocked around the spawn; blocking inside the thread would leave a window in which
/// a signal can still land there. The creator's mask is restored right after.
pub fn spawn_with_signals_blocked(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    // SAFETY: pthread_sigmask changes only the calling thread's mask, with sets
    // initialised here; the previous mask is put back before returning.
    let previous = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
        previous
    };
    let spawned = std::thread::Builder::new().name(name.into()).spawn(body);
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    spawned.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        assert_eq!(
            classify_error(&ureq::Error::HostNotFound).0,
            FailureKind::Dns
        );
        assert_eq!(
            classify_error(&ureq::Error::ConnectionFailed).0,
            FailureKind::Connect
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify_error(&ureq::Error::Io(refused)).0,
            FailureKind::Connect
        );
        assert_eq!(
            classify_error(&ureq::Error::Tls("bad certificate")).0,
            FailureKind::Tls
        );
    }

    #[test]
    fn labels_name_only_host_and_port() {
        assert_eq!(
            endpoint_label("https://siem.example.com:8088/services/collector?token=abc"),
            "siem.example.com:8088"
        );
        assert_eq!(endpoint_label("http://127.0.0.1/x"), "127.0.0.1");
        assert_eq!(
            sanitize("bad url http://h/x?token=secret\nmore"),
            "bad url http://h/x"
        );
    }

    #[test]
    fn excerpts_cut_on_character_boundaries() {
        let body = "é".repeat(EXCERPT_BYTES);
        let e = excerpt(body.as_bytes());
        assert!(e.len() <= EXCERPT_BYTES && e.chars().all(|c| c == 'é'));
    }

    #[test]
    fn unreadable_tls_files_are_reported() {
        let tls = TlsFiles {
            ca_file: "/nonexistent/ca.pem".into(),
            ..TlsFiles::default()
        };
        let error = agent(&tls, "").err().unwrap();
        assert_eq!(
            error,
            "cannot read the CA file \"/nonexistent/ca.pem\": entity not found"
        );
        let half = TlsFiles {
            client_cert_file: "/x".into(),
            ..TlsFiles::default()
        };
        assert!(agent(&half, "").err().unwrap().contains("needs both"));
    }

    fn request(url: String) -> Request {
        Request {
            method: "POST",
            url,
            headers: vec![],
            content_type: "application/json",
            body: b"{}".to_vec(),
            gzip: true,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            tls: TlsFiles::default(),
            allowed_hosts: String::new(),
        }
    }

    /// Waits (bounded) until the wake socket is readable, as the worker's latch wait does.
    fn wait_for_wake(sender: &Sender) -> bool {
        let mut fd = libc::pollfd {
            fd: sender.wake_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut fd, 1, 10_000) == 1 }
    }

    #[test]
    fn a_panicking_request_fails_alone_and_the_thread_serves_the_next() {
        let mut calls = 0;
        let mut sender = Sender::spawn_serving(move |_| {
            calls += 1;
            if calls == 1 {
                panic!("the HTTP stack failed");
            }
            Reply {
                outcome: Outcome::Response {
                    status: 200,
                    retry_after: None,
                    body: vec![],
                },
                elapsed: Duration::ZERO,
            }
        })
        .unwrap();
        for expected_ok in [false, true] {
            assert!(sender.start(request("http://127.0.0.1:9/".into())));
            assert!(wait_for_wake(&sender));
            match sender.poll() {
                Poll::Ready(Reply {
                    outcome: Outcome::Response { status: 200, .. },
                    ..
                }) => assert!(expected_ok),
                Poll::Ready(Reply {
                    outcome: Outcome::Failed { kind, .. },
                    ..
                }) => {
                    assert!(!expected_ok);
                    assert_eq!(kind, FailureKind::Protocol);
                }
                _ => panic!("no reply"),
            }
        }
    }

    /// The signals this thread blocks among the standard ones (SIGKILL and SIGSTOP
    /// cannot be blocked).
    fn blocked_signals() -> Vec<i32> {
        // SAFETY: reads this thread's mask into a local set.
        unsafe {
            let mut current: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut current);
            (1..32)
                .filter(|&s| libc::sigismember(&current, s) == 1)
                .collect()
        }
    }

    #[test]
    fn helper_threads_start_with_every_signal_blocked_and_their_creator_keeps_its_mask() {
        let before = blocked_signals();
        let (tx, rx) = mpsc::channel();
        // The first thing the thread does is read its mask: nothing of ours ran before.
        spawn_with_signals_blocked("mask probe", move || tx.send(blocked_signals()).unwrap())
            .unwrap();
        let in_thread = rx.recv().unwrap();
        let blockable: Vec<i32> = (1..32)
            .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
            .collect();
        assert_eq!(in_thread, blockable);
        assert_eq!(blocked_signals(), before, "the creator's mask changed");
    }

    #[test]
    fn a_helper_thread_that_ended_wakes_the_worker_and_reports_gone() {
        // However the thread ends, its ends of the reply channel and the wake socket go
        // with it: here a thread that takes one request and returns.
        let (wake_read, wake_write) = UnixStream::pair().unwrap();
        wake_read.set_nonblocking(true).unwrap();
        let (jobs, job_rx) = mpsc::channel::<Request>();
        let (reply_tx, replies) = mpsc::channel::<Reply>();
        let thread = std::thread::spawn(move || {
            let _request = job_rx.recv();
            drop((reply_tx, wake_write));
        });
        let mut sender = Sender {
            jobs,
            replies,
            wake_read,
        };
        assert!(sender.start(request("http://127.0.0.1:9/".into())));
        thread.join().unwrap();
        assert!(wait_for_wake(&sender), "the worker would sleep forever");
        assert!(matches!(sender.poll(), Poll::Gone));
        assert!(!sender.start(request("http://127.0.0.1:9/".into())));
    }

    #[test]
    fn refused_connections_fail_fast() {
        // A port nobody listens on (bound then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let reply = post_once(&Request {
            method: "POST",
            url: format!("http://127.0.0.1:{port}/"),
            headers: vec![],
            content_type: "application/json",
            body: b"{}".to_vec(),
            gzip: true,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            tls: TlsFiles::default(),
            allowed_hosts: String::new(),
        });
        match reply.outcome {
            Outcome::Failed { kind, .. } => assert_eq!(kind, FailureKind::Connect),
            other => panic!("{other:?}"),
        }
    }
}
