//! A stand-in git host for `scripts/demo --pr`: a git server (git's own `http-backend`,
//! checking a token) holding one repository, `shop`, and a fake of GitHub's API that takes
//! pull requests, both on free ports of 127.0.0.1. Nothing leaves the machine.
//!
//! ```text
//! demo-forge <token> <ready-file>
//! ```
//!
//! Once both listen it writes `<ready-file>`: the repository's URL on its first line, the
//! API's base URL on its second. On SIGTERM or SIGINT it prints what the forge holds — the
//! repository's branches, the newest commit of each branch but `main`, and the pull requests
//! — and exits.

use std::time::Duration;

use testkit::fake_api::FakeApi;
use testkit::git_server::GitServer;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [token, ready] = args.as_slice() else {
        eprintln!("usage: demo-forge <token> <ready-file>");
        std::process::exit(2);
    };
    let git = GitServer::start(token).await;
    git.create_repo(
        "shop",
        &[
            ("README.md", "# shop\n\nThe demo's repository.\n"),
            ("greeting.txt", "helo, world\n"),
        ],
        "main",
    );
    let api = FakeApi::start().await;
    if let Err(e) = std::fs::write(ready, format!("{}\n{}\n", git.url("shop"), api.url)) {
        eprintln!("demo-forge: writing {ready}: {e}");
        std::process::exit(1);
    }
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("demo-forge: cannot install its signal handlers");
        std::process::exit(1);
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Requests still in flight finish first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("==> what the git host holds now");
    for (branch, commit) in git.branches("shop") {
        println!(
            "    branch {branch} at {}",
            commit.get(..7).unwrap_or(&commit)
        );
        if branch != "main" {
            for line in git.log("shop", &branch).lines().take(8) {
                println!("        | {line}");
            }
        }
    }
    for pr in api.pull_requests("acme/shop") {
        println!(
            "    pull request #{} {}: {:?} from {} into {}{}",
            pr["number"],
            pr["html_url"].as_str().unwrap_or_default(),
            pr["title"].as_str().unwrap_or_default(),
            pr["head"]["ref"].as_str().unwrap_or_default(),
            pr["base"]["ref"].as_str().unwrap_or_default(),
            if pr["draft"] == true { " (draft)" } else { "" },
        );
        for line in pr["body"].as_str().unwrap_or_default().lines() {
            println!("        | {line}");
        }
    }
}
