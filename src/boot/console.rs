//! The serial console protocol, pure: expect patterns in what the machine
//! printed, stop early on signs of a failed boot, log in, run commands between
//! markers, and keep the tail for the error report. It talks to a
//! [`Transport`]; qemu is one (`crate::host::qemu`), a recorded byte stream
//! in the tests is another. Time comes from the transport too, so the tests
//! run on a virtual clock.

use std::io::Write;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::bytes::Regex;
use serde::Serialize;

/// How many console lines a failure report shows.
pub const TAIL_LINES: usize = 50;

/// One wait on the console.
#[derive(Debug)]
pub enum Recv {
    Data(Vec<u8>),
    /// Nothing arrived within the wait.
    Idle,
    /// The machine is gone: how ("exited with status 1"), and the signal
    /// that killed it, if one did.
    Closed {
        how: String,
        signal: Option<i32>,
    },
    /// We were asked to stop (the signal number).
    Interrupted(i32),
}

/// Where the console's bytes come from and where typed input goes.
pub trait Transport {
    fn recv(&mut self, timeout: Duration) -> Recv;
    fn send(&mut self, data: &[u8]) -> std::io::Result<()>;
    /// The transport's clock (the real one, or a test's virtual one).
    fn now(&self) -> Instant;
}

/// What a fatal console line means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The guest failed (kernel panic, no root device, no bootable disk).
    Guest,
    /// The accelerator failed, not the guest: booting again under TCG can
    /// work. Seen here: OVMF under `-accel kvm` in this nested VM stops at
    /// once with "KVM internal error. Suberror: 1 ... emulation failure".
    Kvm,
}

/// Signs that the boot went wrong, reported right away instead of at the
/// timeout. Data: a new sign is a new row.
const FATAL: &[(&str, Cause)] = &[
    (r"Kernel panic - not syncing[^\r\n]*", Cause::Guest),
    (
        r"Gave up waiting for root (file system )?device[^\r\n]*",
        Cause::Guest,
    ),
    (r"ALERT! [^\r\n]* does not exist[^\r\n]*", Cause::Guest),
    (r"No bootable device[^\r\n]*", Cause::Guest),
    (r"error: no such device[^\r\n]*", Cause::Guest),
    (r"error: file `[^\r\n]*' not found[^\r\n]*", Cause::Guest),
    (r"KVM internal error[^\r\n]*", Cause::Kvm),
];

/// Lines that show the boot got past firmware and boot loader into Linux:
/// the kernel's banner (BIOS and UEFI through GRUB print "Linux version"
/// first; the EFI stub, when it runs alone, "EFI stub:"), or systemd.
/// "Welcome to GRUB!" must not count, so "Welcome to" alone is not here.
const KERNEL_PROGRESS: &[&str] = &[
    r"Linux version \d",
    r"Booting Linux",
    r"EFI stub: ",
    r"Run /init as init process",
    r"systemd\[1\]: ",
];

static FATAL_RES: LazyLock<Vec<(Regex, Cause)>> = LazyLock::new(|| {
    FATAL
        .iter()
        .map(|(p, c)| (Regex::new(p).expect("fatal pattern"), *c))
        .collect()
});
static PROGRESS_RES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    KERNEL_PROGRESS
        .iter()
        .map(|p| Regex::new(p).expect("progress pattern"))
        .collect()
});

fn re(p: &str) -> Regex {
    Regex::new(p).expect("console pattern")
}

pub static LOGIN_RE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)[\w.-]+ login: ?$"));
static PASSWORD_RE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)[Pp]assword: ?$"));
static BAD_LOGIN_RE: LazyLock<Regex> = LazyLock::new(|| re(r"Login incorrect"));
/// A shell prompt right after the password (no password: the same, a space optional).
static PROMPT_RE: LazyLock<Regex> = LazyLock::new(|| re(r"[$#] $"));
static EARLY_PROMPT_RE: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)[$#] ?$"));
static LOGGED_IN_RE: LazyLock<Regex> = LazyLock::new(|| re(r"LOGGEDIN"));
static CRLF_RE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"\r+\n").expect("line end pattern"));
static ANSI_RE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").expect("ansi pattern"));

