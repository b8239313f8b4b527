//! A real git server over HTTP on a free port of 127.0.0.1 (or of another address of this
//! machine, [`GitServer::start_on`], for clients in containers and pods), for the tests of
//! code that clones and pushes: git's own `git http-backend` (a CGI program) behind a small
//! axum bridge that checks a token the way GitHub and GitLab do over HTTPS (Basic, any
//! username, the token as password: `x-access-token:<token>`, `oauth2:<token>`).
//!
//! The test makes repositories with [`GitServer::create_repo`], may add a commit to a branch
//! as an earlier push would have ([`GitServer::commit`]) or protect a branch with
//! [`GitServer::protect_branch`], and afterwards asks what arrived: the branches
//! ([`GitServer::branches`]), a file on one ([`GitServer::file_at`]), its commits
//! ([`GitServer::commits`]) and their messages ([`GitServer::log`]), and every HTTP request
//! with the credential it carried ([`GitServer::requests`]). Every git command here, and
//! [`git_command`] for the tests' own, reads no global or system configuration.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::temp::TempDir;

/// Where Debian's git keeps the CGI program, when `git --exec-path` has none.
const DEFAULT_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// The realm a refused request is asked to authenticate in.
const CHALLENGE: &str = r#"Basic realm="testkit""#;

/// The file in a bare repository listing its protected branches, one a line; the
/// `pre-receive` hook [`GitServer::protect_branch`] installs reads it.
const PROTECTED_LIST: &str = "testkit-protected-branches";

/// The hook refusing every update of a branch listed in [`PROTECTED_LIST`] (which stands
/// for `{list}`; git runs a bare repository's hooks in it, so the path is relative).
const PRE_RECEIVE: &str = r#"#!/bin/sh
# Installed by testkit::git_server: refuses updates of the branches listed in $LIST.
LIST="{list}"
status=0
while read -r old new ref; do
    branch="${ref#refs/heads/}"
    if [ "$branch" != "$ref" ] && grep -qxF -- "$branch" "$LIST"; then
        echo "branch $branch is protected" >&2
        status=1
    fi
done
exit $status
"#;

/// One HTTP request the server received.
#[derive(Clone)]
pub struct RecordedRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The path and query as sent (`/shop.git/info/refs?service=git-upload-pack`).
    pub path: String,
    /// Whether its `Authorization` carried the token (and it went on to git).
    pub accepted: bool,
    /// The `Authorization` header as sent (`Basic eC1hY2Nlc3MtdG9rZW46…`).
    pub authorization: Option<String>,
    /// The status it was answered with.
    pub status: u16,
}

/// Shows the credential as present or not only, so a failing test prints no token.
impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("accepted", &self.accepted)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("status", &self.status)
            .finish()
    }
}

