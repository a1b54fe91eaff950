//! The one runner for every external command.
//!
//! Each command has a human description, is logged shell-escaped, gets a null
//! stdin unless told otherwise, dies with us (PDEATHSIG), runs in its own
//! process group so an interrupt can stop the whole tree, and puts the tail of
//! its output into the error when it fails.

// Signals and fork/exec need libc calls: the crate denies unsafe code
// everywhere but in these host modules.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::interrupt;
use crate::log;

/// How many trailing output lines a failure carries.
const TAIL_LINES: usize = 25;

/// A command failed; carries what a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("{what}: could not start `{program}`: {source}{hint}")]
    Spawn {
        what: String,
        program: String,
        hint: String,
        source: std::io::Error,
    },
    #[error("{what}: `{cmdline}` {status}\n{tail}")]
    Failed {
        what: String,
        cmdline: String,
        status: String,
        code: Option<i32>,
        tail: String,
    },
    #[error("{what}: interrupted")]
    Interrupted { what: String },
    #[error("{what}: timed out after {secs} s\n{tail}")]
    Timeout {
        what: String,
        secs: u64,
        tail: String,
    },
    #[error("{what}: reading output: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl CmdError {
    /// The exit code of a command that ran and failed.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            CmdError::Failed { code, .. } => *code,
            _ => None,
        }
    }
}

/// Where the command's stdout goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutMode {
    /// Stream stdout and stderr to the build log.
    Log,
    /// Capture stdout (returned); stderr to the log.
    Capture,
    /// Inherit the terminal (interactive shells for `break=`).
    Inherit,
}

/// A builder for one external command.
#[derive(Clone)]
pub struct Cmd {
    what: String,
    program: OsString,
    args: Vec<OsString>,
    env_clear: bool,
    envs: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    cwd: Option<PathBuf>,
    chroot: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    log_prefix: Option<String>,
    teardown: bool,
    keep_stdout: bool,
    /// Where stdout goes when the host runs the command ([`Cmd::capture`]).
    mode: OutMode,
}

/// What a finished command gave back.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub elapsed: Duration,
}

