//! Test harness: throwaway PostgreSQL 15 clusters for integration tests, the pgAudit
//! differential harness, the benchmarks and the demo.
//!
//! # How it works
//! [`ClusterBuilder::start`] runs `initdb` into a fresh directory under the system temp
//! dir, appends the chosen `postgresql.conf` lines, picks a free loopback port and starts
//! the postmaster with `pg_ctl`. The server logs both plain text (`server.log`) and JSON
//! (`server.json`, one record per line, so multi-line messages stay whole) into the
//! cluster directory.
//!
//! # Invariants
//! - A [`Cluster`] owns its directory and postmaster: dropping it (also while a failing
//!   test unwinds) stops the server in immediate mode and deletes the directory, unless
//!   `PGAUDIT_SIEM_KEEP_CLUSTERS=1` is set for debugging.
//! - Clusters never share ports, sockets or directories, so tests run in parallel.
//! - PostgreSQL refuses to run as root: when the harness runs as root it runs the server
//!   binaries as the `postgres` OS user (`runuser`), and hands it the cluster directory.
//! - Servers listen on 127.0.0.1 only, with trust authentication.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod receiver;

/// The extension's hash-chain code (`src/events/chain.rs`), shared with the verifier.
#[path = "../../src/events/chain.rs"]
#[allow(dead_code)]
pub mod chain;

pub use postgres;
use postgres::{Client, NoTls};

/// Where Debian's PostgreSQL 15 server binaries live; override with `PGAUDIT_SIEM_PG_BIN`.
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("PGAUDIT_SIEM_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

const SERVER_OS_USER: &str = "postgres";

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command for a PostgreSQL binary, run as the `postgres` OS user when we are root.
/// Servers start with the variables a production postmaster would not have removed
/// (a test runner's `RUST_BACKTRACE` would make pgrx attach backtraces to errors).
pub fn pg_command(program: &str) -> Command {
    let path = pg_bin_dir().join(program);
    let mut cmd = if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.arg("-u").arg(SERVER_OS_USER).arg("--").arg(path);
        cmd
    } else {
        Command::new(path)
    };
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    cmd
}

/// Runs `cmd` and panics with its output unless it succeeds.
pub fn run_checked(mut cmd: Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Chooses the server configuration before [`ClusterBuilder::start`].
#[derive(Debug, Clone, Default)]
pub struct ClusterBuilder {
    preload: Vec<String>,
    settings: Vec<(String, String)>,
    name: String,
}

impl ClusterBuilder {
    /// Adds a library to `shared_preload_libraries`.
    pub fn preload(mut self, library: &str) -> Self {
        self.preload.push(library.to_owned());
        self
    }

    /// Adds a `name = value` line to postgresql.conf; `value` is written verbatim, so
    /// quote strings yourself (`"'all'"`).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A short label used in the cluster's directory name, to find it when debugging.
    pub fn name(mut self, label: &str) -> Self {
        self.name = label.to_owned();
        self
    }

    /// Creates and starts the cluster. Panics (after cleaning up) if it cannot start.
    pub fn start(self) -> Cluster {
        let dir = new_cluster_dir(&self.name);
        let mut cluster = Cluster {
            dir: dir.clone(),
            data: dir.join("data"),
            port: 0,
            started: false,
            crash_restarts_expected: std::cell::Cell::new(false),
        };
        let mut init = pg_command("initdb");
        init.args([
            "--no-sync",
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "-D",
        ])
        .arg(&cluster.data);
        run_checked(init, "initdb");
        // Ports are chosen by binding to port 0; another process can take the port before
        // the server binds it, so retry with a new one when the start fails on the port.
        let mut last_error = String::new();
        for _attempt in 0..5 {
            cluster.port = free_port();
            cluster.write_conf(&self);
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    cluster.started = true;
                    cluster.wait_ready();
                    return cluster;
                }
                Err(e) if e.contains("could not bind") || e.contains("Address already in use") => {
                    last_error = e
                }
                Err(e) => panic!("cluster {} did not start: {e}", cluster.dir.display()),
            }
        }
        panic!("cluster did not start after 5 ports: {last_error}");
    }
}

