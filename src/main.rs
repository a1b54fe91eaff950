//! `dib-create`: the command-line entry point. Prints the error chain once and
//! maps failures to DIB-compatible exit codes (1 build failure, 2 bad input).

use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

fn main() -> ExitCode {
    // The long version runs the host tools: only when it is asked for.
    let mut cmd = dib::cli::Cli::command();
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        // Built once per process, so leaking it costs nothing.
        cmd = cmd.long_version(&*Box::leak(
            dib::cli::setup::long_version().into_boxed_str(),
        ));
    }
    let parsed = cmd
        .try_get_matches()
        .and_then(|m| dib::cli::Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match dib::exec::run(cli) {
        Ok(()) => {
            dib::log::finish();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = dib::exec::exit_code(&e);
            dib::log::fatal(&dib::exec::render_error(&e), code);
            ExitCode::from(code)
        }
    }
}