/// Why waiting on the console ended without what we wanted.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("boot failed: {line}")]
    Fatal { line: String, cause: Cause },
    #[error("no {what} after {secs} s")]
    Timeout { what: String, secs: u64 },
    #[error("no {what} within the time limit (--timeout)")]
    Deadline { what: String },
    #[error(
        "no Linux kernel message on the console within {secs} s: the machine is stuck in firmware or boot loader"
    )]
    Stalled { secs: u64 },
    #[error("qemu {how}")]
    Closed { how: String, signal: Option<i32> },
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
    #[error("login as {user} was refused (Login incorrect)")]
    LoginRefused { user: String },
    #[error("the shell did not answer after logging in")]
    NoShell,
    #[error("typing on the console: {0}")]
    Io(#[from] std::io::Error),
}

/// One match of [`Console::expect`].
#[derive(Debug)]
pub struct Found {
    /// Which of the patterns matched.
    pub index: usize,
    pub start: usize,
    pub end: usize,
    /// The capture groups (group 0 is the whole match).
    pub groups: Vec<Option<Vec<u8>>>,
}

/// One `--run` command's result (the JSON format of `scripts/boot-test`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandResult {
    pub command: String,
    pub status: i32,
    pub output: String,
}

/// The console of one running machine: everything read is kept (and logged
/// to the sink); searches start at the mark, which each match moves on.
pub struct Console<T: Transport> {
    t: T,
    buf: Vec<u8>,
    mark: usize,
    sink: Option<Box<dyn Write>>,
    deadline: Instant,
    started: Instant,
    watchdog: Option<(Instant, Duration)>,
    kernel_at: Option<Instant>,
    progress_from: usize,
}

impl<T: Transport> Console<T> {
    /// A console that gives up on everything at `deadline`.
    pub fn new(t: T, deadline: Instant, sink: Option<Box<dyn Write>>) -> Self {
        let started = t.now();
        Console {
            t,
            buf: Vec::new(),
            mark: 0,
            sink,
            deadline,
            started,
            watchdog: None,
            kernel_at: None,
            progress_from: 0,
        }
    }

    /// From now on, waits fail with [`ConsoleError::Stalled`] if no Linux
    /// kernel message has appeared `limit` after the console started.
    pub fn watch_for_kernel(&mut self, limit: Duration) {
        self.watchdog = Some((self.started + limit, limit));
    }

    /// Seconds from the console's start to the first Linux kernel message.
    pub fn kernel_seconds(&self) -> Option<f64> {
        self.kernel_at
            .map(|t| t.duration_since(self.started).as_secs_f64())
    }

    /// Stops the watchdog (once the login prompt is there, the boot is past
    /// the point where KVM can hang).
    pub fn stop_watching(&mut self) {
        self.watchdog = None;
    }

    /// Seconds since the console started.
    pub fn elapsed(&self) -> f64 {
        self.t.now().duration_since(self.started).as_secs_f64()
    }

    pub fn transport(&self) -> &T {
        &self.t
    }

    /// Everything received so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Where the next search starts.
    pub fn mark(&self) -> usize {
        self.mark
    }

    /// Types `text` on the console.
    pub fn send(&mut self, text: &str) -> Result<(), ConsoleError> {
        Ok(self.t.send(text.as_bytes())?)
    }