/// What every request needs: where git is and what it serves, the token, the record.
struct Backend {
    /// The `git-http-backend` program.
    program: PathBuf,
    /// `GIT_PROJECT_ROOT`: the directory holding the bare repositories.
    root: PathBuf,
    token: String,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running git server; stops, and its repositories are removed, when dropped.
pub struct GitServer {
    /// `http://ADDRESS:PORT`.
    base: String,
    backend: Arc<Backend>,
    server: JoinHandle<()>,
    /// Dropped after the server stops (fields drop after [`Drop::drop`]).
    root: TempDir,
}

impl GitServer {
    /// Starts a server on a free port of 127.0.0.1 that serves to whoever presents
    /// `token` as the password of HTTP Basic authentication, with no repositories yet.
    pub async fn start(token: &str) -> Self {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), token).await
    }

    /// The same on a free port of `ip`, an address of this machine: the Docker bridge's
    /// gateway, say, where containers and pods reach it. [`GitServer::url`] names `ip`.
    pub async fn start_on(ip: IpAddr, token: &str) -> Self {
        let root = TempDir::new("git-server");
        let backend = Arc::new(Backend {
            program: backend_program(),
            root: root.path().to_path_buf(),
            token: token.to_string(),
            requests: Mutex::default(),
        });
        // Packs are bigger than axum's 2 MB default and must arrive whole.
        let router = Router::new()
            .fallback(bridge)
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&backend));
        let listener = TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .unwrap_or_else(|e| {
                panic!("binding the git server to {ip} (an address of this machine?): {e}")
            });
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("the git server serves");
        });
        Self {
            base,
            backend,
            server,
            root,
        }
    }

    /// Makes the bare repository `<name>.git` with one commit holding `files` (path,
    /// content; paths may have directories) on `default_branch`, which `HEAD` names.
    /// Pushes over HTTP are allowed.
    pub fn create_repo(&self, name: &str, files: &[(&str, &str)], default_branch: &str) {
        let bare = self.repo_dir(name);
        run(git_command(self.root.path())
            .args([
                "init",
                "--quiet",
                "--bare",
                "--initial-branch",
                default_branch,
            ])
            .arg(&bare));
        run(git_command(&bare).args(["config", "http.receivepack", "true"]));

        // The first commit is made in a scratch clone outside GIT_PROJECT_ROOT, so the
        // server never offers it.
        let scratch = TempDir::new("git-server-scratch");
        let work = scratch.path();
        run(git_command(work).args(["init", "--quiet", "--initial-branch", default_branch]));
        for (path, content) in files {
            let file = work.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&file, content)
                .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        }
        run(git_command(work).args(["add", "--all"]));
        run(git_command(work).args(["commit", "--quiet", "--allow-empty", "-m", "Initial commit"]));
        run(git_command(work)
            .args(["push", "--quiet"])
            .arg(&bare)
            .arg(format!("HEAD:refs/heads/{default_branch}")));
    }

    /// From now on, pushes that update `branch` of `<name>.git` are refused, with
    /// `branch <branch> is protected` shown to the pusher (as `remote: …`).
    pub fn protect_branch(&self, name: &str, branch: &str) {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;

        let bare = self.repo_dir(name);
        let list = bare.join(PROTECTED_LIST);
        let mut protected = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&list)
            .unwrap_or_else(|e| panic!("opening {}: {e}", list.display()));
        writeln!(protected, "{branch}").unwrap();
        let hook = bare.join("hooks").join("pre-receive");
        std::fs::write(&hook, PRE_RECEIVE.replace("{list}", PROTECTED_LIST))
            .unwrap_or_else(|e| panic!("writing {}: {e}", hook.display()));
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The URL to clone `<name>.git` from: `http://ADDRESS:PORT/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base)
    }

    /// The branches of `<name>.git` and the commit each points to, by name.
    pub fn branches(&self, name: &str) -> Vec<(String, String)> {
        let listing = run(git_command(&self.repo_dir(name)).args([
            "for-each-ref",
            "--format=%(refname:strip=2) %(objectname)",
            "refs/heads",
        ]));
        listing
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(branch, commit)| (branch.to_string(), commit.to_string()))
            .collect()
    }

    /// The content of `path` on `branch` of `<name>.git`, if the branch and the file exist.
    pub fn file_at(&self, name: &str, branch: &str, path: &str) -> Option<String> {
        let output = git_command(&self.repo_dir(name))
            .arg("show")
            .arg(format!("refs/heads/{branch}:{path}"))
            .output()
            .expect("git runs");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Adds a commit with `files` (path, content; other files kept) and `message` to
    /// `branch` of `<name>.git`, as if a client had pushed it: on the branch's head, or on
    /// the default branch's when the branch is new. Returns the commit's id.
    pub fn commit(
        &self,
        name: &str,
        branch: &str,
        files: &[(&str, &str)],
        message: &str,
    ) -> String {
        let bare = self.repo_dir(name);
        let exists = self.branches(name).iter().any(|(b, _)| b == branch);
        let start = if exists {
            format!("origin/{branch}")
        } else {
            "origin/HEAD".to_string()
        };
        // Made in a scratch clone outside GIT_PROJECT_ROOT, pushed to the bare repository
        // by path (hooks run: a protected branch refuses it, as it would a client).
        let scratch = TempDir::new("git-server-scratch");
        let work = scratch.path();
        run(git_command(work)
            .args(["clone", "--quiet", "--no-checkout"])
            .arg(&bare)
            .arg("."));
        run(git_command(work).args(["checkout", "--quiet", "-B", branch, &start]));
        for (path, content) in files {
            let file = work.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&file, content)
                .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        }
        run(git_command(work).args(["add", "--all"]));
        run(git_command(work).args(["commit", "--quiet", "--allow-empty", "-m", message]));
        run(git_command(work)
            .args(["push", "--quiet", "origin"])
            .arg(format!("HEAD:refs/heads/{branch}")));
        run(git_command(work).args(["rev-parse", "HEAD"]))
            .trim()
            .to_string()
    }

    /// The commits on `branch` of `<name>.git`, newest first (`git rev-list`).
    pub fn commits(&self, name: &str, branch: &str) -> Vec<String> {
        run(git_command(&self.repo_dir(name))
            .arg("rev-list")
            .arg(format!("refs/heads/{branch}")))
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// The commit messages on `branch` of `<name>.git`, newest first (`git log
    /// --format=%B`).
    pub fn log(&self, name: &str, branch: &str) -> String {
        run(git_command(&self.repo_dir(name))
            .args(["log", "--format=%B"])
            .arg(format!("refs/heads/{branch}")))
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.backend.requests.lock().unwrap().clone()
    }

    /// The bare repository `<name>.git` on disk (what an SSH URL to it names).
    pub fn repo_dir(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.git"))
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A `git` command run in `dir` that reads no global or system configuration, never
/// prompts, ignores any proxy (everything here is on 127.0.0.1), and commits as a fixed
/// author; for the server's own commands and the tests' clients alike.
pub fn git_command(dir: &Path) -> Command {
    let mut command = isolated("git");
    command.current_dir(dir);
    command
}

/// `program` (git or one of its parts) with the environment [`git_command`] describes.
fn isolated(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    // A test run from a git hook inherits these, and they would point git elsewhere.
    for inherited in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_CONFIG",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(inherited);
    }
    command
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Testkit")
        .env("GIT_AUTHOR_EMAIL", "testkit@example.invalid")
        .env("GIT_COMMITTER_NAME", "Testkit")
        .env("GIT_COMMITTER_EMAIL", "testkit@example.invalid");
    command
}

