//! Boot tests: boot a disk image in qemu with a serial console and no
//! network, wait for the login prompt, optionally log in and run commands.
//!
//! The image itself is never written: qemu runs on a temporary qcow2 overlay
//! (enlarged first with `resize`). x86_64 (and i386) images boot in a q35
//! machine (BIOS, or UEFI with OVMF), aarch64 images in a virt machine with
//! AAVMF, armhf images in a virt machine with the 32-bit AAVMF, ppc64el
//! images in a pseries machine with its SLOF, and Raspberry Pi 3 cards in
//! qemu's raspi3b machine ([`raspi`]). Every path out
//! stops qemu (`crate::host::qemu`); `timeout` bounds the whole run.
//!
//! - [`console`]: the console protocol, pure and tested on recorded streams;
//! - [`accel`]: `--accel auto` (the KVM probe, the verdict cache);
//! - this file: options, the qemu command line, and the boot attempts
//!   (KVM stopped by the watchdog and booted again under TCG; TCG booted
//!   again with one thread when qemu itself aborts).
//!
//! Call [`run`] (progress through the build log) or [`run_with`] (your own
//! [`Reporter`]).

pub mod accel;
pub mod console;
pub mod raspi;

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::host::qemu::{Qemu, Stderr, describe_exit, facts};
use crate::host::{Cmd, CmdError, interrupt, tools};
use crate::log;
use accel::{Cache, Cached, HostKey, Source, Verdict};
pub use console::CommandResult;
use console::{Cause, Console, ConsoleError, LOGIN_RE, TAIL_LINES};

/// The default limit for the whole run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Under KVM chosen by `--accel auto`, the boot must show a Linux kernel
/// message within this time, or it is stopped and done again under TCG.
/// Measured here under TCG (the slow case; KVM is faster when it works):
/// the first kernel line came 16.1 s after qemu started from BIOS and GRUB,
/// 14.1 s from OVMF and GRUB (GRUB's 5 s menu included). 60 s leaves room
/// for a loaded host and a longer boot-loader timeout.
pub const KVM_WATCHDOG: Duration = Duration::from_secs(60);

/// Each wait while logging in and running a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `--accel auto` keeps its verdicts (a tmpfs: emptied at each boot).
pub const DEFAULT_CACHE_DIR: &str = "/run/dib-create";

/// The guest's qemu-system: the `qemu_system` name of `crate::arch`'s
/// table (i386 images boot in x86_64's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
    /// 32-bit Arm (armhf), in a virt machine with the 32-bit AAVMF.
    Arm,
    /// 64-bit POWER (ppc64el), in a pseries machine with its SLOF firmware.
    Ppc64,
}

/// UEFI firmware: the code and (when there is one) the variable store to copy.
struct Firmware {
    arch: Arch,
    code: &'static str,
    vars: Option<&'static str>,
}

/// Searched in order. Data: a new location is a new row.
const FIRMWARE: &[Firmware] = &[
    Firmware {
        arch: Arch::X86_64,
        code: "/usr/share/OVMF/OVMF_CODE_4M.fd",
        vars: Some("/usr/share/OVMF/OVMF_VARS_4M.fd"),
    },
    Firmware {
        arch: Arch::X86_64,
        code: "/usr/share/OVMF/OVMF_CODE.fd",
        vars: Some("/usr/share/OVMF/OVMF_VARS.fd"),
    },
    Firmware {
        arch: Arch::X86_64,
        code: "/usr/share/qemu/OVMF_CODE.fd",
        vars: Some("/usr/share/qemu/OVMF_VARS.fd"),
    },
    Firmware {
        arch: Arch::Aarch64,
        code: "/usr/share/AAVMF/AAVMF_CODE.fd",
        vars: Some("/usr/share/AAVMF/AAVMF_VARS.fd"),
    },
    Firmware {
        arch: Arch::Aarch64,
        code: "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
        vars: None,
    },
    Firmware {
        arch: Arch::Arm,
        code: "/usr/share/AAVMF/AAVMF32_CODE.fd",
        vars: Some("/usr/share/AAVMF/AAVMF32_VARS.fd"),
    },
];

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Arm => "arm",
            Arch::Ppc64 => "ppc64",
        }
    }

    /// The guest for a `qemu-system-<name>` name.
    pub fn parse(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    pub const ALL: [Arch; 4] = [Arch::X86_64, Arch::Aarch64, Arch::Arm, Arch::Ppc64];

    /// `uname -m` of a host whose KVM runs this guest.
    fn host_machine(self) -> &'static str {
        match self {
            Arch::Ppc64 => "ppc64le",
            // KVM runs 32-bit Arm guests through qemu-system-aarch64 only.
            Arch::Arm => "armv7l",
            other => other.name(),
        }
    }

    /// Machines of this architecture have UEFI firmware that qemu can load.
    fn has_uefi(self) -> bool {
        self != Arch::Ppc64
    }

    /// Machines of this architecture boot through UEFI only.
    pub fn uefi_only(self) -> bool {
        matches!(self, Arch::Aarch64 | Arch::Arm)
    }

    /// `-M`: q35 for x86; virt for Arm, where the 32-bit firmware cannot
    /// reach PCI windows above 4 GiB (highmem off); pseries for POWER.
    fn machine(self) -> &'static str {
        match self {
            Arch::X86_64 => "q35",
            Arch::Aarch64 => "virt",
            Arch::Arm => "virt,highmem=off",
            Arch::Ppc64 => "pseries",
        }
    }

    /// `-cpu` under TCG: every feature qemu emulates, or the machine's own
    /// default where qemu has no `max` (pseries: the newest POWER).
    fn tcg_cpu(self) -> Option<&'static str> {
        match self {
            Arch::Ppc64 => None,
            _ => Some("max"),
        }
    }

    fn qemu(self) -> String {
        format!("qemu-system-{}", self.name())
    }

    fn firmware_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "ovmf",
            Arch::Aarch64 => "qemu-efi-aarch64",
            Arch::Arm => "qemu-efi-arm",
            // Never asked: Plan::resolve refuses --uefi for POWER.
            Arch::Ppc64 => "qemu-system-ppc",
        }
    }
}

