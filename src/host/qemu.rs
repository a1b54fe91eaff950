//! qemu as a long-running child for boot tests: its serial console on pipes,
//! and the guarantee that it stops on every path out of this program.
//!
//! - `Drop` stops qemu and its process group (SIGTERM, then SIGKILL after 5 s);
//! - PDEATHSIG kills it if this process dies, even by SIGKILL;
//! - it is registered with [`interrupt`], so SIGINT/SIGTERM stop it at once.
//!
//! PDEATHSIG fires when the *thread* that spawned the child exits, so spawn
//! qemu from a thread that outlives it (the main thread does).
//!
//! The console protocol (expect, login, markers) is pure and lives in
//! `crate::boot::console`; this file only moves bytes and signals.

// Spawning and signalling qemu need libc calls (see host/runner.rs).
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::interrupt;
use super::runner::shell_quote;
use crate::log;

/// How long qemu gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Where qemu's stderr goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stderr {
    /// Into the console stream, as a terminal would show it: qemu's own
    /// errors (an assertion, "KVM internal error") then appear in the
    /// console log and its tail.
    Merged,
    /// Kept apart (for the KVM probe, whose output is parsed byte by byte):
    /// read it with [`Qemu::stderr_text`].
    Apart,
}

/// What one wait on the console gave.
#[derive(Debug)]
pub enum Recv {
    /// Bytes, stamped when they were read.
    Data(Instant, Vec<u8>),
    /// Nothing within the wait.
    Idle,
    /// qemu exited and everything it wrote has been delivered.
    Exited(ExitStatus),
    /// SIGINT, SIGTERM or SIGHUP arrived (the signal number).
    Interrupted(i32),
}

/// A running qemu.
pub struct Qemu {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    stderr: Option<Arc<Mutex<Vec<u8>>>>,
    status: Option<ExitStatus>,
    _registered: interrupt::ChildGuard,
}

impl Qemu {
    /// Starts `program args` with piped stdin and stdout (the serial console
    /// when qemu runs with `-serial stdio`), in its own process group.
    pub fn spawn(program: &Path, args: &[OsString], stderr: Stderr) -> std::io::Result<Qemu> {
        let line = std::iter::once(program.as_os_str())
            .chain(args.iter().map(|a| a.as_os_str()))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ");
        log::command(&line);
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::piped());
        let (reader, writer) = std::io::pipe()?;
        match stderr {
            Stderr::Merged => {
                cmd.stdout(writer.try_clone()?).stderr(writer);
            }
            Stderr::Apart => {
                cmd.stdout(writer).stderr(Stdio::piped());
            }
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        // The Command holds our copies of the pipe's write end: drop them, or
        // the reader never sees end-of-file when qemu exits.
        drop(cmd);
        let registered = interrupt::ChildGuard::register(child.id() as i32);
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().map(|mut e| {
            let kept = Arc::new(Mutex::new(Vec::new()));
            let k = kept.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = e.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    k.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            kept
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut buf = [0u8; 65536];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Qemu {
            child,
            stdin,
            rx,
            stderr,
            status: None,
            _registered: registered,
        })
    }

    /// Waits up to `timeout` for console output.
    pub fn recv(&mut self, timeout: Duration) -> Recv {
        if let Some(sig) = interrupted() {
            return Recv::Interrupted(sig);
        }
        match self.recv_inner(timeout) {
            // The signal handler stops qemu itself: its exit is the interrupt.
            Recv::Exited(_) if interrupted().is_some() => {
                Recv::Interrupted(interrupted().unwrap_or(libc::SIGTERM))
            }
            r => r,
        }
    }

    fn recv_inner(&mut self, timeout: Duration) -> Recv {
        match self.rx.recv_timeout(timeout) {
            Ok((at, data)) => Recv::Data(at, data),
            Err(RecvTimeoutError::Disconnected) => match self.wait_briefly() {
                Some(st) => Recv::Exited(st),
                // The pipe closed but qemu lives on (it closed its stdout?):
                // nothing more can come; treat it as silence.
                None => {
                    std::thread::sleep(timeout);
                    Recv::Idle
                }
            },
            Err(RecvTimeoutError::Timeout) => {
                if let Some(sig) = interrupted() {
                    return Recv::Interrupted(sig);
                }
                match self.child.try_wait() {
                    Ok(Some(st)) => {
                        self.status = Some(st);
                        // Exited: deliver what is still in the pipe first.
                        match self.rx.recv_timeout(Duration::from_millis(200)) {
                            Ok((at, data)) => Recv::Data(at, data),
                            Err(_) => Recv::Exited(st),
                        }
                    }
                    _ => Recv::Idle,
                }
            }
        }
    }

    /// Types `data` on the serial console.
    pub fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("qemu's stdin is closed"))?;
        stdin.write_all(data)?;
        stdin.flush()
    }

    /// What qemu wrote to stderr so far (with [`Stderr::Apart`]).
    pub fn stderr_text(&self) -> String {
        self.stderr
            .as_ref()
            .map(|s| String::from_utf8_lossy(&s.lock().unwrap()).into_owned())
            .unwrap_or_default()
    }

    /// Stops qemu (if it still runs) and returns how it ended.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(st)) = self.child.try_wait()
        {
            self.status = Some(st);
        }
        if self.status.is_some() {
            return self.status;
        }
        self.stdin = None;
        let pid = self.child.id() as i32;
        // SAFETY: signals to the process group of a child we have not reaped,
        // so the pid cannot have been reused.
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
        let until = Instant::now() + TERM_GRACE;
        while Instant::now() < until {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                return self.status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        self.status = self.child.wait().ok();
        self.status
    }

    /// Waits up to 2 s for qemu to exit once its output pipe has closed.
    fn wait_briefly(&mut self) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                return self.status;
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn interrupted() -> Option<i32> {
    interrupt::requested().then(|| interrupt::signal().unwrap_or(libc::SIGTERM))
}

