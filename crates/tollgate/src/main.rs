//! The `tollgate` binary: parses flags, sets up logging, and calls into the library.

use clap::Parser;
use std::io::Write as _;
use std::process::ExitCode;
use tollgate::cli::{Cli, Command};

/// mimalloc instead of the system's allocator: it gives freed memory back to the
/// system, so the process's resident memory returns near its baseline after a burst
/// of connections (glibc's per-thread arenas kept most of it; measured by the attack
/// suite, `tests/attacks.rs`). The `mimalloc` feature (on by default) chooses it.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `tollgate export | head`: once the reader is gone, a print fails with `EPIPE` (Rust
/// ignores `SIGPIPE`, and restoring it takes unsafe code, which the workspace forbids)
/// and `println!` panics. A print that failed on a closed pipe ends the process quietly
/// instead, with the status a `SIGPIPE` gives (128 + 13); any other panic is reported
/// as before.
fn quiet_on_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload.downcast_ref::<String>().map(String::as_str).or(payload.downcast_ref::<&str>().copied());
        if message.is_some_and(|m| m.starts_with("failed printing to stdout") && m.contains("Broken pipe")) {
            std::process::exit(141);
        }
        report(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    tollgate::init_tracing(&cli.log, cli.log_format == "json");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tollgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => tollgate::serve::run_cli(args).await,
            Command::Gateway(args) => tollgate::serve::run_gateway(args).await,
            Command::Check(args) => tollgate::check::run(args),
            Command::Ws(args) => tollgate::ws::run(args).await,
            Command::Apply(args) => tollgate::client::apply(args).await,
            Command::Export(args) => tollgate::client::export(args).await,
            Command::Deploy(args) => tollgate::client::deploy(args).await,
            Command::Promote(args) => tollgate::client::promote(args).await,
            Command::Diff(args) => tollgate::client::diff(args).await,
            Command::Usage(args) => tollgate::client::usage(args).await,
            Command::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "tollgate", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Import(tollgate::cli::ImportCommand::Openapi(args)) => tollgate::import::run_openapi(args),
            Command::Import(tollgate::cli::ImportCommand::Apicast(args)) => tollgate::import::run_apicast(args),
            Command::Man => {
                let cmd = <Cli as clap::CommandFactory>::command();
                clap_mangen::Man::new(cmd)
                    .render(&mut std::io::stdout())
                    .map(|()| ExitCode::SUCCESS)
                    .map_err(Into::into)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
