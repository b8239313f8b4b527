//! Redis for the tests: the shared test server, and private ones a test may stop.
//!
//! The shared server is `AGENTSMITH_TEST_REDIS_URL` (scripts/test starts one on a free port),
//! else the local default. Tests isolate themselves in it with a random key prefix. A test
//! that stops Redis (an outage), or needs one set up otherwise (a password, TLS: see
//! [`RedisServer::tls`]), starts a [`RedisServer`] of its own instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::temp::TempDir;
use crate::tls::TestCa;

/// The environment variable naming the tests' Redis.
pub const URL_ENV: &str = "AGENTSMITH_TEST_REDIS_URL";

/// How to get a Redis for the tests, for failure messages.
pub const START: &str =
    "start one with `redis-server --daemonize yes` (apt-get install redis-server), \
     or run scripts/test, which starts its own and sets AGENTSMITH_TEST_REDIS_URL";

/// The tests' Redis URL, without checking it.
pub fn url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The tests' Redis URL, after checking that it answers; panics naming the command that
/// starts one when it does not.
pub fn test_url() -> String {
    let url = url();
    let answered = ::redis::Client::open(url.as_str())
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut conn| ::redis::cmd("PING").query::<String>(&mut conn));
    if let Err(e) = answered {
        panic!("these tests need Redis, and none answers at {url} ({e}): {START}");
    }
    url
}

/// How a set of servers (a Sentinel set, a cluster) is started.
#[derive(Debug, Clone, Default)]
pub struct SetOptions {
    /// A directory of the caller's for the servers' data and everyone's log (`*.log`);
    /// `None`: fresh temporary directories without logs, removed with the set.
    pub dir: Option<PathBuf>,
    /// More arguments for every server (`["--appendonly", "yes"]`); later ones win.
    pub server_args: Vec<String>,
}

/// Where a child's output goes: appended to `log`, or nowhere.
pub(crate) fn output_to(log: Option<&Path>) -> Result<Stdio, String> {
    match log {
        None => Ok(Stdio::null()),
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Stdio::from)
            .map_err(|e| format!("opening {}: {e}", path.display())),
    }
}

fn default_args() -> Vec<String> {
    ["--save", "", "--appendonly", "no"]
        .iter()
        .map(|a| a.to_string())
        .collect()
}

/// Whether a TLS server asks clients for certificates (`--tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Never asks (`no`).
    NotAsked,
    /// Asks, and checks the ones it gets against the CA (`optional`).
    Optional,
    /// Refuses clients without one signed by the CA (`yes`).
    Required,
}

/// A redis-server of a test's own, on a port of its own, stopped when dropped.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    _temp: Option<TempDir>,
    args: Vec<String>,
    log: Option<PathBuf>,
    child: Option<Child>,
    tls: bool,
}

impl RedisServer {
    /// A server on a free port keeping its files in a fresh directory, without
    /// persistence unless [`RedisServer::args`] asks for it; not started yet.
    pub fn new() -> Self {
        let temp = TempDir::new("agentsmith-redis");
        Self {
            port: crate::free_port(),
            dir: temp.path().to_path_buf(),
            _temp: Some(temp),
            args: default_args(),
            log: None,
            child: None,
            tls: false,
        }
    }

    /// The same, on `port`, keeping its files in `dir` (which the caller owns).
    pub fn at(port: u16, dir: &Path) -> Self {
        Self {
            port,
            dir: dir.to_path_buf(),
            _temp: None,
            args: default_args(),
            log: None,
            child: None,
            tls: false,
        }
    }

    /// Adds command-line arguments (`["--appendonly", "yes"]`); later ones win.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Speaks only TLS on its port, with a certificate from `ca` for 127.0.0.1, ::1 and
    /// localhost (written into its directory), checking client certificates against `ca`
    /// as `clients` says; [`RedisServer::url`] is then `rediss://`.
    pub fn tls(mut self, ca: &TestCa, clients: ClientCerts) -> Self {
        let server = ca.server_cert().write(&self.dir, "server");
        let ca_file = self.dir.join("ca.pem");
        std::fs::write(&ca_file, ca.ca_pem())
            .unwrap_or_else(|e| panic!("writing {}: {e}", ca_file.display()));
        let auth = match clients {
            ClientCerts::NotAsked => "no",
            ClientCerts::Optional => "optional",
            ClientCerts::Required => "yes",
        };
        let path = |p: &Path| p.display().to_string();
        let port = self.port.to_string();
        self = self.args(&[
            "--port",
            "0",
            "--tls-port",
            &port,
            "--tls-cert-file",
            &path(&server.cert),
            "--tls-key-file",
            &path(&server.key),
            "--tls-ca-cert-file",
            &path(&ca_file),
            "--tls-auth-clients",
            auth,
        ]);
        self.tls = true;
        self
    }

    /// Appends the server's output to `log` instead of discarding it.
    pub fn log(mut self, log: &Path) -> Self {
        self.log = Some(log.to_path_buf());
        self
    }

    /// Starts it (again, after [`RedisServer::kill`]) and waits until it accepts
    /// connections; the error names what went wrong.
    pub fn start(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(output_to(self.log.as_deref())?)
            .stderr(output_to(self.log.as_deref())?)
            .spawn()
            .map_err(|e| format!("starting redis-server ({e}): apt-get install redis-server"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "redis-server did not listen on port {} within 10 s",
            self.port
        ))
    }

    /// [`RedisServer::start`], panicking on failure.
    pub fn started(mut self) -> Self {
        if let Err(e) = self.start() {
            panic!("{e}");
        }
        self
    }

    /// Kills it at once (SIGKILL, as a crash would) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://` when it speaks TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Default for RedisServer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
