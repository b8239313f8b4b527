//! The `agentsmith` binary: see `agentsmith --help`.

fn main() -> std::process::ExitCode {
    agentsmith::cli::main()
}
