//! The build log. Every event goes to the log files (as text) and to stderr:
//! as text lines (under a live status line on a terminal) or, with
//! `--log-format json`, as one JSON object per line. The structure of the
//! build (phases, hooks, tasks, outputs) is also kept for the build report.
//! One global sink: the log is written from everywhere.

pub mod event;
mod status;

pub use event::{Event, Stamped};

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// How stderr carries the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Timestamped lines, with a status line when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per event, for CI systems.
    Json,
}

struct State {
    files: Vec<File>,
    verbosity: u8,
    format: Format,
    status: Option<status::StatusLine>,
    start: Option<Instant>,
    recorded: Vec<Stamped>,
}

static STATE: Mutex<State> = Mutex::new(State {
    files: Vec::new(),
    verbosity: 1,
    format: Format::Text,
    status: None,
    start: None,
    recorded: Vec::new(),
});

fn state() -> std::sync::MutexGuard<'static, State> {
    // A panic while logging must not silence the rest of the log.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// 0: quiet (errors and steps), 1: output lines too, 2: debug (command lines).
pub fn set_verbosity(v: u8) {
    state().verbosity = v;
}

/// Chooses how stderr carries the log; `status_line` draws the live line
/// (only for text on a terminal).
pub fn configure(format: Format, status_line: bool) {
    let mut s = state();
    s.format = format;
    s.start.get_or_insert_with(Instant::now);
    if status_line && format == Format::Text && s.status.is_none() {
        s.status = Some(status::StatusLine::start());
    }
}

/// Whether a status line suits this stderr: a terminal that can redraw.
pub fn stderr_wants_status_line() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb")
}

/// Also write everything to `path` (appending).
pub fn open_file(path: &Path) -> std::io::Result<()> {
    let f = File::options().create(true).append(true).open(path)?;
    state().files.push(f);
    Ok(())
}

pub fn close_files() {
    state().files.clear();
}

/// Records and prints one event.
pub fn event(event: Event) {
    let mut s = state();
    let time = s
        .start
        .get_or_insert_with(Instant::now)
        .elapsed()
        .as_secs_f64();
    let stamped = Stamped { time, event };
    let text = stamped.event.text().map(|t| match stamped.event {
        // The last words stand alone, as every tool prints its error.
        Event::Error { .. } => t,
        _ => format!("{time:7.1}s {t}"),
    });
    if let Some(line) = &text {
        for f in &mut s.files {
            let _ = writeln!(f, "{line}");
        }
    }
    if let Some(st) = &s.status {
        st.observe(&stamped.event);
    }
    if stamped.event.level() <= s.verbosity {
        write_stderr(&s, &stamped, text.as_deref());
    }
    if stamped.event.is_structural() {
        s.recorded.push(stamped);
    }
}

fn write_stderr(s: &State, stamped: &Stamped, text: Option<&str>) {
    match (s.format, text, &s.status) {
        (Format::Json, _, _) => {
            if let Ok(line) = serde_json::to_string(stamped) {
                to_stderr(&line);
            }
        }
        (Format::Text, Some(line), Some(st)) => st.println(line),
        (Format::Text, Some(line), None) => to_stderr(line),
        (Format::Text, None, _) => {}
    }
}

/// One line to stderr, whatever became of it. Stderr is often a pipe
/// (`dib-create ... 2>&1 | tee log`), and Ctrl-C ends the reader too: a failed
/// write must not stop the teardown that is logging its steps (eprintln!
/// panics on EPIPE). The log file still gets every line.
fn to_stderr(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The structure of the run so far (phases, hooks, tasks, outputs).
pub fn recorded() -> Vec<Stamped> {
    state().recorded.clone()
}

/// Seconds since the run started.
pub fn elapsed() -> f64 {
    state()
        .start
        .get_or_insert_with(Instant::now)
        .elapsed()
        .as_secs_f64()
}

/// Hides the status line while `f` owns the terminal (a debug shell).
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    // The line is taken out so that `f` may log.
    let status = state().status.take();
    let out = match &status {
        Some(st) => st.suspend(f),
        None => f(),
    };
    state().status = status;
    out
}

/// Removes the status line (before the process prints its last words).
pub fn finish() {
    if let Some(st) = state().status.take() {
        st.finish();
    }
}

/// The run failed: the last event, then the status line goes.
pub fn fatal(message: &str, exit_code: u8) {
    finish();
    event(Event::Error {
        message: message.to_string(),
        exit_code,
    });
}

/// A build step a user wants to see.
pub fn step(msg: &str) {
    event(Event::Step {
        message: msg.to_string(),
    });
}

/// Something worth a user's attention that is not an error.
pub fn warn(msg: &str) {
    event(Event::Warning {
        message: msg.to_string(),
    });
}

/// A line of a command's output.
pub fn output(prefix: &str, line: &str) {
    event(Event::Output {
        source: prefix.to_string(),
        line: line.to_string(),
    });
}

/// Detail for debugging.
pub fn debug(msg: &str) {
    event(Event::Debug {
        message: msg.to_string(),
    });
}

/// A command about to run.
pub fn command(line: &str) {
    event(Event::Command {
        line: line.to_string(),
    });
}

/// Informational message.
pub fn info(msg: &str) {
    event(Event::Info {
        message: msg.to_string(),
    });
}

/// Times a task of the tool itself as a `TaskStart`/`TaskEnd` pair.
pub fn task<T, E>(group: &str, task: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    event(Event::TaskStart {
        group: group.to_string(),
        task: task.to_string(),
    });
    let started = Instant::now();
    let out = f();
    event(Event::TaskEnd {
        group: group.to_string(),
        task: task.to_string(),
        seconds: started.elapsed().as_secs_f64(),
        ok: out.is_ok(),
    });
    out
}