    /// Waits for the earliest match of any of `patterns` after the mark, for
    /// at most `timeout` (and never past the deadline), and moves the mark
    /// past it. A fatal line after the mark ends the wait first.
    pub fn expect(
        &mut self,
        patterns: &[&Regex],
        timeout: Duration,
        what: &str,
    ) -> Result<Found, ConsoleError> {
        let until = self.deadline.min(self.t.now() + timeout);
        let mut fresh = true;
        loop {
            if fresh {
                fresh = false;
                self.note_progress();
                if let Some(e) = self.fatal(true) {
                    return Err(e);
                }
                if let Some(f) = self.search(patterns) {
                    self.mark = f.end;
                    return Ok(f);
                }
            }
            let now = self.t.now();
            if let Some((by, limit)) = self.watchdog
                && self.kernel_at.is_none()
                && now >= by
            {
                return Err(ConsoleError::Stalled {
                    secs: limit.as_secs(),
                });
            }
            if now >= until {
                return Err(if until >= self.deadline {
                    ConsoleError::Deadline { what: what.into() }
                } else {
                    ConsoleError::Timeout {
                        what: what.into(),
                        secs: timeout.as_secs(),
                    }
                });
            }
            let mut wake = until;
            if let Some((by, _)) = self.watchdog
                && self.kernel_at.is_none()
            {
                wake = wake.min(by);
            }
            let wait = wake
                .saturating_duration_since(now)
                .min(Duration::from_millis(500));
            match self.t.recv(wait) {
                Recv::Data(d) => {
                    if let Some(s) = self.sink.as_mut() {
                        // The log is a convenience; a full disk must not fail the boot.
                        let _ = s.write_all(&d).and_then(|()| s.flush());
                    }
                    self.buf.extend_from_slice(&d);
                    fresh = true;
                }
                Recv::Idle => {
                    // A quiet console: a fatal line without its line end is
                    // all there will be.
                    if let Some(e) = self.fatal(false) {
                        return Err(e);
                    }
                }
                Recv::Closed { how, signal } => {
                    return Err(ConsoleError::Closed { how, signal });
                }
                Recv::Interrupted(sig) => return Err(ConsoleError::Interrupted(sig)),
            }
        }
    }

    /// The first fatal line after the mark. With `complete`, only a line
    /// whose end has arrived: the rest of it can still be on its way.
    fn fatal(&self, complete: bool) -> Option<ConsoleError> {
        let hay = &self.buf[self.mark..];
        FATAL_RES
            .iter()
            .filter_map(|(r, c)| r.find(hay).map(|m| (m, *c)))
            .filter(|(m, _)| !complete || m.end() < hay.len())
            .map(|(m, c)| (m.start(), m.as_bytes(), c))
            .min_by_key(|(start, _, _)| *start)
            .map(|(_, line, cause)| ConsoleError::Fatal {
                line: String::from_utf8_lossy(line).trim().to_string(),
                cause,
            })
    }