static CLUSTER_SEQ: AtomicU32 = AtomicU32::new(0);

fn new_cluster_dir(label: &str) -> PathBuf {
    let base = std::env::var_os("PGAUDIT_SIEM_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let seq = CLUSTER_SEQ.fetch_add(1, Ordering::Relaxed);
    let label = if label.is_empty() { "cluster" } else { label };
    let dir = base.join(format!("pgaudit_siem-{label}-{}-{seq}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create cluster dir");
    if running_as_root() {
        run_checked(
            {
                let mut c = Command::new("chown");
                c.arg(format!("{SERVER_OS_USER}:")).arg(&dir);
                c
            },
            "chown cluster dir",
        );
    }
    dir
}

/// Ports handed out by this process, so parallel tests never pick the same one.
static USED_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

fn free_port() -> u16 {
    let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

/// A running throwaway cluster. Stopped and deleted on drop.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    started: bool,
    /// Set by tests that kill server processes on purpose ([`Cluster::expect_crash_restarts`]).
    crash_restarts_expected: std::cell::Cell<bool>,
}

/// One record of the server's JSON log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub severity: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    pub sqlstate: Option<String>,
    pub pid: Option<i64>,
    pub user: Option<String>,
    pub dbname: Option<String>,
    pub application_name: Option<String>,
    pub backend_type: Option<String>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A libpq-style connection string for `dbname` as `user`.
    pub fn conninfo(&self, dbname: &str, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={dbname} connect_timeout=10",
            self.port
        )
    }

    /// Connects as the bootstrap superuser `postgres` to database `postgres`.
    pub fn connect(&self) -> Client {
        self.connect_as("postgres", "postgres")
    }

    /// Connects to `dbname` as `user`, panicking with the server's message on failure.
    pub fn connect_as(&self, dbname: &str, user: &str) -> Client {
        self.try_connect_as(dbname, user, "pgaudit_siem_tests")
            .unwrap_or_else(|e| panic!("connect to {dbname} as {user}: {e}"))
    }

    /// Connects with a chosen `application_name`, which the JSON log records, so a test
    /// can find one session's log records.
    pub fn try_connect_as(
        &self,
        dbname: &str,
        user: &str,
        application_name: &str,
    ) -> Result<Client, postgres::Error> {
        let conninfo = format!(
            "{} application_name={application_name}",
            self.conninfo(dbname, user)
        );
        Client::connect(&conninfo, NoTls)
    }

    fn write_conf(&self, builder: &ClusterBuilder) {
        let mut conf = String::from("\n# ---- written by pgaudit_siem_tests ----\n");
        let socket_dir = self.dir.display();
        let log_dir = self.dir.display();
        for line in [
            format!("port = {}", self.port),
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!("unix_socket_directories = '{socket_dir}'"),
            "logging_collector = on".to_owned(),
            "log_destination = 'stderr,jsonlog'".to_owned(),
            format!("log_directory = '{log_dir}'"),
            "log_filename = 'server.log'".to_owned(),
            "log_rotation_age = 0".to_owned(),
            "log_rotation_size = 0".to_owned(),
            "log_line_prefix = '%m [%p] %q%u@%d '".to_owned(),
            "fsync = off".to_owned(),
            "max_connections = 50".to_owned(),
            "shared_buffers = '64MB'".to_owned(),
        ] {
            conf.push_str(&line);
            conf.push('\n');
        }
        if !builder.preload.is_empty() {
            conf.push_str(&format!(
                "shared_preload_libraries = '{}'\n",
                builder.preload.join(",")
            ));
        }
        for (name, value) in &builder.settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        let path = self.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&path).expect("read postgresql.conf");
        if let Some(idx) = text.find("\n# ---- written by pgaudit_siem_tests ----\n") {
            text.truncate(idx);
        }
        text.push_str(&conf);
        fs::write(&path, text).expect("write postgresql.conf");
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        self.pg_ctl_start_with(&[])
    }

    /// Starts the postmaster; `server_options` go to `postgres` (pg_ctl `-o`). The
    /// server's own stderr goes to `startup.log` (never to our pipes, which the
    /// postmaster would otherwise hold open forever).
    fn pg_ctl_start_with(&self, server_options: &[&str]) -> Result<(), String> {
        let mut cmd = pg_command("pg_ctl");
        cmd.args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.join("startup.log"));
        if !server_options.is_empty() {
            cmd.arg("-o").arg(server_options.join(" "));
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        ))
    }

    /// A streaming-replication hot standby of this cluster (`pg_basebackup -R`), started
    /// with `builder`'s settings on its own port and directory.
    pub fn start_standby(&self, builder: ClusterBuilder) -> Cluster {
        let dir = new_cluster_dir(&format!("{}-standby", builder.name));
        let mut standby = Cluster {
            dir: dir.clone(),
            data: dir.join("data"),
            port: 0,
            started: false,
            crash_restarts_expected: std::cell::Cell::new(false),
        };
        let mut backup = pg_command("pg_basebackup");
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "-p",
            ])
            .arg(self.port.to_string())
            .arg("-D")
            .arg(&standby.data);
        run_checked(backup, "pg_basebackup");
        standby.port = free_port();
        standby.write_conf(&builder);
        standby
            .pg_ctl_start()
            .unwrap_or_else(|e| panic!("standby did not start: {e}"));
        standby.started = true;
        standby.wait_ready();
        standby
    }

    /// Promotes a standby (`pg_ctl promote -w`).
    pub fn promote(&self) {
        let mut cmd = pg_command("pg_ctl");
        cmd.args(["promote", "-w", "-D"]).arg(&self.data);
        run_checked(cmd, "pg_ctl promote");
    }

    /// Starts a stopped cluster again with extra `postgres` command-line options
    /// (e.g. `-b` for binary-upgrade mode).
    pub fn start_with_server_options(&mut self, server_options: &[&str]) {
        assert!(!self.started, "cluster is already running");
        self.pg_ctl_start_with(server_options)
            .unwrap_or_else(|e| panic!("start with {server_options:?} failed: {e}"));
        self.started = true;
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if Client::connect(&self.conninfo("postgres", "postgres"), NoTls).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server on port {} never accepted connections",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast mode) and starts it again, keeping data and settings.
    pub fn restart(&mut self) {
        self.stop("fast");
        self.pg_ctl_start()
            .unwrap_or_else(|e| panic!("restart failed: {e}"));
        self.started = true;
        self.wait_ready();
    }

    /// Stops the server with the given `pg_ctl` mode (`smart`, `fast`, `immediate`).
    pub fn stop(&mut self, mode: &str) {
        if !self.started {
            return;
        }
        let _ = pg_command("pg_ctl")
            .args(["stop", "-w", "-t", "60", "-m", mode, "-D"])
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.started = false;
    }

    /// Changes settings with `ALTER SYSTEM` and reloads the configuration.
    pub fn alter_system(&self, settings: &[(&str, &str)]) {
        let mut client = self.connect();
        for (name, value) in settings {
            client
                .batch_execute(&format!("ALTER SYSTEM SET {name} = {value}"))
                .unwrap_or_else(|e| panic!("ALTER SYSTEM SET {name}: {e}"));
        }
        drop(client);
        self.reload_config();
    }

    /// `pg_reload_conf()`, then waits until the postmaster applied it: a new backend's
    /// `pg_conf_load_time()` changes once the postmaster re-read the files, and by then
    /// it has signalled every running process (workers included) to reload too.
    pub fn reload_config(&self) {
        let load_time = |cluster: &Cluster| -> String {
            cluster
                .connect()
                .query_one("SELECT pg_conf_load_time()::text", &[])
                .expect("pg_conf_load_time")
                .get(0)
        };
        let before = load_time(self);
        self.connect()
            .batch_execute("SELECT pg_reload_conf()")
            .expect("reload");
        wait_until(
            "the postmaster to reload its configuration",
            Duration::from_secs(30),
            || load_time(self) != before,
        );
    }

    /// The plain-text server log so far: what the postmaster wrote before the logging
    /// collector started (e.g. messages from `_PG_init`), then the collector's file
    /// (includes crash reports).
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.join("startup.log")).unwrap_or_default()
            + &fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Every record of the JSON log written so far.
    pub fn log_records(&self) -> Vec<LogRecord> {
        let Ok(file) = fs::File::open(self.dir.join("server.json")) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
            .map(|v| {
                let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
                LogRecord {
                    severity: text("error_severity").unwrap_or_default(),
                    message: text("message").unwrap_or_default(),
                    detail: text("detail"),
                    hint: text("hint"),
                    sqlstate: text("state_code"),
                    pid: v.get("pid").and_then(|x| x.as_i64()),
                    user: text("user"),
                    dbname: text("dbname"),
                    application_name: text("application_name"),
                    backend_type: text("backend_type"),
                }
            })
            .collect()
    }

    /// Waits until some log record satisfies `pred` and returns it; panics after `timeout`.
    /// The logging collector writes asynchronously, so tests must wait, not just read.
    pub fn wait_for_log(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&LogRecord) -> bool,
    ) -> LogRecord {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.log_records().into_iter().find(|r| pred(r)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no matching log record after {timeout:?}; server log:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Runs `sql` in a session with a unique application_name, disconnects, waits until
    /// the server logged that session's end, and returns the session's log records in
    /// order. Needs `log_disconnections = on` (set by [`Cluster::start_logged`]).
    pub fn session_log(
        &self,
        dbname: &str,
        user: &str,
        run: impl FnOnce(&mut Client),
    ) -> Vec<LogRecord> {
        static SESSION_SEQ: AtomicU32 = AtomicU32::new(0);
        let app = format!(
            "s{}_{}",
            std::process::id(),
            SESSION_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut client = self
            .try_connect_as(dbname, user, &app)
            .unwrap_or_else(|e| panic!("connect to {dbname} as {user}: {e}"));
        run(&mut client);
        drop(client);
        self.application_records(&app)
    }

    /// Waits until every session with `application_name` = `app` has disconnected (needs
    /// `log_disconnections`), then returns their log records in order.
    /// A client may open several sessions (pgbench checks the server on a connection of
    /// its own first), so with `log_connections` every authorized session must have ended.
    pub fn application_records(&self, app: &str) -> Vec<LogRecord> {
        let ours = |r: &LogRecord| {
            r.application_name.as_deref() == Some(app)
                || r.message.contains(&format!("application_name={app}"))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let records = self.log_records();
            let count = |prefix: &str| {
                records
                    .iter()
                    .filter(|r| ours(r) && r.message.starts_with(prefix))
                    .count()
            };
            let (connections, disconnections) =
                (count("connection authorized:"), count("disconnection:"));
            if disconnections >= connections.max(1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sessions of {app} did not end ({connections} connected, {disconnections} ended)"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        self.log_records()
            .into_iter()
            .filter(|r| r.application_name.as_deref() == Some(app))
            .collect()
    }

    /// `pgbench` connected to this cluster as `postgres` (add the run's own arguments).
    pub fn pgbench(&self) -> Command {
        let mut cmd = Command::new(pg_bin_dir().join("pgbench"));
        cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string());
        cmd
    }

    /// The `AUDIT:` lines (prefix removed) of one session, in order: see [`Cluster::session_log`].
    pub fn session_audit(
        &self,
        dbname: &str,
        user: &str,
        run: impl FnOnce(&mut Client),
    ) -> Vec<String> {
        audit_lines(&self.session_log(dbname, user, run))
    }

    /// Runs a SQL script through `psql` as `postgres`, returning (success, stdout+stderr).
    pub fn psql(&self, dbname: &str, script: &str) -> (bool, String) {
        let out = Command::new(pg_bin_dir().join("psql"))
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
            ])
            .arg(self.port.to_string())
            .arg("-d")
            .arg(dbname)
            .arg("-c")
            .arg(script)
            .output()
            .expect("run psql");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// Whether the postmaster is running (by its pid file).
    pub fn is_running(&self) -> bool {
        pg_command("pg_ctl")
            .args(["status", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

/// The AUDIT messages (without the `AUDIT: ` prefix) of log records, in order.
pub fn audit_lines(records: &[LogRecord]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r.message.strip_prefix("AUDIT: ").map(str::to_owned))
        .collect()
}

impl ClusterBuilder {
    /// Like [`ClusterBuilder::start`], with connection logging on so that
    /// [`Cluster::session_log`] can tell when a session's records are complete.
    pub fn start_logged(self) -> Cluster {
        self.setting("log_connections", "on")
            .setting("log_disconnections", "on")
            .start()
    }
}

/// What the postmaster logs when a child died abnormally (a signal such as SIGSEGV or
/// SIGABRT, an exit code other than 0 and 1) and it resets every backend.
const CRASH_RESTART_MARKER: &str = "terminating any other active server processes";

impl Cluster {
    /// Declares that this test kills server processes on purpose, so the crash restarts
    /// that follow are not reported as crashes of the extension.
    pub fn expect_crash_restarts(&self) {
        self.crash_restarts_expected.set(true);
    }

    /// The server log's lines around each crash restart (the child that died, what it
    /// was running), empty when there was none.
    pub fn crash_reports(&self) -> Vec<String> {
        let log = self.server_log();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(CRASH_RESTART_MARKER))
            .map(|(i, _)| lines[i.saturating_sub(8)..(i + 2).min(lines.len())].join("\n"))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop("immediate");
        let crashes = self.crash_reports();
        if std::thread::panicking() {
            // The test failed: show what the server saw, which the test's own message
            // (such as "connection closed") does not.
            let log = self.server_log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "server log of {} (last lines):\n{}",
                self.dir.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            for crash in &crashes {
                eprintln!("crash restart:\n{crash}");
            }
        } else if !crashes.is_empty() && !self.crash_restarts_expected.get() {
            let report = crashes.join("\n---\n");
            let _ = fs::remove_dir_all(&self.dir);
            panic!(
                "a server process of {} crashed and the postmaster reset the cluster:\n{report}",
                self.dir.display()
            );
        }
        if std::env::var_os("PGAUDIT_SIEM_KEEP_CLUSTERS").is_some() {
            eprintln!("keeping cluster directory {}", self.dir.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Polls `done` every 20 ms until it holds; panics naming `what` after `timeout`.
/// Tests wait for conditions, never for a fixed time.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that `holds` stays true for `period`: for "nothing happens" checks (nothing
/// delivered past a running transaction), where no event marks the end of the wait.
/// The period is the worker's reaction time several times over, never a sleep before a
/// positive check.
pub fn assert_stays(what: &str, period: Duration, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        assert!(holds(), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(holds(), "{what}");
}

impl Cluster {
    /// Panics if any backend died from a signal (which restarts the whole cluster).
    pub fn assert_no_crash(&self) {
        let log = self.server_log();
        assert!(
            !log.contains("terminated by signal") && !log.contains("was terminated by exception"),
            "a backend crashed:\n{log}"
        );
    }
}

/// Gives `path` to the server's OS user (servers run as `postgres` when the tests run as
/// root) with `mode`: how key and header files must be for the server to accept them.
pub fn server_owned(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let status = std::process::Command::new("chown")
            .arg("postgres:")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// The extension's version being built (its Cargo.toml `version`).
pub fn extension_version() -> String {
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
        .expect("the extension's Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("package version")
        .to_owned()
}

impl ClusterBuilder {
    /// Preloads the extension with fast delivery retries and short timeouts: fault tests
    /// stay short (the retry policy itself is unit-tested).
    pub fn with_fast_delivery(self) -> Self {
        self.preload("pgaudit_siem")
            .setting("pgaudit_siem.delivery_retry_base", "'20ms'")
            .setting("pgaudit_siem.delivery_retry_max", "'300ms'")
            .setting("pgaudit_siem.delivery_timeout", "'2s'")
            .setting("pgaudit_siem.delivery_connect_timeout", "'1s'")
    }
}