/// Runs `command` and returns its stdout; panics with its stderr if it fails.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `git-http-backend` of the `git` on the PATH, so server and clients are one
/// version; else Debian's.
fn backend_program() -> PathBuf {
    let exec_path = isolated("git").arg("--exec-path").output().ok();
    exec_path
        .filter(|out| out.status.success())
        .map(|out| Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("git-http-backend"))
        .filter(|program| program.is_file())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BACKEND))
}

/// Every request: checked for the token, then answered by `git http-backend`; recorded.
async fn bridge(
    State(backend): State<Arc<Backend>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let user = accepted_user(authorization.as_deref(), &backend.token);
    let response = match &user {
        Some(user) => cgi(&backend, &method, &uri, &headers, user, body).await,
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, CHALLENGE)],
            "a token is needed, as the password of Basic authentication\n",
        )
            .into_response(),
    };
    backend.requests.lock().unwrap().push(RecordedRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), ToString::to_string),
        accepted: user.is_some(),
        authorization,
        status: response.status().as_u16(),
    });
    response
}

/// The username of a Basic `authorization` whose password is `token`.
fn accepted_user(authorization: Option<&str>, token: &str) -> Option<String> {
    let (scheme, encoded) = authorization?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (password == token).then(|| user.to_string())
}

/// Runs `git http-backend` for one request as a CGI server would, and turns what it
/// prints into the response.
async fn cgi(
    backend: &Backend,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    user: &str,
    body: Bytes,
) -> Response {
    let mut command = isolated(&backend.program);
    command
        .env("GIT_PROJECT_ROOT", &backend.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        command.env("CONTENT_TYPE", content_type.to_str().unwrap_or_default());
    }
    if !body.is_empty() || method == Method::POST {
        command.env("CONTENT_LENGTH", body.len().to_string());
    }
    // The other headers as CGI passes them: `Content-Encoding` (git gzips some bodies and
    // the backend inflates them if told) and `Git-Protocol` (for protocol v2) among them.
    // The credential stays here: the backend is told only who it was (REMOTE_USER).
    for (name, value) in headers {
        if [
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
        ]
        .contains(name)
        {
            continue;
        }
        let variable = format!("HTTP_{}", name.as_str().to_uppercase().replace('-', "_"));
        command.env(variable, value.to_str().unwrap_or_default());
    }

    let mut command = tokio::process::Command::from(command);
    // An aborted server (a dropped GitServer) takes its running backends with it.
    command.kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let program = backend.program.display();
            return bad_gateway(format!("starting {program}: {e}"));
        }
    };
    // Fed from its own task while stdout is read, so neither side waits on a full pipe.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let feed = tokio::spawn(async move {
        // A backend that answers without reading everything (an error) closes the pipe.
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await;
    let _ = feed.await;
    match output {
        Ok(output) => cgi_response(&output),
        Err(e) => bad_gateway(format!("running git http-backend: {e}")),
    }
}

