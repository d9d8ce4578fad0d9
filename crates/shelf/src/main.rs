//! The `shelf` binary: command-line parsing, configuration and wiring.
//!
//! This is the only crate that reads the environment or builds the engine
//! into the rest: it turns flags and env vars into each crate's config
//! struct, then hands over. It is not a library.

mod admin;
mod ask;
mod bench;
mod catalog;
mod cli;
mod embedder;
mod fit;
mod keys;
mod probe;
mod progress;
mod ps;
mod pull;
mod run;
mod runner;
mod serve;
mod store_cmds;
mod synthetic;
mod tls;
mod watch;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();
    init_logging(&cli);
    // A runner's async work is one socket: a single thread keeps it off the
    // cores its decode threads use.
    let mut builder = match cli.command {
        cli::Command::Runner(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Blocking work still running (a long template render for a client
    // that left) must not hold the exit: dropping the runtime would wait.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: cli::Cli) -> anyhow::Result<()> {
    let globals = cli.globals;
    match cli.command {
        cli::Command::Run(args) => run::run(&globals, args).await,
        cli::Command::Serve(args) => serve::serve(&globals, *args).await,
        cli::Command::Bench(args) => bench::bench(&globals, args).await,
        cli::Command::Pull(args) => pull::pull(&globals, args).await,
        cli::Command::Import(args) => store_cmds::import(&globals, args),
        cli::Command::List => store_cmds::list(&globals),
        cli::Command::Show(args) => store_cmds::show(&globals, args),
        cli::Command::Rm(args) => store_cmds::rm(&globals, args),
        cli::Command::Cp(args) => store_cmds::cp(&globals, args),
        cli::Command::Gc(args) => store_cmds::gc(&globals, args),
        cli::Command::Fit(args) => fit::fit(&globals, args),
        cli::Command::Cost(args) => fit::cost(&globals, args),
        cli::Command::Ps(args) => ps::ps(args).await,
        cli::Command::Keys(command) => keys::keys(&globals, command),
        cli::Command::Watch(command) => watch::watch(&globals, command).await,
        cli::Command::Ask(args) => ask::ask(&globals, args).await,
        cli::Command::Conversations(command) => watch::conversations(&globals, command),
        cli::Command::Runner(args) => runner::runner(&globals, args).await,
        cli::Command::Probe => runner::probe(&globals),
    }
}

/// Logs go to stderr. `SHELF_LOG` takes a tracing filter; the default keeps
/// llama.cpp's chatter out of the way. Prompt text is never logged.
fn init_logging(cli: &cli::Cli) {
    let default = match cli.command {
        cli::Command::Serve(_) => "info,llama-cpp-2=warn",
        _ => "warn,llama-cpp-2=error",
    };
    let filter = std::env::var("SHELF_LOG").unwrap_or_else(|_| default.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
