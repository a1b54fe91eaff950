//! `dib-boot-test`: boots a disk image in qemu and checks that it reaches a
//! login prompt (`scripts/boot-test` runs it). The work is `dib::boot`; this
//! file is the command line, the JSON file and the exit status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use dib::boot::{self, AccelRequest, Arch, BootOptions, CommandResult, Login, Machine, Reporter};

const ABOUT: &str = "Boots a disk image in qemu and checks that it reaches a login prompt.";

const LONG_ABOUT: &str = "\
Boots a disk image in qemu and checks that it reaches a login prompt.

The image itself is never written: qemu runs on a temporary qcow2 overlay
(enlarged first with --resize). The machine has a serial console and no
network. The test waits for \"login:\" on the console and reports how long that
took; with --login it logs in on the serial console and runs each --run
command, printing its output and exit status. Every path out of this program
stops qemu; --timeout bounds the whole run. On failure the last 50 console
lines are printed.

x86_64 and i386 images boot in a q35 machine (BIOS, or UEFI with --uefi),
aarch64 and arm (armhf) images in a virt machine with UEFI, ppc64 (ppc64el)
images in a pseries machine with its Open Firmware (SLOF). --machine raspi3b boots a Raspberry Pi 3
SD-card image the way the Pi's firmware would: the kernel, initramfs, device
tree and command line come from config.txt and cmdline.txt on the image's FAT
firmware partition (read with mtools), and a raw copy of the image, enlarged to
a power of two as qemu's SD card model requires, is the card. The console is
the mini UART (ttyS1), qemu's second serial port.

--accel auto uses KVM only when it really works: a tiny boot-sector program
must see the BIOS timer tick in real time under KVM (on nested VMs it does
not, and real guests hang in GRUB). The verdict is cached per host (qemu,
kernel, boot) in the cache directory. A boot under KVM that shows no Linux
kernel message within the watchdog limit is stopped and done again under TCG,
and that verdict is cached too.

Exit status: 0 success, 1 the machine failed the test (or a --run command
failed), 2 bad usage or missing tools.";

#[derive(Clone, Copy, ValueEnum)]
enum ArchArg {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
    /// 32-bit Arm (armhf images).
    #[value(name = "arm")]
    Arm,
    /// 64-bit POWER (ppc64el images).
    #[value(name = "ppc64")]
    Ppc64,
}

#[derive(Clone, Copy, ValueEnum)]
enum MachineArg {
    /// q35 (x86_64), virt (aarch64, arm) or pseries (ppc64)
    Auto,
    /// a Raspberry Pi 3 SD card
    Raspi3b,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    /// KVM if it works here, else TCG
    Auto,
    Kvm,
    Tcg,
}

#[derive(Parser)]
#[command(name = "dib-boot-test", about = ABOUT, long_about = LONG_ABOUT)]
struct Args {
    /// The disk image (any format qemu-img reads).
    image: PathBuf,
    /// Hard limit for the whole run, seconds.
    #[arg(long, value_name = "S", default_value_t = 300.0)]
    timeout: f64,
    /// Boot with UEFI firmware (OVMF/AAVMF).
    #[arg(long)]
    uefi: bool,
    #[arg(long, value_enum, default_value = "x86_64")]
    arch: ArchArg,
    #[arg(long, value_enum, default_value = "auto")]
    machine: MachineArg,
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelArg,
    /// Log in on the serial console after the login prompt.
    #[arg(long, value_name = "USER:PASS")]
    login: Option<Login>,
    /// Enlarge the disk first, e.g. +1G.
    #[arg(long, value_name = "SIZE")]
    resize: Option<String>,
    /// A shell command to run after logging in (repeatable).
    #[arg(long = "run", value_name = "CMD")]
    run: Vec<String>,
    /// Guest memory, MiB.
    #[arg(long, value_name = "MiB", default_value_t = 1024)]
    memory: u32,
    /// Guest CPUs (default: 2, or 1 on a one-CPU host).
    #[arg(long, value_name = "N")]
    smp: Option<u32>,
    /// Also keep the whole console log in this file.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The KVM device whose access decides whether KVM is tried at all
    /// (tests point it at a plain file).
    #[arg(
        long,
        value_name = "PATH",
        env = "DIB_BOOT_TEST_KVM_DEVICE",
        default_value = "/dev/kvm"
    )]
    kvm_device: PathBuf,
    /// Where --accel auto caches its KVM verdict ("" for no cache).
    #[arg(long, value_name = "DIR", env = "DIB_BOOT_TEST_CACHE_DIR", default_value = boot::DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Under KVM chosen by --accel auto: seconds to the first Linux kernel
    /// message before the boot is done again under TCG.
    #[arg(long, value_name = "S", env = "DIB_BOOT_TEST_KVM_WATCHDOG", default_value_t = boot::KVM_WATCHDOG.as_secs_f64())]
    kvm_watchdog: f64,
    /// Give the guest a network card on qemu's user-mode network: it reaches
    /// the host's loopback at 10.0.2.2 (the guest configures it itself, e.g.
    /// with the address 10.0.2.15/24).
    #[arg(long)]
    net: bool,
    /// Also print the qemu-img and qemu command lines.
    #[arg(long, short)]
    verbose: bool,
}