/// The CGI program's output as a response: its headers up to the first empty line (a
/// `Status:` one giving the status, 200 without), the rest as the body.
fn cgi_response(output: &Output) -> Response {
    let Some((head, body)) = split_head(&output.stdout) else {
        return bad_gateway(format!(
            "git http-backend printed no headers ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    };
    let mut response = Response::new(Body::from(body.to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or_default();
            if let Some(status) = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
                *response.status_mut() = status;
            }
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Splits CGI output at the empty line that ends its headers (`\r\n` or `\n` endings).
fn split_head(output: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut start = 0;
    for (end, _) in output.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        let line = &output[start..end];
        if line.is_empty() || line == b"\r" {
            return Some((&output[..start], &output[end + 1..]));
        }
        start = end + 1;
    }
    None
}

fn bad_gateway(message: String) -> Response {
    (StatusCode::BAD_GATEWAY, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ghs_right-token";

    /// A git client run from a test: `args` in `dir`, sending `Authorization: Basic` with
    /// `token` as the password if there is one, as a job's checkout would.
    async fn client(dir: &Path, token: Option<&str>, args: &[&str]) -> Output {
        let mut command = git_command(dir);
        command.args(args);
        if let Some(token) = token {
            let credential = BASE64.encode(format!("x-access-token:{token}"));
            command
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {credential}"),
                );
        }
        // Async, so the server on this test's runtime answers while git waits.
        tokio::process::Command::from(command)
            .output()
            .await
            .expect("git runs")
    }

    fn stderr(output: &Output) -> String {
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// A server with `shop.git` holding a README and a nested file on `main`.
    async fn server_with_shop() -> GitServer {
        let server = GitServer::start(TOKEN).await;
        server.create_repo(
            "shop",
            &[
                ("README.md", "# Shop\n"),
                ("src/lib.rs", "pub fn sell() {}\n"),
            ],
            "main",
        );
        server
    }

    /// Clones `shop.git` with the right token into `dir/shop` and returns that path.
    async fn clone_shop(server: &GitServer, dir: &Path) -> PathBuf {
        let url = server.url("shop");
        let output = client(dir, Some(TOKEN), &["clone", "--quiet", &url, "shop"]).await;
        assert!(output.status.success(), "clone failed: {}", stderr(&output));
        dir.join("shop")
    }

    #[tokio::test]
    async fn clone_with_the_token_as_basic_password_sees_the_files_on_the_default_branch() {
        let server = server_with_shop().await;
        let client_dir = TempDir::new("git-client");

        let shop = clone_shop(&server, client_dir.path()).await;

        assert_eq!(
            std::fs::read_to_string(shop.join("README.md")).unwrap(),
            "# Shop\n"
        );
        assert_eq!(
            std::fs::read_to_string(shop.join("src/lib.rs")).unwrap(),
            "pub fn sell() {}\n"
        );
        let head = run(git_command(&shop).args(["rev-parse", "--abbrev-ref", "HEAD"]));
        assert_eq!(head.trim(), "main");
        let requests = server.requests();
        assert!(!requests.is_empty());
        let expected = format!("Basic {}", BASE64.encode(format!("x-access-token:{TOKEN}")));
        for request in &requests {
            assert!(request.accepted, "{request:?}");
            assert_eq!(request.authorization.as_deref(), Some(expected.as_str()));
        }
        assert!(requests
            .iter()
            .any(|r| r.path == "/shop.git/info/refs?service=git-upload-pack" && r.status == 200));
    }

    #[tokio::test]
    async fn clone_without_a_token_is_refused_with_a_401() {
        let server = server_with_shop().await;
        let client_dir = TempDir::new("git-client");
        let url = server.url("shop");

        let output = client(client_dir.path(), None, &["clone", "--quiet", &url, "shop"]).await;

        assert!(!output.status.success());
        assert!(!client_dir.path().join("shop").exists());
        let requests = server.requests();
        assert!(requests.iter().all(|r| !r.accepted), "{requests:?}");
        assert!(requests
            .iter()
            .any(|r| r.status == 401 && r.authorization.is_none()));
    }

    #[tokio::test]
    async fn clone_with_a_wrong_token_is_refused_with_a_401() {
        let server = server_with_shop().await;
        let client_dir = TempDir::new("git-client");
        let url = server.url("shop");

        let output = client(
            client_dir.path(),
            Some("ghs_wrong-token"),
            &["clone", "--quiet", &url, "shop"],
        )
        .await;

        assert!(!output.status.success());
        let requests = server.requests();
        assert!(requests.iter().all(|r| !r.accepted), "{requests:?}");
        let wrong = format!("Basic {}", BASE64.encode("x-access-token:ghs_wrong-token"));
        assert!(requests
            .iter()
            .any(|r| r.status == 401 && r.authorization.as_deref() == Some(wrong.as_str())));
    }

    #[tokio::test]
    async fn pushed_new_branch_lands_with_its_files_and_message() {
        let server = server_with_shop().await;
        let client_dir = TempDir::new("git-client");
        let shop = clone_shop(&server, client_dir.path()).await;
        run(git_command(&shop).args(["checkout", "--quiet", "-b", "agent/fix-1"]));
        std::fs::write(shop.join("FIX.md"), "fixed\n").unwrap();
        run(git_command(&shop).args(["add", "FIX.md"]));
        run(git_command(&shop).args(["commit", "--quiet", "-m", "Fix the shop"]));

        let output = client(&shop, Some(TOKEN), &["push", "origin", "agent/fix-1"]).await;

        assert!(output.status.success(), "push failed: {}", stderr(&output));
        let pushed = run(git_command(&shop).args(["rev-parse", "HEAD"]));
        let branches = server.branches("shop");
        assert!(
            branches.contains(&("agent/fix-1".to_string(), pushed.trim().to_string())),
            "{branches:?}"
        );
        assert_eq!(branches.len(), 2, "{branches:?}");
        assert_eq!(
            server.file_at("shop", "agent/fix-1", "FIX.md").as_deref(),
            Some("fixed\n")
        );
        assert_eq!(server.file_at("shop", "main", "FIX.md"), None);
        assert_eq!(
            server.log("shop", "agent/fix-1"),
            "Fix the shop\n\nInitial commit\n\n"
        );
        assert!(server
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.path == "/shop.git/git-receive-pack"));
    }

    #[tokio::test]
    async fn push_to_a_protected_branch_is_refused_with_the_hooks_message() {
        let server = server_with_shop().await;
        server.protect_branch("shop", "main");
        let before = server.branches("shop");
        let client_dir = TempDir::new("git-client");
        let shop = clone_shop(&server, client_dir.path()).await;
        std::fs::write(shop.join("README.md"), "# Shop, changed\n").unwrap();
        run(git_command(&shop).args(["commit", "--quiet", "-am", "Change main"]));

        let output = client(&shop, Some(TOKEN), &["push", "origin", "main"]).await;

        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("remote: branch main is protected"),
            "{}",
            stderr(&output)
        );
        assert_eq!(server.branches("shop"), before);
        // Other branches still take pushes.
        let output = client(
            &shop,
            Some(TOKEN),
            &["push", "origin", "HEAD:refs/heads/other"],
        )
        .await;
        assert!(output.status.success(), "push failed: {}", stderr(&output));
    }

    #[tokio::test]
    async fn several_megabyte_push_and_gzipped_fetch_go_through() {
        let server = server_with_shop().await;
        let client_dir = TempDir::new("git-client");
        let shop = clone_shop(&server, client_dir.path()).await;
        // Incompressible, so the pack is bigger than git's 1 MB post buffer and goes chunked.
        let noise: Vec<u8> = (0..3 * 1024 * 1024).map(|_| rand::random::<u8>()).collect();
        std::fs::write(shop.join("noise.bin"), &noise).unwrap();
        run(git_command(&shop).args(["add", "noise.bin"]));
        run(git_command(&shop).args(["commit", "--quiet", "-m", "Add noise"]));
        // Enough branches on distinct commits that the fetch's wants pass 1 KB, which git
        // sends gzipped.
        for n in 0..40 {
            let message = format!("Step {n}");
            run(git_command(&shop).args(["commit", "--quiet", "--allow-empty", "-m", &message]));
            run(git_command(&shop).args(["branch", &format!("step-{n}")]));
        }

        let push = client(&shop, Some(TOKEN), &["push", "--quiet", "origin", "--all"]).await;
        assert!(push.status.success(), "push failed: {}", stderr(&push));
        let url = server.url("shop");
        let mirror = client(
            client_dir.path(),
            Some(TOKEN),
            &["clone", "--quiet", "--mirror", &url, "mirror.git"],
        )
        .await;

        assert!(mirror.status.success(), "clone failed: {}", stderr(&mirror));
        assert_eq!(server.branches("shop").len(), 41);
        let fetched = run(git_command(&client_dir.path().join("mirror.git")).args([
            "cat-file",
            "-s",
            "step-39:noise.bin",
        ]));
        assert_eq!(fetched.trim(), noise.len().to_string());
    }

    #[tokio::test]
    async fn a_server_started_on_another_address_is_cloned_from_there() {
        // All of 127.0.0.0/8 is this machine's, as the Docker bridge's gateway is.
        let server = GitServer::start_on(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), TOKEN).await;
        server.create_repo("shop", &[("README.md", "# Shop\n")], "main");
        assert!(
            server.url("shop").starts_with("http://127.0.0.2:"),
            "{}",
            server.url("shop")
        );
        let client_dir = TempDir::new("git-client");

        let shop = clone_shop(&server, client_dir.path()).await;

        assert_eq!(
            std::fs::read_to_string(shop.join("README.md")).unwrap(),
            "# Shop\n"
        );
    }

    #[tokio::test]
    async fn a_commit_on_a_new_branch_starts_at_the_default_branch_and_the_next_continues_it() {
        let server = server_with_shop().await;
        let main = server.branches("shop");

        let first = server.commit("shop", "agent/fix-2", &[("NOTES.md", "one\n")], "First");
        let second = server.commit("shop", "agent/fix-2", &[("MORE.md", "two\n")], "Second");

        assert_eq!(server.commits("shop", "agent/fix-2")[..2], [second, first]);
        assert_eq!(
            server.log("shop", "agent/fix-2"),
            "Second\n\nFirst\n\nInitial commit\n\n"
        );
        assert_eq!(
            server.file_at("shop", "agent/fix-2", "NOTES.md").as_deref(),
            Some("one\n")
        );
        assert_eq!(
            server
                .file_at("shop", "agent/fix-2", "README.md")
                .as_deref(),
            Some("# Shop\n")
        );
        let branches = server.branches("shop");
        assert_eq!(
            branches
                .iter()
                .filter(|(name, _)| name == "main")
                .cloned()
                .collect::<Vec<_>>(),
            main
        );
    }

    #[test]
    fn basic_credential_with_any_user_and_the_token_is_accepted() {
        let basic = |pair: &str| format!("Basic {}", BASE64.encode(pair));
        let accepts = |header: &str| accepted_user(Some(header), TOKEN);

        assert_eq!(
            accepts(&basic(&format!("oauth2:{TOKEN}"))).as_deref(),
            Some("oauth2")
        );
        assert_eq!(
            accepts(&basic(&format!("x-access-token:{TOKEN}"))).as_deref(),
            Some("x-access-token")
        );
        assert_eq!(accepts(&basic("oauth2:other")), None);
        assert_eq!(accepts(&basic(TOKEN)), None);
        assert_eq!(accepts(&format!("Bearer {TOKEN}")), None);
        assert_eq!(accepted_user(None, TOKEN), None);
    }

    #[test]
    fn cgi_output_with_a_status_line_gives_that_status_headers_and_body() {
        let output = Output {
            status: std::process::ExitStatus::default(),
            stdout: b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope\n".to_vec(),
            stderr: Vec::new(),
        };

        let response = cgi_response(&output);

        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert_eq!(split_head(&output.stdout).unwrap().1, b"nope\n");
        assert_eq!(split_head(b"Expires: never\n\n").unwrap().1, b"");
        assert_eq!(split_head(b"no end"), None);
    }
}