/// The machine model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// The architecture's own (`Arch::machine`): q35, virt or pseries.
    Auto,
    /// A Raspberry Pi 3 B SD card (aarch64, TCG only).
    Raspi3b,
}

/// The accelerator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelRequest {
    /// KVM if it really works here (probed, cached, watched), else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// `--login USER:PASS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::str::FromStr for Login {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (user, password) = s.split_once(':').unwrap_or((s, ""));
        if user.is_empty() {
            return Err("expected USER:PASS".into());
        }
        Ok(Login {
            user: user.into(),
            password: password.into(),
        })
    }
}

/// What to boot and how.
#[derive(Clone, Debug)]
pub struct BootOptions {
    pub image: PathBuf,
    /// The limit for the whole run, KVM probe included.
    pub timeout: Duration,
    pub uefi: bool,
    pub arch: Arch,
    pub machine: Machine,
    pub accel: AccelRequest,
    pub login: Option<Login>,
    /// Enlarge the disk first (qemu-img's syntax: `+1G`).
    pub resize: Option<String>,
    /// Commands to run after logging in (needs `login`).
    pub run: Vec<String>,
    pub memory_mib: u32,
    pub smp: u32,
    /// Also keep the whole console log here.
    pub log: Option<PathBuf>,
    /// The device whose access decides whether KVM is tried at all.
    pub kvm_device: PathBuf,
    /// Where `--accel auto` caches its verdict; None: no cache.
    pub cache_dir: Option<PathBuf>,
    /// See [`KVM_WATCHDOG`].
    pub kvm_watchdog: Duration,
    /// A network card on qemu's user-mode network, where the guest reaches
    /// the host's loopback at [`HOST_FROM_GUEST`] (to fetch from a server a
    /// test started). Off: no network at all.
    pub net: bool,
}

/// The host's loopback as the guest sees it on qemu's user-mode network.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";
/// The guest's address there (what qemu's DHCP server would give it).
pub const GUEST_ADDRESS: &str = "10.0.2.15/24";

impl BootOptions {
    /// The defaults of `dib-boot-test IMAGE`.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        BootOptions {
            image: image.into(),
            timeout: DEFAULT_TIMEOUT,
            uefi: false,
            arch: Arch::X86_64,
            machine: Machine::Auto,
            accel: AccelRequest::Auto,
            login: None,
            resize: None,
            run: Vec::new(),
            memory_mib: 1024,
            smp: cpus.min(2),
            log: None,
            kvm_device: PathBuf::from("/dev/kvm"),
            cache_dir: Some(PathBuf::from(DEFAULT_CACHE_DIR)),
            kvm_watchdog: KVM_WATCHDOG,
            net: false,
        }
    }
}

/// The outcome, in the JSON format `scripts/boot-test` has always written
/// (`ok`, `login_seconds`, `commands`, `error`, `qemu_crash`), plus what
/// the accelerator choice did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BootResult {
    pub image: String,
    pub ok: bool,
    /// The accelerator of the boot that counted ("kvm", "tcg", "tcg,thread=single").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel_reason: Option<String>,
    /// Why a boot under KVM was stopped and done again under TCG.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kvm_fallback: Option<String>,
    /// qemu's own crash line, when it aborted and the boot was retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_crash: Option<String>,
    /// From qemu's start to the first Linux kernel message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_seconds: Option<f64>,
    /// From qemu's start to the login prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<CommandResult>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last console lines of a failed boot (not in the JSON).
    #[serde(skip)]
    pub console_tail: Vec<String>,
}

/// Why the test did not pass.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{}: no such file", .0.display())]
    NoImage(PathBuf),
    #[error("--run needs --login USER:PASS")]
    RunNeedsLogin,
    #[error("--machine raspi3b is emulated only (--accel tcg)")]
    RaspiKvm,
    #[error("{0}")]
    BadOption(String),
    #[error("{tool} is not installed (Debian: apt-get install {package})")]
    MissingTool { tool: String, package: String },
    #[error("no UEFI firmware for {arch} (Debian: apt-get install {package})")]
    NoFirmware {
        arch: &'static str,
        package: &'static str,
    },
    #[error("{0}")]
    Setup(#[from] CmdError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The machine failed the test; the result says how far it got.
    #[error("{}", .0.error.as_deref().unwrap_or("the boot test failed"))]
    Failed(Box<BootResult>),
}

impl BootError {
    /// Bad usage or a missing tool (exit status 2), as opposed to a machine
    /// that failed or an interrupted run (1).
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            BootError::Failed(_) | BootError::Setup(CmdError::Interrupted { .. })
        )
    }

    /// The result of a machine that failed.
    pub fn result(&self) -> Option<&BootResult> {
        match self {
            BootError::Failed(r) => Some(r),
            _ => None,
        }
    }
}