impl Cmd {
    /// A command described for humans as `what` ("formatting root filesystem").
    pub fn new(what: impl Into<String>, program: impl AsRef<OsStr>) -> Self {
        Cmd {
            what: what.into(),
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env_clear: false,
            envs: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
            chroot: None,
            stdin: None,
            timeout: None,
            log_prefix: None,
            teardown: false,
            keep_stdout: false,
            mode: OutMode::Log,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(it.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    /// Start from an empty environment.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    pub fn envs<I, K, V>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in it {
            self = self.env(k, v);
        }
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(k.as_ref().to_owned());
        self
    }

    pub fn cwd(mut self, d: impl Into<PathBuf>) -> Self {
        self.cwd = Some(d.into());
        self
    }

    /// Run the command inside `root` (chroot(2) in the child, then chdir /).
    pub fn chroot(mut self, root: impl Into<PathBuf>) -> Self {
        self.chroot = Some(root.into());
        self
    }

    pub fn stdin_bytes(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Marks a teardown step: it still runs after SIGINT/SIGTERM, because
    /// undoing what the build made is exactly what an interrupt asks for.
    pub fn teardown(mut self) -> Self {
        self.teardown = true;
        self
    }

    /// Logs stdout as usual and also returns it in [`Output::stdout`]
    /// (for hooks whose output is an interface, such as block-device.d).
    pub fn keep_stdout(mut self) -> Self {
        self.keep_stdout = true;
        self
    }

    /// Returns stdout in [`Output::stdout`] instead of logging it, when a
    /// [`super::Host`] runs the command.
    pub fn capture(mut self) -> Self {
        self.mode = OutMode::Capture;
        self
    }

    /// What the command is for ("formatting root filesystem").
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The program and its arguments.
    pub fn argv(&self) -> impl Iterator<Item = &OsStr> {
        std::iter::once(self.program.as_os_str()).chain(self.args.iter().map(OsString::as_os_str))
    }

    /// The value the command's environment gives `key`, if set explicitly.
    pub fn env_value(&self, key: &str) -> Option<&OsStr> {
        self.envs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_os_str())
    }

    /// The variables the builder set, in order (later ones win).
    pub fn env_list(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.envs
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
    }

    /// True when the command runs in a chroot.
    pub fn in_chroot(&self) -> bool {
        self.chroot.is_some()
    }

    /// Runs the command on this host, in the mode the builder chose.
    pub fn run_here(self) -> Result<Output, CmdError> {
        let mode = self.mode;
        self.execute(mode)
    }

    /// Prefix for each logged output line (e.g. the hook name).
    pub fn log_prefix(mut self, p: impl Into<String>) -> Self {
        self.log_prefix = Some(p.into());
        self
    }

    /// The shell-escaped command line, for logs and errors.
    pub fn cmdline(&self) -> String {
        let mut parts = vec![shell_quote(&self.program)];
        parts.extend(self.args.iter().map(|a| shell_quote(a)));
        let line = parts.join(" ");
        match &self.chroot {
            Some(r) => format!("(chroot {}) {line}", r.display()),
            None => line,
        }
    }

    /// Run, streaming output to the build log.
    pub fn run(self) -> Result<Output, CmdError> {
        self.execute(OutMode::Log)
    }

    /// Run and return stdout as a string (trailing newline trimmed).
    pub fn read(self) -> Result<String, CmdError> {
        let out = self.execute(OutMode::Capture)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Run and return raw stdout.
    pub fn read_bytes(self) -> Result<Vec<u8>, CmdError> {
        Ok(self.execute(OutMode::Capture)?.stdout)
    }

    /// Run and parse stdout as JSON.
    pub fn run_json<T: serde::de::DeserializeOwned>(self) -> Result<T, CmdError> {
        let what = self.what.clone();
        let out = self.execute(OutMode::Capture)?;
        serde_json::from_slice(&out.stdout).map_err(|e| CmdError::Io {
            what,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// Run attached to the terminal (for debugging shells).
    pub fn run_interactive(self) -> Result<Output, CmdError> {
        self.execute(OutMode::Inherit)
    }

    fn build(&self, mode: OutMode) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        if self.env_clear {
            c.env_clear();
        }
        for k in &self.env_remove {
            c.env_remove(k);
        }
        c.envs(self.envs.iter().map(|(k, v)| (k, v)));
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        match mode {
            OutMode::Inherit => {
                c.stdin(Stdio::inherit())
                    .stdout(Stdio::inherit())
                    .stderr(Stdio::inherit());
            }
            _ => {
                c.stdin(if self.stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            }
        }
        let chroot = self.chroot.clone();
        let own_group = mode != OutMode::Inherit;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if own_group {
                    libc::setpgid(0, 0);
                }
                if let Some(root) = &chroot {
                    nix::unistd::chroot(root.as_path()).map_err(std::io::Error::from)?;
                    nix::unistd::chdir("/").map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        c
    }

    fn execute(self, mode: OutMode) -> Result<Output, CmdError> {
        log::command(&self.cmdline());
        if interrupt::requested() && !self.teardown {
            return Err(CmdError::Interrupted { what: self.what });
        }
        let start = Instant::now();
        let mut child = self.build(mode).spawn().map_err(|e| CmdError::Spawn {
            what: self.what.clone(),
            program: self.program.to_string_lossy().into_owned(),
            hint: missing_tool_hint(&self.program, &e),
            source: e,
        })?;
        let pid = child.id() as i32;
        let _registered = (!self.teardown).then(|| interrupt::ChildGuard::register(pid));
        if let Some(data) = self.stdin.clone() {
            let mut sin = child.stdin.take().expect("piped stdin");
            std::thread::spawn(move || {
                let _ = sin.write_all(&data);
            });
        }
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let prefix = self.log_prefix.clone().unwrap_or_default();
        let err_thread = child
            .stderr
            .take()
            .map(|e| spawn_line_pump(e, prefix.clone(), tail.clone(), None));
        let mut stdout = Vec::new();
        let kept = self.keep_stdout.then(|| Arc::new(Mutex::new(Vec::new())));
        let out_thread = match (mode, child.stdout.take()) {
            (OutMode::Log, Some(o)) => Some(spawn_line_pump(o, prefix, tail.clone(), kept.clone())),
            (OutMode::Capture, Some(mut o)) => {
                o.read_to_end(&mut stdout).map_err(|e| CmdError::Io {
                    what: self.what.clone(),
                    source: e,
                })?;
                None
            }
            _ => None,
        };
        let status = self.wait(&mut child, start)?;
        // A grandchild in another session (dpkg under apt's pty) can outlive
        // the child and hold its pipes open; after an interrupt, do not wait
        // for it to close them: teardown kills it.
        if !interrupt::requested() || self.teardown {
            for t in [err_thread, out_thread].into_iter().flatten() {
                let _ = t.join();
            }
        }
        if let Some(k) = kept {
            stdout = std::mem::take(&mut *k.lock().unwrap());
        }
        let elapsed = start.elapsed();
        if interrupt::requested() && !status.success() && !self.teardown {
            return Err(CmdError::Interrupted { what: self.what });
        }
        if !status.success() {
            let tail = tail.lock().unwrap().iter().cloned().collect::<Vec<_>>();
            return Err(CmdError::Failed {
                what: self.what.clone(),
                cmdline: self.cmdline(),
                status: describe_status(&status),
                code: status.code(),
                tail: tail.join("\n"),
            });
        }
        Ok(Output { stdout, elapsed })
    }

    /// Waits for the child, enforcing the timeout by killing its process group.
    fn wait(
        &self,
        child: &mut Child,
        start: Instant,
    ) -> Result<std::process::ExitStatus, CmdError> {
        let Some(limit) = self.timeout else {
            return child.wait().map_err(|e| CmdError::Io {
                what: self.what.clone(),
                source: e,
            });
        };
        loop {
            if let Some(st) = child.try_wait().map_err(|e| CmdError::Io {
                what: self.what.clone(),
                source: e,
            })? {
                return Ok(st);
            }
            if start.elapsed() > limit {
                interrupt::kill_group(child.id() as i32);
                let _ = child.wait();
                return Err(CmdError::Timeout {
                    what: self.what.clone(),
                    secs: limit.as_secs(),
                    tail: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Reads lines from a child's pipe into the log and a bounded tail buffer.
fn spawn_line_pump<R: Read + Send + 'static>(
    r: R,
    prefix: String,
    tail: Arc<Mutex<VecDeque<String>>>,
    keep: Option<Arc<Mutex<Vec<u8>>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(n) = reader.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            if let Some(k) = &keep {
                k.lock().unwrap().extend_from_slice(&buf);
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            buf.clear();
            log::output(&prefix, &line);
            let mut t = tail.lock().unwrap();
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    })
}

fn describe_status(st: &std::process::ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".into(),
    }
}

/// For a program that is not installed, names the Debian package to install.
fn missing_tool_hint(program: &OsStr, e: &std::io::Error) -> String {
    if e.kind() != std::io::ErrorKind::NotFound {
        return String::new();
    }
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match super::tools::package_for(&name) {
        Some(pkg) => format!(" (install it: apt-get install {pkg})"),
        None => " (is it installed and on PATH?)".into(),
    }
}

/// Quotes a word for a POSIX shell, only when needed.
pub fn shell_quote(s: &OsStr) -> String {
    shell_escape::unix::escape(s.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_captures_stdout() {
        let out = Cmd::new("echo", "sh")
            .args(["-c", "echo hello; echo err >&2"])
            .read()
            .unwrap();
        assert_eq!(out, "hello");
    }

    #[test]
    fn failure_carries_tail_and_code() {
        let err = Cmd::new("failing step", "sh")
            .args(["-c", "echo one; echo two >&2; exit 3"])
            .run()
            .unwrap_err();
        assert_eq!(err.exit_code(), Some(3));
        let msg = err.to_string();
        assert!(msg.contains("failing step"), "{msg}");
        assert!(msg.contains("exited with code 3"), "{msg}");
        assert!(msg.contains("two"), "{msg}");
    }

    #[test]
    fn missing_program_names_package() {
        let err = Cmd::new("formatting", "mkfs.definitely-not-here")
            .run()
            .unwrap_err();
        assert!(err.to_string().contains("could not start"), "{err}");
    }

    #[test]
    fn timeout_kills() {
        let err = Cmd::new("sleeping", "sleep")
            .arg("30")
            .timeout(Duration::from_millis(300))
            .run()
            .unwrap_err();
        assert!(matches!(err, CmdError::Timeout { .. }));
    }

    #[test]
    fn stdin_is_fed() {
        let out = Cmd::new("cat", "cat").stdin_bytes("abc").read().unwrap();
        assert_eq!(out, "abc");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(OsStr::new("a b")), "'a b'");
        assert_eq!(shell_quote(OsStr::new("ab")), "ab");
    }
}