/// "exited with status 1", "was killed by signal 6 (SIGABRT)".
pub fn describe_exit(st: &ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => {
            let name = nix::sys::signal::Signal::try_from(s)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            format!("was killed by signal {s}{name}")
        }
        _ => "ended".into(),
    }
}

/// Facts about this host that decide whether a KVM verdict still holds.
pub mod facts {
    use super::*;

    /// The kernel release (`uname -r`).
    pub fn kernel_release() -> String {
        read_trimmed("/proc/sys/kernel/osrelease")
    }

    /// This boot's id: a reboot can change what nested virtualisation allows.
    pub fn boot_id() -> String {
        read_trimmed("/proc/sys/kernel/random/boot_id")
    }

    /// The machine architecture of this host (`uname -m`).
    pub fn machine() -> &'static str {
        std::env::consts::ARCH
    }

    /// True when `dev` can be opened for reading and writing by us.
    pub fn accessible(dev: &Path) -> bool {
        nix::unistd::access(
            dev,
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        )
        .is_ok()
    }

    /// The first line of `qemu --version`.
    pub fn qemu_version(qemu: &Path) -> Result<String, crate::host::CmdError> {
        let out = crate::host::Cmd::new("asking qemu for its version", qemu)
            .arg("--version")
            .timeout(Duration::from_secs(20))
            .read()?;
        Ok(out.lines().next().unwrap_or_default().trim().to_string())
    }

    fn read_trimmed(p: &str) -> String {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_all(q: &mut Qemu) -> (Vec<u8>, ExitStatus) {
        let mut out = Vec::new();
        loop {
            match q.recv(Duration::from_millis(500)) {
                Recv::Data(_, d) => out.extend(d),
                Recv::Idle => {}
                Recv::Exited(st) => return (out, st),
                Recv::Interrupted(s) => panic!("signal {s}"),
            }
        }
    }

    #[test]
    fn merged_output_and_exit_status() {
        let mut q = Qemu::spawn(
            Path::new("sh"),
            &[
                "-c".into(),
                "read l; echo got $l; echo oops >&2; exit 3".into(),
            ],
            Stderr::Merged,
        )
        .unwrap();
        q.send(b"hi\n").unwrap();
        let (out, st) = recv_all(&mut q);
        assert_eq!(String::from_utf8_lossy(&out), "got hi\noops\n");
        assert_eq!(describe_exit(&st), "exited with status 3");
    }

    #[test]
    fn stderr_apart() {
        let mut q = Qemu::spawn(
            Path::new("sh"),
            &["-c".into(), "echo out; echo err >&2".into()],
            Stderr::Apart,
        )
        .unwrap();
        let (out, _) = recv_all(&mut q);
        assert_eq!(out, b"out\n");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(q.stderr_text(), "err\n");
    }

    #[test]
    fn drop_kills_the_group() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("pid");
        // A grandchild in the same process group must die too.
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let q = Qemu::spawn(
            Path::new("sh"),
            &["-c".into(), script.into()],
            Stderr::Merged,
        )
        .unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while !pidfile.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(q);
        let until = Instant::now() + Duration::from_secs(5);
        // The grandchild is reparented and reaped by init (or a subreaper);
        // wait until it is gone or a zombie.
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(
                Instant::now() < until,
                "grandchild {pid} still runs: {stat}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn signal_names() {
        let st = ExitStatus::from_raw(6);
        assert_eq!(describe_exit(&st), "was killed by signal 6 (SIGABRT)");
    }
}