/// Where progress goes.
pub trait Reporter {
    /// A progress line ("accelerator tcg (...)", "login prompt after 37.4 s").
    fn note(&mut self, msg: &str);
    /// A `--run` command finished.
    fn command(&mut self, r: &CommandResult);
}

/// Progress into the build log (`crate::log`), for dib-create.
pub struct LogReporter;

impl Reporter for LogReporter {
    fn note(&mut self, msg: &str) {
        log::step(&format!("boot test: {msg}"));
    }
    fn command(&mut self, r: &CommandResult) {
        log::info(&format!("boot test: $ {}", r.command));
        for l in r.output.lines() {
            log::output("guest", l);
        }
        log::info(&format!("boot test: exit status {}", r.status));
    }
}

/// Boots `opts.image`, reporting progress to the build log. `Ok` means the
/// machine passed; [`BootError::Failed`] carries the result of one that did not.
pub fn run(opts: &BootOptions) -> Result<BootResult, BootError> {
    run_with(opts, &mut LogReporter)
}

/// [`run`] with progress going to `rep`.
pub fn run_with(opts: &BootOptions, rep: &mut dyn Reporter) -> Result<BootResult, BootError> {
    let plan = Plan::resolve(opts)?;
    let work = tempfile::Builder::new()
        .prefix("boot-test.")
        .tempdir()
        .map_err(|source| BootError::Io {
            what: "creating a work directory".into(),
            source,
        })?;
    let console_log = work.path().join("console.log");
    let mut result = BootResult {
        image: opts.image.display().to_string(),
        ..Default::default()
    };
    let mut session = Session {
        opts,
        plan: &plan,
        rep,
        work: work.path(),
        deadline: Instant::now() + opts.timeout,
        console_log: &console_log,
    };
    let outcome = session.run(&mut result);
    if let Some(dest) = &opts.log
        && console_log.exists()
        && let Err(e) = std::fs::copy(&console_log, dest)
    {
        rep.note(&format!(
            "could not keep the console log in {}: {e}",
            dest.display()
        ));
    }
    match outcome {
        Ok(()) => {
            result.ok = true;
            Ok(result)
        }
        Err(Stop::Failed(msg, tail)) => {
            result.error = Some(msg);
            result.console_tail = tail;
            Err(BootError::Failed(Box::new(result)))
        }
        Err(Stop::Setup(e)) => Err(e),
    }
}

/// The options checked, with the tools and firmware found.
struct Plan {
    image: PathBuf,
    arch: Arch,
    raspi: bool,
    uefi: bool,
    accel: AccelRequest,
    qemu: PathBuf,
    qemu_img: PathBuf,
    firmware: Option<(PathBuf, Option<PathBuf>)>,
}

impl Plan {
    fn resolve(opts: &BootOptions) -> Result<Plan, BootError> {
        if !opts.run.is_empty() && opts.login.is_none() {
            return Err(BootError::RunNeedsLogin);
        }
        if opts.timeout.is_zero() {
            return Err(BootError::BadOption("--timeout must be more than 0".into()));
        }
        if opts.memory_mib == 0 || opts.smp == 0 {
            return Err(BootError::BadOption(
                "--memory and --smp must be at least 1".into(),
            ));
        }
        if !opts.image.exists() {
            return Err(BootError::NoImage(opts.image.clone()));
        }
        let image = std::path::absolute(&opts.image).map_err(|source| BootError::Io {
            what: format!("resolving {}", opts.image.display()),
            source,
        })?;
        let raspi = opts.machine == Machine::Raspi3b;
        let (arch, accel, uefi) = if raspi {
            if opts.accel == AccelRequest::Kvm {
                return Err(BootError::RaspiKvm);
            }
            (Arch::Aarch64, AccelRequest::Tcg, false)
        } else {
            (opts.arch, opts.accel, opts.uefi || opts.arch.uefi_only())
        };
        if uefi && !arch.has_uefi() {
            return Err(BootError::BadOption(format!(
                "--uefi: {} machines boot with Open Firmware (SLOF), not UEFI; drop --uefi",
                arch.name()
            )));
        }
        let qemu = need(&arch.qemu())?;
        let qemu_img = need("qemu-img")?;
        if raspi {
            need("mcopy")?;
        }
        let firmware = if uefi {
            let fw = FIRMWARE
                .iter()
                .filter(|f| f.arch == arch)
                .find(|f| Path::new(f.code).exists())
                .ok_or(BootError::NoFirmware {
                    arch: arch.name(),
                    package: arch.firmware_package(),
                })?;
            Some((PathBuf::from(fw.code), fw.vars.map(PathBuf::from)))
        } else {
            None
        };
        Ok(Plan {
            image,
            arch,
            raspi,
            uefi,
            accel,
            qemu,
            qemu_img,
            firmware,
        })
    }
}

fn need(tool: &str) -> Result<PathBuf, BootError> {
    tools::find(tool).ok_or_else(|| BootError::MissingTool {
        tool: tool.into(),
        package: tools::package_for(tool).unwrap_or(tool).into(),
    })
}

/// The accelerator of one boot attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Accel {
    /// `cpu`: the model (None: qemu's default).
    Kvm { cpu: Option<String> },
    /// `single`: one TCG thread (after qemu aborted under several).
    Tcg { single: bool },
}

impl Accel {
    fn arg(&self) -> &'static str {
        match self {
            Accel::Kvm { .. } => "kvm",
            Accel::Tcg { single: false } => "tcg",
            Accel::Tcg { single: true } => "tcg,thread=single",
        }
    }
}