    fn search(&self, patterns: &[&Regex]) -> Option<Found> {
        let hay = &self.buf[self.mark..];
        patterns
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.captures(hay).map(|c| (i, c)))
            .min_by_key(|(_, c)| c.get(0).map(|m| m.start()))
            .map(|(index, c)| {
                let m = c.get(0).expect("group 0");
                Found {
                    index,
                    start: self.mark + m.start(),
                    end: self.mark + m.end(),
                    groups: c.iter().map(|g| g.map(|g| g.as_bytes().to_vec())).collect(),
                }
            })
    }

    fn note_progress(&mut self) {
        if self.kernel_at.is_some() {
            return;
        }
        let hay = &self.buf[self.progress_from..];
        if PROGRESS_RES.iter().any(|r| r.is_match(hay)) {
            self.kernel_at = Some(self.t.now());
        } else {
            // Keep a little overlap: a marker can straddle two reads.
            self.progress_from = self.buf.len().saturating_sub(64);
        }
    }

    /// The last `n` console lines, escape sequences removed.
    pub fn tail(&self, n: usize) -> Vec<String> {
        tail_lines(&self.buf, n)
    }

    /// Logs in on the serial console as `user` and checks that a shell
    /// answers; each wait is bounded by `timeout`.
    pub fn login(
        &mut self,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(), ConsoleError> {
        self.send("\n")?;
        self.expect(&[&LOGIN_RE], timeout, "login prompt after a newline")?;
        self.send(&format!("{user}\n"))?;
        let f = self.expect(
            &[&PASSWORD_RE, &EARLY_PROMPT_RE],
            timeout,
            "password prompt",
        )?;
        if f.index == 0 {
            self.send(&format!("{password}\n"))?;
        }
        // Input typed before the shell is ready can be flushed, so wait for
        // a prompt first. A marker printed by the shell then proves the
        // login worked; the command as echoed does not contain it, thanks to
        // the quotes.
        let f = self.expect(
            &[&PROMPT_RE, &BAD_LOGIN_RE],
            timeout,
            "shell prompt after logging in",
        )?;
        if f.index == 1 {
            return Err(ConsoleError::LoginRefused { user: user.into() });
        }
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            self.send(
                "stty -echo cols 1000 2>/dev/null; export TERM=dumb PAGER=cat SYSTEMD_PAGER=; echo LOGGED''IN\n",
            )?;
            match self.expect(
                &[&LOGGED_IN_RE],
                timeout.min(Duration::from_secs(10)),
                "shell",
            ) {
                Ok(_) => return Ok(()),
                Err(ConsoleError::Timeout { .. }) if attempt < ATTEMPTS => continue,
                Err(ConsoleError::Timeout { .. } | ConsoleError::Deadline { .. }) => {
                    return Err(ConsoleError::NoShell);
                }
                Err(e) => return Err(e),
            }
        }
        Err(ConsoleError::NoShell)
    }

    /// Runs `cmd` (the `n`th) in the logged-in shell and returns its output
    /// and exit status, found between markers the shell prints.
    pub fn run_command(
        &mut self,
        n: usize,
        cmd: &str,
        timeout: Duration,
    ) -> Result<CommandResult, ConsoleError> {
        let (begin, end) = (format!("DIBBEGIN{n}"), format!("DIBEND{n}"));
        // As typed, the markers are split by '' so that the echo of the
        // command line never matches them. One line, and stdin from
        // /dev/null: a command that reads the terminal (sudo relays it
        // through a pty) must not eat what follows.
        let (begin_typed, end_typed) = (quoted(&begin), quoted(&end));
        self.send(&format!(
            "echo {begin_typed}; {{ {cmd}\n}} </dev/null 2>&1; echo {end_typed}:$?\n"
        ))?;
        let begin_re = re(&format!(r"{begin}\r?\n"));
        let end_re = re(&format!(r"{end}:(\d+)"));
        self.expect(&[&begin_re], timeout, &format!("start of `{cmd}`"))?;
        let start = self.mark;
        let f = self.expect(&[&end_re], timeout, &format!("end of `{cmd}`"))?;
        let status = f.groups[1]
            .as_deref()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1);
        let raw = String::from_utf8_lossy(&self.buf[start..f.start]);
        let text = raw.replace("\r\n", "\n").replace('\r', "");
        // Drop the echo of the end marker's command line, when the tty echoes.
        let output = text
            .split('\n')
            .filter(|l| !l.contains(&end_typed))
            .collect::<Vec<_>>()
            .join("\n")
            .trim_matches('\n')
            .to_string();
        Ok(CommandResult {
            command: cmd.into(),
            status,
            output,
        })
    }
}

/// "DIBEND1" as typed: "DIB''END1".
fn quoted(marker: &str) -> String {
    format!("{}''{}", &marker[..3], &marker[3..])
}