/// Progress on stdout, as `scripts/boot-test` always printed it.
struct Stdout;

impl Reporter for Stdout {
    fn note(&mut self, msg: &str) {
        println!("boot-test: {msg}");
    }
    fn command(&mut self, r: &CommandResult) {
        println!("--- $ {}", r.command);
        if !r.output.is_empty() {
            println!("{}", r.output);
        }
        println!("--- exit status {}", r.status);
    }
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--{name} must be a number of seconds above 0, not {s}"))
}

fn options(a: Args) -> Result<(BootOptions, Option<PathBuf>), String> {
    let mut o = BootOptions::new(a.image);
    o.timeout = seconds("timeout", a.timeout)?;
    o.kvm_watchdog = seconds("kvm-watchdog", a.kvm_watchdog)?;
    o.uefi = a.uefi;
    o.arch = match a.arch {
        ArchArg::X86_64 => Arch::X86_64,
        ArchArg::Aarch64 => Arch::Aarch64,
        ArchArg::Arm => Arch::Arm,
        ArchArg::Ppc64 => Arch::Ppc64,
    };
    o.machine = match a.machine {
        MachineArg::Auto => Machine::Auto,
        MachineArg::Raspi3b => Machine::Raspi3b,
    };
    o.accel = match a.accel {
        AccelArg::Auto => AccelRequest::Auto,
        AccelArg::Kvm => AccelRequest::Kvm,
        AccelArg::Tcg => AccelRequest::Tcg,
    };
    o.login = a.login;
    o.resize = a.resize;
    o.run = a.run;
    o.memory_mib = a.memory;
    if let Some(n) = a.smp {
        o.smp = n;
    }
    o.log = a.log;
    o.net = a.net;
    o.kvm_device = a.kvm_device;
    o.cache_dir = (!a.cache_dir.as_os_str().is_empty()).then_some(a.cache_dir);
    Ok((o, a.json))
}

fn write_json(path: &std::path::Path, r: &boot::BootResult) {
    let text = serde_json::to_string_pretty(r).expect("a result serializes") + "\n";
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("boot-test: writing {}: {e}", path.display());
    }
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
    dib::log::set_verbosity(if args.verbose { 2 } else { 1 });
    let (opts, json) = match options(args) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("boot-test: {msg}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = dib::host::interrupt::install() {
        eprintln!("boot-test: installing signal handlers: {e}");
        return ExitCode::from(2);
    }
    match boot::run_with(&opts, &mut Stdout) {
        Ok(r) => {
            if let Some(j) = &json {
                write_json(j, &r);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let Some(r) = e.result() {
                if let Some(j) = &json {
                    write_json(j, r);
                }
                println!("boot-test: FAILED: {e}");
                if !r.console_tail.is_empty() {
                    eprintln!("boot-test: last {} console lines:", r.console_tail.len());
                    for l in &r.console_tail {
                        eprintln!("  | {l}");
                    }
                }
            } else {
                eprintln!("boot-test: {e}");
            }
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}