/// The accelerator chosen before booting.
struct Choice {
    accel: Accel,
    reason: String,
    /// Chosen by `--accel auto`: the boot is watched, and falls back to TCG.
    guarded: bool,
    /// The host state the verdict is about (for caching a later verdict).
    key: Option<HostKey>,
    /// A fresh verdict to cache (once the choice has been reported).
    fresh: Option<Verdict>,
}

/// The disk qemu boots.
enum Disk {
    Overlay(PathBuf),
    Card(raspi::Card),
}

/// Why a session stopped early.
enum Stop {
    /// The machine failed: the message and the console's tail.
    Failed(String, Vec<String>),
    Setup(BootError),
}

impl From<BootError> for Stop {
    fn from(e: BootError) -> Self {
        Stop::Setup(e)
    }
}

impl From<CmdError> for Stop {
    fn from(e: CmdError) -> Self {
        Stop::Setup(BootError::Setup(e))
    }
}

fn io_stop(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Stop {
    let what = what.into();
    move |source| Stop::Setup(BootError::Io { what, source })
}

/// qemu's serial console as a [`console::Transport`].
struct QemuConsole(Qemu);

impl console::Transport for QemuConsole {
    fn recv(&mut self, timeout: Duration) -> console::Recv {
        use crate::host::qemu::Recv;
        use std::os::unix::process::ExitStatusExt;
        match self.0.recv(timeout) {
            Recv::Data(_, d) => console::Recv::Data(d),
            Recv::Idle => console::Recv::Idle,
            Recv::Exited(st) => console::Recv::Closed {
                how: describe_exit(&st),
                signal: st.signal(),
            },
            Recv::Interrupted(s) => console::Recv::Interrupted(s),
        }
    }
    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.send(data)
    }
    fn now(&self) -> Instant {
        Instant::now()
    }
}

struct Session<'a> {
    opts: &'a BootOptions,
    plan: &'a Plan,
    rep: &'a mut dyn Reporter,
    work: &'a Path,
    deadline: Instant,
    console_log: &'a Path,
}

