//! Errors of the element engine. Every one of them is bad input (exit code 2):
//! each names the file or element at fault, the chain that led there, and a fix.

use std::path::PathBuf;

use crate::host::CmdError;

/// Something wrong with the elements, their files, or the way they were chosen.
#[derive(Debug, thiserror::Error)]
pub enum ElementError {
    #[error("element search path {path} does not exist (check ELEMENTS_PATH)")]
    PathMissing { path: PathBuf },

    #[error("element search path {path} is not a directory (check ELEMENTS_PATH)")]
    PathNotDir { path: PathBuf },

    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} is not valid UTF-8 text (element files must be UTF-8)")]
    NotUtf8 { path: PathBuf },

    #[error(
        "{path} line {line}: {name:?} is not an element name (letters, digits, `.`, `_` and `-`; \
         check the file for stray bytes such as a byte-order mark)"
    )]
    BadName {
        path: PathBuf,
        line: usize,
        name: String,
    },

    #[error("unknown element {name}{chain}{hint}")]
    UnknownElement {
        name: String,
        /// " (needed by a -> b)" or empty when the user named it.
        chain: String,
        /// " ; did you mean ...?" or a hint about ELEMENTS_PATH.
        hint: String,
    },

    #[error("dependency cycle: {cycle}; remove one of these element-deps entries")]
    Cycle { cycle: String },

    #[error("{name} is provided by both {first} and {second}; choose only one of them{chain}")]
    DuplicateProvider {
        name: String,
        first: String,
        second: String,
        chain: String,
    },

    #[error(
        "element {name} was named on the command line, but {provider} provides it; \
         drop {name} from the command line (or drop {provider})"
    )]
    UserElementProvided { name: String, provider: String },

    #[error("no element provides operating-system; add one of: {candidates}")]
    NoOperatingSystem { candidates: String },

    #[error("{needed_by} needs {name}; {fix}{chain}")]
    VirtualUnprovided {
        name: String,
        needed_by: String,
        /// "a, b and c provide it: add one" (or "a provides it: add it").
        fix: String,
        chain: String,
    },

    #[error(
        "elements {first} and {second} both ship a block-device layout ({first_file} and \
         {second_file}); drop one of them or set DIB_BLOCK_DEVICE_CONFIG"
    )]
    BlockDeviceConflict {
        first: String,
        second: String,
        first_file: PathBuf,
        second_file: PathBuf,
    },

    #[error(
        "elements {first} and {second} both have {phase}/{file}; DIB merges the phase \
         directories, so one must be renamed"
    )]
    DuplicateHook {
        phase: String,
        file: String,
        first: String,
        second: String,
    },

    #[error("sourcing {file} failed{tail}")]
    EnvironmentFile { file: PathBuf, tail: String },

    #[error("sourcing environment.d files: {0}")]
    EnvironmentRun(#[source] CmdError),

    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },

    #[error("{path}: {message} (element {element})")]
    PackageInstalls {
        path: PathBuf,
        element: String,
        message: String,
    },

    #[error(
        "{path}: `when: {statement}` tests {var}, which is not set (element {element}); \
         export it, or give it a default in an environment.d file"
    )]
    WhenUnset {
        path: PathBuf,
        element: String,
        statement: String,
        var: String,
    },

    #[error("{path}: {message}")]
    PkgMap { path: PathBuf, message: String },
}

/// Renders " (needed by a -> b -> c)" for error messages; empty for a user element.
pub fn render_chain(chain: &[String]) -> String {
    if chain.is_empty() {
        String::new()
    } else {
        format!(" (needed by {})", chain.join(" -> "))
    }
}

/// Joins names as "a, b and c" for messages.
pub fn join_names(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
