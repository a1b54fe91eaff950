//! `dib-create`: the command-line entry point. Prints the error chain once and
//! maps failures to DIB-compatible exit codes (1 build failure, 2 bad input).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match dib::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match dib::exec::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dib-create: error: {}", dib::exec::render_error(&e));
            ExitCode::from(dib::exec::exit_code(&e))
        }
    }
}