impl Session<'_> {
    fn run(&mut self, result: &mut BootResult) -> Result<(), Stop> {
        let choice = self.choose_accel()?;
        self.rep.note(&format!(
            "accelerator {} ({})",
            choice.accel.arg(),
            choice.reason
        ));
        result.accel_reason = Some(choice.reason.clone());
        if let Some(v) = choice.fresh.clone() {
            self.store_verdict(choice.key.as_ref(), v);
        }
        let disk = self.disk()?;
        let vars = self.firmware_vars()?;
        self.rep.note(&format!(
            "booting {}{}{}{}",
            self.opts.image.display(),
            if self.plan.uefi { " (UEFI)" } else { "" },
            if self.plan.raspi {
                " as a Raspberry Pi 3"
            } else {
                ""
            },
            self.opts
                .resize
                .as_ref()
                .map(|r| format!(" enlarged {r}"))
                .unwrap_or_default(),
        ));
        let log_file = File::create(self.console_log)
            .map_err(io_stop(format!("creating {}", self.console_log.display())))?;

        let mut accel = choice.accel.clone();
        let mut retried_crash = false;
        // A watchdog verdict is cached only once TCG shows the kernel
        // messages KVM did not (see below).
        let mut watchdog_verdict: Option<String> = None;
        let mut con = loop {
            result.accel = Some(accel.arg().into());
            let args = qemu_args(self.plan, self.opts, &disk, &accel, vars.as_deref());
            let q = Qemu::spawn(&self.plan.qemu, &args, Stderr::Merged)
                .map_err(io_stop(format!("starting {}", self.plan.qemu.display())))?;
            let sink = log_file
                .try_clone()
                .ok()
                .map(|f| Box::new(f) as Box<dyn std::io::Write>);
            let mut con = Console::new(QemuConsole(q), self.deadline, sink);
            let watched = choice.guarded && matches!(accel, Accel::Kvm { .. });
            if watched {
                con.watch_for_kernel(self.opts.kvm_watchdog);
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            let err = match con.expect(&[&LOGIN_RE], left, "login prompt") {
                Ok(_) => break con,
                Err(e) => e,
            };
            if watched && let Some((why, source)) = kvm_failure(&err) {
                self.rep.note(&format!(
                    "KVM is not usable here after all: {why}; stopping qemu and booting again under TCG"
                ));
                result.kvm_fallback = Some(why.clone());
                drop(con);
                mark_log(&log_file, "booting again under TCG");
                match source {
                    Source::Watchdog => watchdog_verdict = Some(why),
                    _ => self.store_verdict(choice.key.as_ref(), broken(why, source)),
                }
                accel = Accel::Tcg { single: false };
                continue;
            }
            if accel == (Accel::Tcg { single: false })
                && !retried_crash
                && matches!(
                    err,
                    ConsoleError::Closed {
                        signal: Some(_),
                        ..
                    }
                )
            {
                // qemu 10's multi-threaded TCG sometimes aborts on an
                // internal assertion (e.g. iotlb_to_section) while the guest
                // programs PCI BARs. That is the emulator failing, not the
                // image: say so, and boot once more with one TCG thread.
                let crash =
                    console::qemu_crash_line(&con.tail(TAIL_LINES)).unwrap_or(err.to_string());
                self.rep.note(&format!(
                    "qemu itself crashed ({crash}); retrying once with -accel tcg,thread=single"
                ));
                result.qemu_crash = Some(crash);
                drop(con);
                mark_log(&log_file, "booting again with one TCG thread");
                accel = Accel::Tcg { single: true };
                retried_crash = true;
                continue;
            }
            return Err(Stop::Failed(err.to_string(), con.tail(TAIL_LINES)));
        };
        con.stop_watching();
        let login_s = round1(con.elapsed());
        result.login_seconds = Some(login_s);
        result.kernel_seconds = con.kernel_seconds().map(round1);
        self.rep.note(&format!(
            "login prompt after {login_s} s (accel {}{})",
            accel.arg(),
            result
                .kernel_seconds
                .map(|k| format!("; first kernel message after {k} s"))
                .unwrap_or_default()
        ));
        if let Some(why) = watchdog_verdict {
            match result.kernel_seconds {
                Some(k) => self.store_verdict(
                    choice.key.as_ref(),
                    broken(
                        format!(
                            "a boot under KVM showed {why}; under TCG the first kernel message came after {k} s"
                        ),
                        Source::Watchdog,
                    ),
                ),
                None => self.rep.note(
                    "not caching a KVM verdict: this image prints no kernel messages on the serial console, \
                     so the watchdog cannot tell a stuck KVM from a quiet image",
                ),
            }
        }
        if let Some(login) = &self.opts.login {
            con.login(&login.user, &login.password, COMMAND_TIMEOUT)
                .map_err(|e| Stop::Failed(e.to_string(), con.tail(TAIL_LINES)))?;
            self.rep.note(&format!("logged in as {}", login.user));
            let mut results = Vec::new();
            for (i, cmd) in self.opts.run.iter().enumerate() {
                match con.run_command(i + 1, cmd, COMMAND_TIMEOUT) {
                    Ok(r) => {
                        self.rep.command(&r);
                        results.push(r);
                    }
                    Err(e) => {
                        result.commands = Some(results);
                        return Err(Stop::Failed(e.to_string(), con.tail(TAIL_LINES)));
                    }
                }
            }
            let failed = results
                .iter()
                .find(|r| r.status != 0)
                .map(|r| format!("`{}` exited with status {}", r.command, r.status));
            result.commands = Some(results);
            if let Some(msg) = failed {
                return Err(Stop::Failed(msg, con.tail(TAIL_LINES)));
            }
        }
        Ok(())
    }

    /// The accelerator for `--accel`, probing and caching for `auto`.
    fn choose_accel(&mut self) -> Result<Choice, Stop> {
        let fixed = |accel, reason: &str| Choice {
            accel,
            reason: reason.into(),
            guarded: false,
            key: None,
            fresh: None,
        };
        match self.plan.accel {
            AccelRequest::Tcg if self.plan.raspi => {
                return Ok(fixed(
                    Accel::Tcg { single: false },
                    "qemu's raspi3b machine is emulated only",
                ));
            }
            AccelRequest::Tcg => return Ok(fixed(Accel::Tcg { single: false }, "--accel tcg")),
            AccelRequest::Kvm => {
                return Ok(fixed(
                    Accel::Kvm {
                        cpu: Some("host".into()),
                    },
                    "--accel kvm",
                ));
            }
            AccelRequest::Auto => {}
        }
        let tcg = |reason: String| Choice {
            accel: Accel::Tcg { single: false },
            reason,
            guarded: false,
            key: None,
            fresh: None,
        };
        let arch = self.plan.arch.name();
        if self.plan.arch.host_machine() != facts::machine() {
            return Ok(tcg(format!("the host is not {arch}")));
        }
        let dev = &self.opts.kvm_device;
        if !facts::accessible(dev) {
            return Ok(tcg(format!(
                "{} is missing or not accessible",
                dev.display()
            )));
        }
        let key = HostKey {
            arch: arch.into(),
            qemu: self.plan.qemu.clone(),
            qemu_version: facts::qemu_version(&self.plan.qemu)?,
            kernel: facts::kernel_release(),
            boot_id: facts::boot_id(),
            kvm_device: dev.clone(),
        };
        let cache = self.opts.cache_dir.clone().map(|dir| Cache { dir });
        if let Some(c) = &cache {
            let path = c.path(arch);
            match c.load(&key) {
                Cached::Hit(v) => {
                    return Ok(Choice {
                        reason: format!(
                            "cached verdict in {}, delete it to probe again: {}",
                            path.display(),
                            v.reason
                        ),
                        accel: if v.kvm {
                            Accel::Kvm { cpu: v.cpu }
                        } else {
                            Accel::Tcg { single: false }
                        },
                        guarded: v.kvm,
                        key: Some(key),
                        fresh: None,
                    });
                }
                Cached::Missing => {}
                Cached::Stale(changed) => self.rep.note(&format!(
                    "the cached KVM verdict in {} is for another {}: probing again",
                    path.display(),
                    changed.join(", ")
                )),
                Cached::Unreadable(why) => self
                    .rep
                    .note(&format!("ignoring an unreadable KVM verdict: {why}")),
            }
        }
        if self.plan.arch != Arch::X86_64 {
            // The probe is an x86 boot sector; on other hosts the watchdog
            // alone guards the boot, and nothing is cached until it trips.
            return Ok(Choice {
                accel: Accel::Kvm {
                    cpu: Some("host".into()),
                },
                reason: format!(
                    "{} is accessible; no probe for {arch}, the boot is watched",
                    dev.display()
                ),
                guarded: true,
                key: Some(key),
                fresh: None,
            });
        }
        let (verdict, cacheable) = self.probe()?;
        Ok(Choice {
            accel: if verdict.kvm {
                Accel::Kvm {
                    cpu: verdict.cpu.clone(),
                }
            } else {
                Accel::Tcg { single: false }
            },
            reason: verdict.reason.clone(),
            guarded: verdict.kvm,
            key: Some(key),
            fresh: cacheable.then_some(verdict),
        })
    }

    /// Runs the timer probe with each CPU model until one starts.
    /// The verdict, and whether it may be cached: a probe cut short by
    /// `--timeout` proves nothing about the host.
    fn probe(&mut self) -> Result<(Verdict, bool), Stop> {
        let mut why = Vec::new();
        let mut cut_short = false;
        for cpu in accel::KVM_CPUS {
            let limit =
                accel::PROBE_TIMEOUT.min(self.deadline.saturating_duration_since(Instant::now()));
            cut_short = limit < accel::PROBE_TIMEOUT;
            let (out, end) = accel::run_probe(&self.plan.qemu, self.work, "kvm", *cpu, limit)
                .map_err(io_stop("running the KVM probe"))?;
            if let Some(sig) = interrupt::requested().then(interrupt::signal).flatten() {
                return Err(Stop::Failed(
                    format!("interrupted by signal {sig}"),
                    Vec::new(),
                ));
            }
            match accel::judge(&out, &end, &accel::kvm_label(*cpu)) {
                Ok(said) => {
                    let v = Verdict {
                        kvm: true,
                        cpu: cpu.map(String::from),
                        reason: said,
                        source: Source::Probe,
                    };
                    return Ok((v, true));
                }
                Err(w) => {
                    why.push(w);
                    // Only a qemu that would not start (a CPU model this
                    // KVM refuses) is worth another model.
                    if !matches!(end, accel::ProbeEnd::Exited(_)) {
                        break;
                    }
                }
            }
        }
        let v = Verdict {
            kvm: false,
            cpu: None,
            reason: format!("KVM is unusable: {}", why.join("; ")),
            source: Source::Probe,
        };
        if cut_short {
            self.rep
                .note("the KVM probe was cut short by --timeout: its verdict is not cached");
        }
        Ok((v, !cut_short))
    }

    /// Caches a verdict; a cache we cannot write is reported, not fatal.
    fn store_verdict(&mut self, key: Option<&HostKey>, v: Verdict) {
        let (Some(key), Some(dir)) = (key, &self.opts.cache_dir) else {
            return;
        };
        let cache = Cache { dir: dir.clone() };
        match cache.store(key, &v) {
            Ok(p) => self.rep.note(&format!(
                "KVM verdict ({}) cached in {}",
                if v.kvm { "usable" } else { "unusable" },
                p.display()
            )),
            Err(e) => self.rep.note(&format!(
                "cannot cache the KVM verdict in {} ({e}); every run will decide again",
                cache.dir.display()
            )),
        }
    }

    /// The overlay (or, for a Pi, the card and its boot files).
    fn disk(&mut self) -> Result<Disk, Stop> {
        if self.plan.raspi {
            return match raspi::prepare(
                &self.plan.qemu_img,
                &self.plan.image,
                self.work,
                self.opts.resize.as_deref(),
            ) {
                Ok(card) => {
                    self.rep.note(&format!("raspi3b: {}", card.summary));
                    self.rep
                        .note(&format!("raspi3b: cmdline.txt: {}", card.cmdline));
                    Ok(Disk::Card(card))
                }
                Err(raspi::RaspiError::Cmd(e)) => Err(e.into()),
                Err(e) => Err(Stop::Failed(e.to_string(), Vec::new())),
            };
        }
        #[derive(serde::Deserialize)]
        struct Info {
            format: String,
        }
        let info: Info = Cmd::new("reading the image's format", &self.plan.qemu_img)
            .args(["info", "--output=json"])
            .arg(&self.plan.image)
            .run_json()?;
        let overlay = self.work.join("disk.qcow2");
        Cmd::new(
            "creating a throw-away overlay of the image",
            &self.plan.qemu_img,
        )
        .args(["create", "-q", "-f", "qcow2", "-F", &info.format, "-b"])
        .arg(&self.plan.image)
        .arg(&overlay)
        .run()?;
        if let Some(r) = &self.opts.resize {
            Cmd::new("enlarging the overlay", &self.plan.qemu_img)
                .args(["resize", "-q"])
                .arg(&overlay)
                .arg(r)
                .run()?;
        }
        Ok(Disk::Overlay(overlay))
    }

    /// A writable copy of the UEFI variable store, when the firmware has one.
    fn firmware_vars(&self) -> Result<Option<PathBuf>, Stop> {
        let Some((_, Some(vars))) = &self.plan.firmware else {
            return Ok(None);
        };
        let copy = self.work.join("efivars.fd");
        std::fs::copy(vars, &copy).map_err(io_stop(format!("copying {}", vars.display())))?;
        Ok(Some(copy))
    }
}

