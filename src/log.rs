//! The build log: every command line and output line goes to the log file (when
//! one is open) and to stderr. Kept deliberately small: one global sink.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

static SINK: Mutex<Option<File>> = Mutex::new(None);
static VERBOSITY: AtomicU8 = AtomicU8::new(1);
static START: Mutex<Option<Instant>> = Mutex::new(None);

/// 0: quiet (errors and steps), 1: output lines too, 2: debug (command lines).
pub fn set_verbosity(v: u8) {
    VERBOSITY.store(v, Ordering::Relaxed);
}

/// Also write everything to `path` (appending).
pub fn open_file(path: &Path) -> std::io::Result<()> {
    let f = File::options().create(true).append(true).open(path)?;
    *SINK.lock().unwrap() = Some(f);
    Ok(())
}

pub fn close_file() {
    *SINK.lock().unwrap() = None;
}

fn stamp() -> String {
    let mut s = START.lock().unwrap();
    let start = *s.get_or_insert_with(Instant::now);
    format!("{:7.1}s", start.elapsed().as_secs_f64())
}

fn emit(level: u8, line: &str) {
    let line = format!("{} {line}", stamp());
    if let Some(f) = SINK.lock().unwrap().as_mut() {
        let _ = writeln!(f, "{line}");
    }
    if VERBOSITY.load(Ordering::Relaxed) >= level {
        eprintln!("{line}");
    }
}

/// A build step a user wants to see.
pub fn step(msg: &str) {
    emit(0, &format!("==> {msg}"));
}

/// Something worth a user's attention that is not an error.
pub fn warn(msg: &str) {
    emit(0, &format!("warning: {msg}"));
}

/// A line of a command's output.
pub fn output(prefix: &str, line: &str) {
    if prefix.is_empty() {
        emit(1, line);
    } else {
        emit(1, &format!("[{prefix}] {line}"));
    }
}

/// Detail for debugging (command lines).
pub fn debug(msg: &str) {
    emit(2, msg);
}

/// Informational message.
pub fn info(msg: &str) {
    emit(1, msg);
}
