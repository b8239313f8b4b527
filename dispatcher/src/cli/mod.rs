//! The `agentsmith` command line: `serve`, `config check`, `jobs ...` and `deliveries ...`
//! talking to a running dispatcher's API, and `spawner render`.

pub mod client;
mod deliveries;
mod jobs;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use spawner::JobSpawner;
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::settings::{LogFormat, Settings, CONFIG_ENV};
use crate::telemetry::chain;

/// agentsmith: a job dispatcher for agent workloads.
#[derive(Debug, Parser)]
#[command(name = "agentsmith", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the dispatcher (HTTP API, scheduler, watchdog).
    Serve {
        /// The configuration file (built-in defaults when neither this nor AGENTSMITH_CONFIG is set).
        #[arg(long, env = CONFIG_ENV)]
        config: Option<PathBuf>,
    },
    /// Inspect configuration.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Submit and inspect jobs through a running dispatcher.
    Jobs(jobs::JobsArgs),
    /// List, inspect and replay webhook deliveries (the delivery journal; needs an API token).
    Deliveries(deliveries::DeliveriesArgs),
    /// Inspect what a spawner would create.
    Spawner {
        /// What to do.
        #[command(subcommand)]
        command: SpawnerCommand,
    },
}

/// Where the API commands (`jobs`, `deliveries`) find the dispatcher, and how they print.
/// The API token is read from `AGENTSMITH_API_TOKEN`.
#[derive(Debug, Args)]
pub struct Remote {
    /// The dispatcher's base URL.
    #[arg(
        long,
        env = "AGENTSMITH_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Remote {
    /// A client of the dispatcher, with the token of `AGENTSMITH_API_TOKEN` if set.
    pub fn client(&self) -> client::Client {
        client::Client::new(&self.url, std::env::var("AGENTSMITH_API_TOKEN").ok())
    }
}

/// `agentsmith spawner ...`
#[derive(Debug, Subcommand)]
pub enum SpawnerCommand {
    /// Print the Kubernetes Job the kubernetes backend would create for a job.
    Render {
        /// The configuration file.
        #[arg(long, env = CONFIG_ENV)]
        config: Option<PathBuf>,
        /// A JSON file: {"agent", "task", "project", "ticket", "id", "attempt"} (agent or
        /// project, and task, are needed).
        #[arg(long)]
        job_file: PathBuf,
        /// The namespace (default: spawner.kubernetes.namespace, else "default").
        #[arg(long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = render::Format::Yaml)]
        output: render::Format,
    },
}

/// `agentsmith config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration: prints every problem with the key that has it (exits 1 if
    /// any), and warnings about what works but is risky (exits 0).
    Check {
        /// The configuration file.
        #[arg(long, env = CONFIG_ENV)]
        config: Option<PathBuf>,
    },
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => match Settings::load(config.as_deref()) {
            Ok(settings) => {
                for warning in settings.warnings() {
                    eprintln!("warning: {warning}");
                }
                let source = config
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "built-in defaults".into());
                println!(
                    "configuration OK ({source}): {} agent profile(s), {} project(s), spawner {:?}",
                    settings.agents.len(),
                    settings.projects.len(),
                    settings.spawner.kind
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Jobs(args) => runtime().block_on(jobs::run(args)),
        Command::Deliveries(args) => runtime().block_on(deliveries::run(args)),
        Command::Spawner {
            command:
                SpawnerCommand::Render {
                    config,
                    job_file,
                    namespace,
                    output,
                },
        } => render::run(config.as_deref(), &job_file, namespace.as_deref(), output),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
}

fn serve(config: Option<PathBuf>) -> ExitCode {
    let settings = match Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            crate::telemetry::init(LogFormat::Pretty);
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    serve_with(settings, None)
}

/// `agentsmith serve` with loaded settings and, if given, a spawner instead of the one the
/// settings name (the supervision test passes one whose loop dies): installs logging, runs
/// until SIGTERM or ctrl-c, and says how it ended as the process exit code (non-zero when
/// the dispatcher failed, a background loop having died, say).
pub fn serve_with(settings: Settings, spawner: Option<Arc<dyn JobSpawner>>) -> ExitCode {
    crate::telemetry::init(settings.log.format);
    for warning in settings.warnings() {
        tracing::warn!(key = %warning.key, "{warning}");
    }
    let result = runtime().block_on(async move {
        let shutdown = CancellationToken::new();
        // Listening before anything is bound: a SIGTERM while the dispatcher starts (its
        // port may already accept connections) drains it rather than killing it.
        listen_for_signals(shutdown.clone());
        let app = match spawner {
            Some(spawner) => {
                Application::build_with_spawner(settings, spawner, shutdown.clone()).await?
            }
            None => Application::build(settings, shutdown.clone()).await?,
        };
        app.run().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logged once (the subscriber writes to stderr), with every cause in the chain,
            // each said once (a Redis error repeats its cause as its source).
            let error: &(dyn std::error::Error + 'static) = e.as_ref();
            tracing::error!(error = %chain(error), "agentsmith stopped");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT (ctrl-c); both handlers are in place when this
/// returns.
fn listen_for_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(interrupt)) => (term, interrupt),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %chain(&e), "cannot listen for SIGTERM and SIGINT");
            return;
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("interrupt received"),
        }
        shutdown.cancel();
    });
}