/// When a failed boot under KVM means KVM (not the image) failed: why, and
/// what the verdict is based on.
fn kvm_failure(e: &ConsoleError) -> Option<(String, Source)> {
    match e {
        ConsoleError::Stalled { .. } => Some((e.to_string(), Source::Watchdog)),
        ConsoleError::Fatal {
            line,
            cause: Cause::Kvm,
        } => Some((format!("qemu reported \"{line}\""), Source::KvmError)),
        ConsoleError::Closed {
            how,
            signal: Some(_),
        } => Some((format!("qemu {how} under KVM"), Source::KvmError)),
        _ => None,
    }
}

fn broken(reason: String, source: Source) -> Verdict {
    Verdict {
        kvm: false,
        cpu: None,
        reason,
        source,
    }
}

/// A line in the console log between two boots.
fn mark_log(mut f: &File, what: &str) {
    use std::io::Write;
    let _ = writeln!(f, "\n--- boot-test: {what} ---");
}

fn round1(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}

/// A path in a qemu `-drive file=...` value (a comma is doubled there).
fn qemu_file(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// qemu's command line for one boot attempt.
fn qemu_args(
    plan: &Plan,
    opts: &BootOptions,
    disk: &Disk,
    accel: &Accel,
    vars: Option<&Path>,
) -> Vec<OsString> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    match disk {
        Disk::Card(card) => {
            // The board is fixed: 4 cores, 1 GiB. The first serial port is
            // the PL011 (Bluetooth on a Pi 3), the second the mini UART.
            push(&["-M", "raspi3b", "-accel", accel.arg(), "-no-user-config"]);
            push(&["-display", "none", "-serial", "null", "-serial", "stdio"]);
            push(&["-monitor", "none", "-no-reboot"]);
            push(&["-kernel", &card.kernel.display().to_string()]);
            push(&["-dtb", &card.dtb.display().to_string()]);
            push(&["-append", &card.cmdline]);
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=sd,cache=unsafe",
                    qemu_file(&card.card)
                ),
            ]);
            if let Some(i) = &card.initrd {
                push(&["-initrd", &i.display().to_string()]);
            }
        }
        Disk::Overlay(overlay) => {
            push(&["-accel", accel.arg()]);
            push(&[
                "-m",
                &opts.memory_mib.to_string(),
                "-smp",
                &opts.smp.to_string(),
            ]);
            push(accel::HEADLESS);
            if opts.net {
                push(&["-nic", "user,model=virtio-net-pci"]);
            }
            push(&["-serial", "stdio", "-monitor", "none", "-no-reboot"]);
            push(&[
                "-drive",
                &format!(
                    "file={},format=qcow2,if=virtio,cache=unsafe",
                    qemu_file(overlay)
                ),
            ]);
            match accel {
                Accel::Kvm { cpu: Some(c) } => push(&["-cpu", c]),
                Accel::Kvm { cpu: None } => {}
                Accel::Tcg { .. } => {
                    if let Some(c) = plan.arch.tcg_cpu() {
                        push(&["-cpu", c]);
                    }
                }
            }
            push(&["-M", plan.arch.machine()]);
        }
    }
    if let Some((code, _)) = &plan.firmware {
        a.push("-drive".into());
        a.push(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            qemu_file(code)
        ));
        if let Some(v) = vars {
            a.push("-drive".into());
            a.push(format!("if=pflash,format=raw,unit=1,file={}", qemu_file(v)));
        }
    }
    a.into_iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(arch: Arch, uefi: bool) -> Plan {
        Plan {
            image: "/i.qcow2".into(),
            arch,
            raspi: false,
            uefi,
            accel: AccelRequest::Auto,
            qemu: "/usr/bin/qemu".into(),
            qemu_img: "/usr/bin/qemu-img".into(),
            firmware: uefi.then(|| ("/fw/CODE.fd".into(), Some("/fw/VARS.fd".into()))),
        }
    }

    fn line(a: &[OsString]) -> String {
        a.iter()
            .map(|s| s.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn x86_bios_under_tcg() {
        let mut o = BootOptions::new("/i.qcow2");
        o.smp = 2;
        let a = qemu_args(
            &plan(Arch::X86_64, false),
            &o,
            &Disk::Overlay("/w/disk.qcow2".into()),
            &Accel::Tcg { single: false },
            None,
        );
        assert_eq!(
            line(&a),
            "-accel tcg -m 1024 -smp 2 -nodefaults -no-user-config -display none -nic none \
             -serial stdio -monitor none -no-reboot \
             -drive file=/w/disk.qcow2,format=qcow2,if=virtio,cache=unsafe -cpu max -M q35"
        );
    }

    #[test]
    fn net_adds_one_user_mode_card() {
        let mut o = BootOptions::new("/i.qcow2");
        let disk = Disk::Overlay("/w/disk.qcow2".into());
        let tcg = Accel::Tcg { single: false };
        let off = line(&qemu_args(
            &plan(Arch::X86_64, false),
            &o,
            &disk,
            &tcg,
            None,
        ));
        assert!(!off.contains("-nic user"), "{off}");
        o.net = true;
        let on = line(&qemu_args(
            &plan(Arch::X86_64, false),
            &o,
            &disk,
            &tcg,
            None,
        ));
        assert_eq!(
            on.matches("-nic user,model=virtio-net-pci").count(),
            1,
            "{on}"
        );
    }

    #[test]
    fn uefi_under_kvm_with_the_default_cpu_and_one_tcg_thread() {
        let o = BootOptions::new("/i.qcow2");
        let p = plan(Arch::X86_64, true);
        let disk = Disk::Overlay("/w,x/disk.qcow2".into());
        let a = line(&qemu_args(
            &p,
            &o,
            &disk,
            &Accel::Kvm { cpu: None },
            Some(Path::new("/w/efivars.fd")),
        ));
        assert!(a.starts_with("-accel kvm "), "{a}");
        assert!(!a.contains("-cpu"), "{a}");
        assert!(a.contains("file=/w,,x/disk.qcow2,"), "{a}");
        assert!(
            a.ends_with(
                "-M q35 -drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd \
             -drive if=pflash,format=raw,unit=1,file=/w/efivars.fd"
            ),
            "{a}"
        );
        let a = line(&qemu_args(
            &p,
            &o,
            &disk,
            &Accel::Tcg { single: true },
            None,
        ));
        assert!(a.starts_with("-accel tcg,thread=single "), "{a}");
        let a = line(&qemu_args(
            &plan(Arch::Aarch64, true),
            &o,
            &disk,
            &Accel::Kvm {
                cpu: Some("host".into()),
            },
            None,
        ));
        assert!(a.contains("-cpu host -M virt"), "{a}");
    }

    #[test]
    fn arm_and_power_machines_under_tcg() {
        let o = BootOptions::new("/i.qcow2");
        let disk = Disk::Overlay("/w/disk.qcow2".into());
        let tcg = Accel::Tcg { single: false };
        let arm = line(&qemu_args(&plan(Arch::Arm, true), &o, &disk, &tcg, None));
        assert!(
            arm.ends_with(
                "-cpu max -M virt,highmem=off \
                 -drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd"
            ),
            "{arm}"
        );
        // pseries has no `max` CPU and boots its own SLOF: no pflash.
        let power = line(&qemu_args(&plan(Arch::Ppc64, false), &o, &disk, &tcg, None));
        assert!(power.ends_with("cache=unsafe -M pseries"), "{power}");
        assert!(!power.contains("-cpu"), "{power}");
    }

    #[test]
    fn power_is_not_booted_through_uefi() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("i.qcow2");
        std::fs::write(&img, b"").unwrap();
        let mut o = BootOptions::new(&img);
        o.arch = Arch::Ppc64;
        o.uefi = true;
        let e = Plan::resolve(&o).err().expect("refused");
        assert!(e.is_usage() && e.to_string().contains("drop --uefi"), "{e}");
        o.arch = Arch::Arm;
        o.uefi = false;
        // Arm machines boot through UEFI whatever was asked.
        if let Ok(p) = Plan::resolve(&o) {
            assert!(p.uefi);
        }
    }

    #[test]
    fn raspi_boots_the_cards_own_files() {
        let mut p = plan(Arch::Aarch64, false);
        p.raspi = true;
        let card = raspi::Card {
            card: "/w/sd.img".into(),
            kernel: "/w/kernel".into(),
            initrd: Some("/w/initrd".into()),
            dtb: "/w/board.dtb".into(),
            cmdline: "console=ttyS1,115200 root=LABEL=root".into(),
            summary: String::new(),
        };
        let a = qemu_args(
            &p,
            &BootOptions::new("/i"),
            &Disk::Card(card),
            &Accel::Tcg { single: false },
            None,
        );
        let s = line(&a);
        assert!(s.starts_with("-M raspi3b -accel tcg "), "{s}");
        assert!(s.contains("-serial null -serial stdio"), "{s}");
        assert!(s.ends_with("-initrd /w/initrd"), "{s}");
        // The command line stays one argument.
        assert!(
            a.iter()
                .any(|x| x == "console=ttyS1,115200 root=LABEL=root")
        );
    }

    #[test]
    fn kvm_failures_that_mean_fall_back() {
        let stalled = ConsoleError::Stalled { secs: 60 };
        assert_eq!(kvm_failure(&stalled).unwrap().1, Source::Watchdog);
        let kvm = ConsoleError::Fatal {
            line: "KVM internal error. Suberror: 1".into(),
            cause: Cause::Kvm,
        };
        assert_eq!(
            kvm_failure(&kvm).unwrap(),
            (
                "qemu reported \"KVM internal error. Suberror: 1\"".into(),
                Source::KvmError
            )
        );
        let panic = ConsoleError::Fatal {
            line: "Kernel panic".into(),
            cause: Cause::Guest,
        };
        assert!(kvm_failure(&panic).is_none());
        let exit = ConsoleError::Closed {
            how: "exited with status 1".into(),
            signal: None,
        };
        assert!(kvm_failure(&exit).is_none());
    }

    #[test]
    fn options_are_checked_before_anything_runs() {
        let d = tempfile::tempdir().unwrap();
        let mut o = BootOptions::new(d.path().join("missing.qcow2"));
        assert!(matches!(Plan::resolve(&o), Err(BootError::NoImage(_))));
        o.run = vec!["true".into()];
        let e = Plan::resolve(&o).err().unwrap();
        assert_eq!(e.to_string(), "--run needs --login USER:PASS");
        assert!(e.is_usage());
        let img = d.path().join("i.raw");
        std::fs::write(&img, "").unwrap();
        let mut o = BootOptions::new(&img);
        o.machine = Machine::Raspi3b;
        o.accel = AccelRequest::Kvm;
        assert!(matches!(Plan::resolve(&o), Err(BootError::RaspiKvm)));
    }

    #[test]
    fn login_parses() {
        let l: Login = "devuser:se:cret".parse().unwrap();
        assert_eq!(
            (l.user.as_str(), l.password.as_str()),
            ("devuser", "se:cret")
        );
        assert!(":x".parse::<Login>().is_err());
    }

    #[test]
    fn result_json_keeps_the_scripts_keys() {
        let r = BootResult {
            image: "i.qcow2".into(),
            ok: true,
            login_seconds: Some(37.4),
            commands: Some(vec![CommandResult {
                command: "id -un".into(),
                status: 0,
                output: "devuser".into(),
            }]),
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(v["login_seconds"], 37.4);
        assert_eq!(v["commands"][0]["command"], "id -un");
        assert_eq!(v["commands"][0]["status"], 0);
        assert_eq!(v["commands"][0]["output"], "devuser");
        assert!(v.get("error").is_none() && v.get("console_tail").is_none());
    }
}
