//! `element-info`: DIB's element-info over dib-create's own element engine.
//! It prints the named elements with all their dependencies, or (`--env`) the
//! bash that sets IMAGE_ELEMENT, IMAGE_ELEMENT_YAML and
//! `get_image_element_array`. The search path is dib-create's: ELEMENTS_PATH,
//! then the elements dib-create ships. The work is `dib::element` and
//! `dib::plan::element_info_script`; this file is the command line and the
//! exit status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dib::element::{self, ElementError};

const LONG_ABOUT: &str = "\
Prints the named elements with all their dependencies (element-deps, less the
names a chosen element provides), like diskimage-builder's element-info.

Elements are looked up on ELEMENTS_PATH, then among the elements dib-create
ships; an earlier directory wins for a name. Unlike dib-create, nothing is
added to the names given: no `base`, and no default block-device layout for
`vm`. The list comes in build order, dependencies first (DIB prints it in no
fixed order).

Exit status: 0 success, 2 bad usage, an unknown element, or elements that
conflict (a name provided twice, no operating-system element, a cycle).";

#[derive(Parser)]
#[command(
    name = "element-info",
    version,
    about = "Prints elements with their dependencies, as diskimage-builder's element-info does",
    long_about = LONG_ABOUT
)]
struct Args {
    /// Print eval-able bash that sets IMAGE_ELEMENT and IMAGE_ELEMENT_YAML and
    /// defines the function get_image_element_array
    #[arg(short = 'e', long)]
    env: bool,
    /// Accepted for older DIB's command line; dependencies are always expanded
    #[arg(short = 'd', long)]
    expand_dependencies: bool,
    /// Elements to expand
    #[arg(required = true, value_name = "ELEMENT")]
    elements: Vec<String>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Warnings only: element overrides are info, and DIB's callers eval stdout.
    dib::log::set_verbosity(0);
    match expand(&args.elements) {
        Ok(elements) if args.env => print!("{}", dib::plan::element_info_script(&elements)),
        Ok(elements) => {
            let names: Vec<&str> = elements.iter().map(|(n, _)| n.as_str()).collect();
            println!("{}", names.join(" "));
        }
        Err(e) => {
            // Every element error is bad input.
            eprintln!("element-info: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// The elements and their directories, in build order.
fn expand(names: &[String]) -> Result<Vec<(String, PathBuf)>, ElementError> {
    let caller: BTreeMap<String, String> = std::env::vars().collect();
    let set = element::discover(&dib::plan::search_dirs(&caller))?;
    let order = element::expand_dependencies(&set, names)?;
    Ok(order
        .into_iter()
        .filter_map(|n| set.get(&n).map(|e| (n, e.path.clone())))
        .collect())
}