/// The last `n` lines of a console byte stream, with CR LF and lone CR as
/// line ends and terminal escape sequences removed.
pub fn tail_lines(buf: &[u8], n: usize) -> Vec<String> {
    // The kernel and getty end lines with "\r\r\n" as often as "\r\n".
    let text = CRLF_RE
        .replace_all(&String::from_utf8_lossy(buf), "\n")
        .replace('\r', "\n");
    let mut lines: Vec<String> = text
        .split('\n')
        .map(|l| ANSI_RE.replace_all(l, "").into_owned())
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// A qemu line in the console that tells why qemu itself died (an assertion,
/// an abort), searched from the end.
pub fn qemu_crash_line(tail: &[String]) -> Option<String> {
    tail.iter()
        .rev()
        .find(|l| l.contains("qemu-system"))
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const BIOS_TCG: &[u8] = include_bytes!("../../tests/fixtures/boot/bios-tcg.log");
    const UEFI_TCG: &[u8] = include_bytes!("../../tests/fixtures/boot/uefi-tcg.log");
    const BIOS_KVM: &[u8] = include_bytes!("../../tests/fixtures/boot/bios-kvm-grub-stall.log");
    const UEFI_KVM: &[u8] = include_bytes!("../../tests/fixtures/boot/uefi-kvm-internal-error.log");
    const SESSION: &[u8] = include_bytes!("../../tests/fixtures/boot/bios-session.log");

    type Responder = Box<dyn FnMut(&[u8]) -> Vec<u8>>;

    /// Replays chunks on a virtual clock; what is typed goes to `responder`,
    /// whose answer is delivered next. Waiting for nothing advances the clock.
    struct Replay {
        chunks: VecDeque<Vec<u8>>,
        responder: Responder,
        sent: Vec<u8>,
        clock: Instant,
        close_after: Option<(String, Option<i32>)>,
        /// Virtual time each chunk takes to arrive.
        step: Duration,
    }

    impl Replay {
        fn new(stream: &[u8], chunk: usize) -> Self {
            Replay {
                chunks: stream.chunks(chunk).map(<[u8]>::to_vec).collect(),
                responder: Box::new(|_| Vec::new()),
                sent: Vec::new(),
                clock: Instant::now(),
                close_after: None,
                step: Duration::from_millis(10),
            }
        }
    }

    impl Transport for Replay {
        fn recv(&mut self, timeout: Duration) -> Recv {
            if let Some(c) = self.chunks.pop_front() {
                self.clock += self.step.min(timeout);
                return Recv::Data(c);
            }
            if let Some((how, signal)) = self.close_after.take() {
                return Recv::Closed { how, signal };
            }
            self.clock += timeout;
            Recv::Idle
        }
        fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
            self.sent.extend_from_slice(data);
            let answer = (self.responder)(data);
            if !answer.is_empty() {
                self.chunks.push_back(answer);
            }
            Ok(())
        }
        fn now(&self) -> Instant {
            self.clock
        }
    }

    fn console(t: Replay, limit: Duration) -> Console<Replay> {
        let deadline = t.now() + limit;
        Console::new(t, deadline, None)
    }

    #[test]
    fn recorded_bios_and_uefi_boots_reach_login_after_the_kernel() {
        for (name, log) in [("bios", BIOS_TCG), ("uefi", UEFI_TCG)] {
            // Small chunks: markers straddle reads.
            let mut c = console(Replay::new(log, 37), Duration::from_secs(300));
            c.watch_for_kernel(Duration::from_secs(60));
            let f = c
                .expect(&[&LOGIN_RE], Duration::from_secs(300), "login prompt")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(c.bytes()[f.start..f.end].ends_with(b"login: "), "{name}");
            assert!(
                c.kernel_seconds().is_some(),
                "{name}: no kernel message seen"
            );
        }
    }

    #[test]
    fn grub_stalled_under_kvm_trips_the_watchdog() {
        let mut c = console(Replay::new(BIOS_KVM, 512), Duration::from_secs(300));
        c.watch_for_kernel(Duration::from_secs(60));
        let e = c
            .expect(&[&LOGIN_RE], Duration::from_secs(300), "login prompt")
            .unwrap_err();
        assert!(matches!(e, ConsoleError::Stalled { secs: 60 }), "{e}");
        let elapsed = c.elapsed();
        assert!((60.0..61.0).contains(&elapsed), "tripped after {elapsed} s");
    }

    #[test]
    fn without_a_watchdog_the_stall_runs_into_the_deadline() {
        let mut c = console(Replay::new(BIOS_KVM, 512), Duration::from_secs(100));
        let e = c
            .expect(&[&LOGIN_RE], Duration::from_secs(300), "login prompt")
            .unwrap_err();
        assert!(matches!(e, ConsoleError::Deadline { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "no login prompt within the time limit (--timeout)"
        );
        assert!(c.tail(TAIL_LINES).iter().any(|l| l.contains("GNU GRUB")));
    }

    #[test]
    fn kvm_internal_error_is_fatal_and_blames_kvm() {
        let mut c = console(Replay::new(UEFI_KVM, 100), Duration::from_secs(300));
        let e = c
            .expect(&[&LOGIN_RE], Duration::from_secs(300), "login prompt")
            .unwrap_err();
        match e {
            ConsoleError::Fatal { line, cause } => {
                assert_eq!(cause, Cause::Kvm);
                assert_eq!(line, "KVM internal error. Suberror: 1");
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn kernel_panic_is_fatal_once_its_line_is_complete() {
        // 16-byte reads cut the panic line; the whole line is reported.
        let log = b"[    1.0] VFS: Unable to mount root fs\r\n[    1.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n[    1.2] CPU: 0";
        let mut c = console(Replay::new(log, 16), Duration::from_secs(300));
        let e = c
            .expect(&[&LOGIN_RE], Duration::from_secs(300), "login prompt")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "boot failed: Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
        );
        // A last line without its end counts once the console is quiet.
        let mut c = console(
            Replay::new(b"No bootable device.", 4),
            Duration::from_secs(300),
        );
        let e = c
            .expect(&[&LOGIN_RE], Duration::from_secs(300), "login prompt")
            .unwrap_err();
        assert_eq!(e.to_string(), "boot failed: No bootable device.");
    }

    #[test]
    fn qemu_exit_is_reported_after_its_last_words() {
        let mut t = Replay::new(
            b"qemu-system-x86_64: ../accel/tcg/cputlb.c:1500: iotlb_to_section: Assertion failed.\n",
            1000,
        );
        t.close_after = Some(("was killed by signal 6 (SIGABRT)".into(), Some(6)));
        let mut c = console(t, Duration::from_secs(300));
        let e = c
            .expect(&[&LOGIN_RE], Duration::from_secs(300), "login prompt")
            .unwrap_err();
        assert_eq!(e.to_string(), "qemu was killed by signal 6 (SIGABRT)");
        assert_eq!(
            qemu_crash_line(&c.tail(TAIL_LINES)).as_deref(),
            Some(
                "qemu-system-x86_64: ../accel/tcg/cputlb.c:1500: iotlb_to_section: Assertion failed."
            )
        );
    }

    #[test]
    fn a_short_wait_times_out_before_the_deadline() {
        let mut c = console(Replay::new(b"", 1), Duration::from_secs(300));
        let e = c
            .expect(&[&LOGIN_RE], Duration::from_secs(10), "login prompt")
            .unwrap_err();
        assert_eq!(e.to_string(), "no login prompt after 10 s");
    }

    #[test]
    fn the_earliest_of_several_patterns_wins_and_moves_the_mark() {
        let mut c = console(Replay::new(b"a# b$ c# ", 100), Duration::from_secs(5));
        let dollar = re(r"\$ ");
        let hash = re(r"# ");
        let f = c
            .expect(&[&dollar, &hash], Duration::from_secs(1), "x")
            .unwrap();
        assert_eq!((f.index, f.start), (1, 1));
        let f = c
            .expect(&[&dollar, &hash], Duration::from_secs(1), "x")
            .unwrap();
        assert_eq!((f.index, f.start), (0, 4));
        assert_eq!(c.mark(), 6);
    }

    /// The recorded session (tests/fixtures/boot/bios-session.log) split at
    /// what was typed: each typed line gets the next piece as its answer.
    fn session_replay() -> Replay {
        let text = SESSION.to_vec();
        let cut = |from: usize, needle: &[u8]| -> usize {
            from + text[from..]
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap_or_else(|| panic!("{} not in the session", String::from_utf8_lossy(needle)))
                + needle.len()
        };
        // Boot to the first prompt; then the answers to "\n", the user name,
        // the password, the stty line and each command.
        let mut cuts = vec![cut(0, b"login: ")];
        cuts.push(cut(cuts[0], b"login: "));
        cuts.push(cut(cuts[1], b"Password: "));
        cuts.push(cut(cuts[2], b"$ "));
        cuts.push(cut(cuts[3], b"LOGGEDIN"));
        cuts.push(cut(cuts[4], b"DIBEND1:0"));
        let mut pieces: VecDeque<Vec<u8>> =
            cuts.windows(2).map(|w| text[w[0]..w[1]].to_vec()).collect();
        pieces.push_back(text[cuts[cuts.len() - 1]..].to_vec());
        let mut t = Replay::new(&text[..cuts[0]], 4096);
        t.responder = Box::new(move |_| pieces.pop_front().unwrap_or_default());
        t
    }

    #[test]
    fn login_and_commands_on_a_recorded_session() {
        let mut c = console(session_replay(), Duration::from_secs(300));
        c.expect(&[&LOGIN_RE], Duration::from_secs(300), "login prompt")
            .unwrap();
        c.login("devuser", "secret", Duration::from_secs(60))
            .unwrap();
        let r = c
            .run_command(1, "findmnt -n -o SOURCE,FSTYPE /", Duration::from_secs(60))
            .unwrap();
        assert_eq!(r.status, 0);
        assert_eq!(r.output, "/dev/vda1 ext4");
        let r = c
            .run_command(2, "sudo -n cat /nonexistent", Duration::from_secs(60))
            .unwrap();
        assert_eq!(r.status, 1);
        assert_eq!(
            r.output,
            "sudo: unable to resolve host debian: Temporary failure in name resolution\n\
             cat: /nonexistent: No such file or directory"
        );
        let typed = String::from_utf8_lossy(&c.transport().sent).into_owned();
        assert!(
            typed.starts_with("\ndevuser\nsecret\nstty -echo"),
            "{typed}"
        );
        assert!(typed.contains("echo DIB''BEGIN1; { findmnt"), "{typed}");
    }

    #[test]
    fn a_refused_login_says_so() {
        let mut t = Replay::new(b"debian login: ", 100);
        let mut answers: VecDeque<&[u8]> = VecDeque::from([
            &b"\r\ndebian login: "[..],
            b"devuser\r\nPassword: ",
            b"\r\nLogin incorrect\r\ndebian login: ",
        ]);
        t.responder = Box::new(move |_| answers.pop_front().unwrap_or_default().to_vec());
        let mut c = console(t, Duration::from_secs(300));
        c.expect(&[&LOGIN_RE], Duration::from_secs(10), "login prompt")
            .unwrap();
        let e = c
            .login("devuser", "wrong", Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "login as devuser was refused (Login incorrect)"
        );
    }

    #[test]
    fn tail_strips_escapes_and_splits_carriage_returns() {
        let lines = tail_lines(b"one\r\n\x1b[0;1mtwo\x1b[0m\rthree\r\r\nfour", 3);
        assert_eq!(lines, ["two", "three", "four"]);
        let tail = tail_lines(SESSION, 2);
        assert_eq!(
            tail,
            ["cat: /nonexistent: No such file or directory", "DIBEND2:1"]
        );
        assert!(tail_lines(b"", 50).is_empty());
    }

    #[test]
    fn markers_as_typed_do_not_match_themselves() {
        assert_eq!(quoted("DIBEND12"), "DIB''END12");
        assert!(!re(r"DIBEND1:(\d+)").is_match(b"echo DIB''END1:$?"));
    }
}
