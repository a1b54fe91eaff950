//! Choosing the accelerator for `--accel auto`: KVM when it really works,
//! TCG otherwise, and the verdict cached per host.
//!
//! `/dev/kvm` existing is not enough. On the nested VMs our CI runs on, a
//! one-sector program that only writes to the serial port runs under KVM,
//! but a real guest hangs in GRUB's menu at 100% CPU forever: the guest's
//! timer interrupts are not delivered in real time. The probe therefore
//! boots a program that *needs* timer interrupts (see [`PROBE_CODE`]) and
//! times them on the host clock. Measured on such a VM (qemu 10.0,
//! SeaBIOS 1.16): under TCG the 18 ticks arrive over 0.93 s, as they should
//! (17 periods of 54.9 ms), KVMOK 1.15 s after qemu started; under KVM all
//! 18 arrive within 9 ms, about 3.2 s after start, in each of three runs.
//! A probe that passes does not prove every boot will; the boot is also
//! watched (see `boot::KVM_WATCHDOG`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::host::qemu::{Qemu, Recv, Stderr};

/// How many BIOS timer ticks the probe waits for (18.2 Hz: about 1 s).
pub const PROBE_TICKS: usize = 18;

/// The time the probe's ticks span in real time: 17 periods of the PIT's
/// 65536 / 1193182 Hz = 54.9 ms.
pub const PROBE_SPAN: Duration = Duration::from_millis(934);

/// Below this spread the ticks came in a burst (9 ms measured under the
/// broken KVM), above it the guest runs far slower than real time.
const SPAN_MIN: Duration = Duration::from_millis(500);
const SPAN_MAX: Duration = Duration::from_secs(3);

/// How long the probe may take. On a working host it takes about 1.2 s
/// (SeaBIOS 0.2 s, the ticks 0.93 s); the broken KVM here needed 3.1 to
/// 3.4 s just to reach the boot sector.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// A boot sector for SeaBIOS (16-bit real mode, loaded at 0000:7C00). It
/// prints "probe\n" on COM1, then waits with interrupts enabled for 18
/// changes of the BIOS tick counter at 0040:006C, printing a '.' for each,
/// then prints "KVMOK\n" and halts. The counter changes only when IRQ 0 (the
/// PIT, 18.2 Hz) is delivered, and `hlt` wakes only for an interrupt, so a
/// guest whose timer interrupts are not delivered never gets past the first
/// wait. COM1 needs no setup: qemu's UART emits what is written to 0x3F8.
///
/// Hand-assembled; the offsets in the comments are checked by the tests.
#[rustfmt::skip]
pub const PROBE_CODE: &[u8] = &[
    0xFA,                   // 00 cli
    0x31, 0xC0,             // 01 xor ax, ax
    0x8E, 0xD8,             // 03 mov ds, ax          ; the BIOS data area is at 0:0400
    0x8E, 0xD0,             // 05 mov ss, ax
    0xBC, 0x00, 0x7C,       // 07 mov sp, 0x7c00      ; the stack below us
    0xBA, 0xF8, 0x03,       // 0A mov dx, 0x3f8       ; COM1
    0xB0, b'p', 0xEE,       // 0D mov al, 'p' ; out dx, al
    0xB0, b'r', 0xEE,       // 10
    0xB0, b'o', 0xEE,       // 13
    0xB0, b'b', 0xEE,       // 16
    0xB0, b'e', 0xEE,       // 19
    0xB0, b'\n', 0xEE,      // 1C
    0xB9, PROBE_TICKS as u8, 0x00, // 1F mov cx, 18
    0xFB,                   // 22 sti
                            // tick:
    0x8B, 0x1E, 0x6C, 0x04, // 23 mov bx, [0x046c]    ; the counter's low word
                            // wait:
    0xF4,                   // 27 hlt                 ; until an interrupt
    0x3B, 0x1E, 0x6C, 0x04, // 28 cmp bx, [0x046c]
    0x74, 0xF9,             // 2C je wait             ; 0x2E - 7 = 0x27
    0xB0, b'.', 0xEE,       // 2E mov al, '.' ; out dx, al
    0xE2, 0xF0,             // 31 loop tick           ; 0x33 - 16 = 0x23
    0xB0, b'K', 0xEE,       // 33
    0xB0, b'V', 0xEE,       // 36
    0xB0, b'M', 0xEE,       // 39
    0xB0, b'O', 0xEE,       // 3C
    0xB0, b'K', 0xEE,       // 3F
    0xB0, b'\n', 0xEE,      // 42
    0xFA,                   // 45 cli
                            // halt:
    0xF4,                   // 46 hlt
    0xEB, 0xFD,             // 47 jmp halt            ; 0x49 - 3 = 0x46
];

/// The probe's disk: [`PROBE_CODE`] as an MBR boot sector.
pub fn probe_disk() -> [u8; 512] {
    let mut s = [0u8; 512];
    s[..PROBE_CODE.len()].copy_from_slice(PROBE_CODE);
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// How a probe run ended.
#[derive(Debug)]
pub enum ProbeEnd {
    /// "KVMOK" arrived.
    Finished,
    /// Nothing more within [`PROBE_TIMEOUT`] (or the whole run's deadline).
    TimedOut(Duration),
    /// qemu exited; its last stderr line or exit status.
    Exited(String),
}

/// The probe's output, each byte stamped with its arrival after qemu started.
pub type ProbeOutput = [(Duration, u8)];

/// Judges a probe run: `Ok` with the ticks' spread when KVM delivered the
/// timer in real time, else why not. Pure, for the tests.
pub fn judge(out: &ProbeOutput, end: &ProbeEnd, label: &str) -> Result<String, String> {
    let bytes: Vec<u8> = out.iter().map(|(_, b)| *b).collect();
    let started = find(&bytes, b"probe\n");
    let dots: Vec<Duration> = match started {
        Some(at) => out[at + 6..]
            .iter()
            .filter(|(_, b)| *b == b'.')
            .map(|(t, _)| *t)
            .take(PROBE_TICKS)
            .collect(),
        None => Vec::new(),
    };
    match end {
        ProbeEnd::Exited(why) => Err(format!("{label} failed: {why}")),
        ProbeEnd::TimedOut(after) if started.is_none() => Err(format!(
            "a test program under {label} printed nothing in {} s",
            after.as_secs()
        )),
        ProbeEnd::TimedOut(after) => Err(format!(
            "a test program under {label} started but saw {} of {PROBE_TICKS} timer ticks in {} s: \
             timer interrupts are not delivered",
            dots.len(),
            after.as_secs()
        )),
        ProbeEnd::Finished => {
            let (Some(first), Some(last)) = (dots.first(), dots.last()) else {
                return Err(format!("a test program under {label} printed garbage"));
            };
            let spread = last.saturating_sub(*first);
            let said = format!(
                "a test program's {PROBE_TICKS} timer ticks under {label} arrived over {:.3} s (real time: {:.2} s)",
                spread.as_secs_f64(),
                PROBE_SPAN.as_secs_f64()
            );
            if spread < SPAN_MIN {
                Err(format!(
                    "{said}: timer interrupts are not delivered in real time (a real guest would hang in GRUB)"
                ))
            } else if spread > SPAN_MAX {
                Err(format!("{said}: the guest runs far slower than real time"))
            } else {
                Ok(said)
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A machine with no devices but those asked for, no display, no network.
pub const HEADLESS: &[&str] = &[
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-nic",
    "none",
];

/// The CPU models tried under KVM, best first: `host` aborts on some
/// nested VMs ("failed to set MSR 0x10a", an assertion in kvm_buf_set_msrs),
/// where qemu's default model still starts.
pub const KVM_CPUS: &[Option<&str>] = &[Some("host"), None];

/// qemu's arguments for the probe under KVM with `cpu` (None: qemu's default).
pub fn probe_args(disk: &Path, cpu: Option<&str>) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec!["-accel".into(), "kvm".into()];
    if let Some(c) = cpu {
        a.extend(["-cpu".into(), c.into()]);
    }
    for s in ["-m", "64"]
        .iter()
        .chain(HEADLESS)
        .chain(&["-serial", "stdio", "-monitor", "none"])
    {
        a.push(s.into());
    }
    let mut drive = std::ffi::OsString::from("file=");
    drive.push(disk);
    drive.push(",format=raw,if=ide");
    a.extend(["-drive".into(), drive]);
    a
}

/// A label for messages: "KVM", "KVM with -cpu host".
pub fn kvm_label(cpu: Option<&str>) -> String {
    match cpu {
        Some(c) => format!("KVM with -cpu {c}"),
        None => "KVM with qemu's default CPU".into(),
    }
}

/// Runs the probe once under KVM with `cpu`, with qemu `accel` overridable
/// for tests of the program itself (`tcg` must pass: its timers work).
pub fn run_probe(
    qemu: &Path,
    workdir: &Path,
    accel: &str,
    cpu: Option<&str>,
    limit: Duration,
) -> std::io::Result<(Vec<(Duration, u8)>, ProbeEnd)> {
    let disk = workdir.join("kvm-probe.img");
    std::fs::write(&disk, probe_disk())?;
    let mut args = probe_args(&disk, cpu);
    args[1] = accel.into();
    let mut q = Qemu::spawn(qemu, &args, Stderr::Apart)?;
    let t0 = Instant::now();
    let mut out: Vec<(Duration, u8)> = Vec::new();
    let end = loop {
        let left = limit.saturating_sub(t0.elapsed());
        if left.is_zero() {
            break ProbeEnd::TimedOut(limit);
        }
        match q.recv(left.min(Duration::from_millis(200))) {
            Recv::Data(at, d) => {
                let t = at.saturating_duration_since(t0);
                out.extend(d.iter().map(|b| (t, *b)));
                if find(&out.iter().map(|(_, b)| *b).collect::<Vec<_>>(), b"KVMOK").is_some() {
                    break ProbeEnd::Finished;
                }
            }
            Recv::Idle => {}
            Recv::Exited(st) => {
                // qemu's "error:" line says more than the assertion after it
                // ("failed to set MSR 0x10a" against "kvm_buf_set_msrs: Assertion").
                let err = q.stderr_text();
                let lines: Vec<&str> = err
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                let last = lines
                    .iter()
                    .find(|l| l.contains("error"))
                    .or(lines.last())
                    .map(|l| l.to_string());
                break ProbeEnd::Exited(
                    last.unwrap_or_else(|| crate::host::qemu::describe_exit(&st)),
                );
            }
            Recv::Interrupted(sig) => {
                break ProbeEnd::Exited(format!("interrupted by signal {sig}"));
            }
        }
    };
    q.stop();
    Ok((out, end))
}

/// What a verdict was based on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The timer probe.
    Probe,
    /// A boot under KVM that showed no kernel message in time, while the
    /// same image under TCG did.
    Watchdog,
    /// qemu reported "KVM internal error" during a boot.
    KvmError,
}

/// Whether KVM works on this host, and why we think so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub kvm: bool,
    /// The CPU model that worked (None: qemu's default).
    pub cpu: Option<String>,
    pub reason: String,
    pub source: Source,
}

/// What a verdict holds for: a changed qemu, kernel, boot or device means
/// a new probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    pub arch: String,
    pub qemu: PathBuf,
    pub qemu_version: String,
    pub kernel: String,
    pub boot_id: String,
    pub kvm_device: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    host: HostKey,
    verdict: Verdict,
    /// Seconds since the epoch, for people reading the file.
    written: u64,
}

const CACHE_FORMAT: u32 = 1;

/// The verdict cache: one JSON file per guest architecture in `dir`
/// (`/run/dib-create`, a tmpfs emptied at each boot of the host).
pub struct Cache {
    pub dir: PathBuf,
}

/// What the cache had.
#[derive(Debug)]
pub enum Cached {
    Hit(Verdict),
    Missing,
    /// A verdict for another host state; the fields that changed.
    Stale(Vec<&'static str>),
    Unreadable(String),
}

impl Cache {
    pub fn path(&self, arch: &str) -> PathBuf {
        self.dir.join(format!("accel-{arch}.json"))
    }

    pub fn load(&self, key: &HostKey) -> Cached {
        let path = self.path(&key.arch);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Cached::Missing,
            Err(e) => return Cached::Unreadable(format!("{}: {e}", path.display())),
        };
        let file: CacheFile = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(e) => return Cached::Unreadable(format!("{}: {e}", path.display())),
        };
        if file.format != CACHE_FORMAT {
            return Cached::Stale(vec!["format"]);
        }
        let changed = changed_fields(&file.host, key);
        if changed.is_empty() {
            Cached::Hit(file.verdict)
        } else {
            Cached::Stale(changed)
        }
    }

    /// Writes the verdict atomically (a temporary file renamed over the old one).
    pub fn store(&self, key: &HostKey, verdict: &Verdict) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(&key.arch);
        let file = CacheFile {
            format: CACHE_FORMAT,
            host: key.clone(),
            verdict: verdict.clone(),
            written: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)? + "\n";
        let tmp = self
            .dir
            .join(format!(".accel-{}.json.{}", key.arch, std::process::id()));
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map(|()| path)
    }
}

fn changed_fields(old: &HostKey, new: &HostKey) -> Vec<&'static str> {
    let mut c = Vec::new();
    if old.arch != new.arch {
        c.push("architecture");
    }
    if old.qemu != new.qemu {
        c.push("qemu path");
    }
    if old.qemu_version != new.qemu_version {
        c.push("qemu version");
    }
    if old.kernel != new.kernel {
        c.push("kernel release");
    }
    if old.boot_id != new.boot_id {
        c.push("boot");
    }
    if old.kvm_device != new.kvm_device {
        c.push("KVM device");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets of the labels in PROBE_CODE, as the comments give them.
    const TICK: usize = 0x23;
    const WAIT: usize = 0x27;
    const HALT: usize = 0x46;

    fn rel8_target(at: usize) -> usize {
        let rel = PROBE_CODE[at + 1] as i8 as isize;
        (at as isize + 2 + rel) as usize
    }

    #[test]
    fn probe_jumps_land_on_their_labels() {
        assert_eq!(PROBE_CODE[WAIT], 0xF4, "wait: is a hlt");
        assert_eq!(&PROBE_CODE[TICK..TICK + 4], &[0x8B, 0x1E, 0x6C, 0x04]);
        assert_eq!(PROBE_CODE[0x2C], 0x74, "je");
        assert_eq!(rel8_target(0x2C), WAIT);
        assert_eq!(PROBE_CODE[0x31], 0xE2, "loop");
        assert_eq!(rel8_target(0x31), TICK);
        assert_eq!(PROBE_CODE[0x47], 0xEB, "jmp");
        assert_eq!(rel8_target(0x47), HALT);
        assert_eq!(PROBE_CODE.len(), 0x49);
    }

    #[test]
    fn probe_prints_its_words() {
        // Every `mov al, imm8` followed by `out dx, al`, in order.
        let printed: Vec<u8> = PROBE_CODE
            .windows(3)
            .filter(|w| w[0] == 0xB0 && w[2] == 0xEE)
            .map(|w| w[1])
            .collect();
        assert_eq!(printed, b"probe\n.KVMOK\n");
        let disk = probe_disk();
        assert_eq!(&disk[510..], &[0x55, 0xAA]);
        assert_eq!(&disk[..PROBE_CODE.len()], PROBE_CODE);
    }

    /// A stream "probe\n", dots at `dot_times` (ms), "KVMOK\n".
    fn stream(start_ms: u64, dot_times: &[u64]) -> Vec<(Duration, u8)> {
        let ms = Duration::from_millis;
        let mut v: Vec<(Duration, u8)> = b"probe\n".iter().map(|b| (ms(start_ms), *b)).collect();
        v.extend(dot_times.iter().map(|t| (ms(*t), b'.')));
        let last = dot_times.last().copied().unwrap_or(start_ms);
        v.extend(b"KVMOK\n".iter().map(|b| (ms(last), *b)));
        v
    }

    #[test]
    fn real_time_ticks_pass() {
        // As measured under TCG: first byte at 0.19 s, dots 54.9 ms apart.
        let dots: Vec<u64> = (0..18).map(|i| 214 + i * 55).collect();
        let said = judge(&stream(189, &dots), &ProbeEnd::Finished, "KVM").unwrap();
        assert!(said.contains("arrived over 0.935 s"), "{said}");
    }

    #[test]
    fn a_burst_of_ticks_fails() {
        // As measured under the nested KVM: all 18 within 9 ms, at 3.43 s.
        let dots: Vec<u64> = (0..18).map(|i| 3434 + i / 2).collect();
        let why = judge(&stream(3433, &dots), &ProbeEnd::Finished, "KVM").unwrap_err();
        assert!(why.contains("arrived over 0.008 s"), "{why}");
        assert!(why.contains("not delivered in real time"), "{why}");
    }

    #[test]
    fn slow_ticks_fail() {
        let dots: Vec<u64> = (0..18).map(|i| 100 + i * 300).collect();
        let why = judge(&stream(50, &dots), &ProbeEnd::Finished, "KVM").unwrap_err();
        assert!(why.contains("slower than real time"), "{why}");
    }

    #[test]
    fn silence_and_stuck_ticks_and_exits_fail() {
        let t = ProbeEnd::TimedOut(Duration::from_secs(8));
        assert_eq!(
            judge(&[], &t, "KVM").unwrap_err(),
            "a test program under KVM printed nothing in 8 s"
        );
        let mut s = stream(100, &[150, 200]);
        s.truncate(8);
        let why = judge(&s, &t, "KVM").unwrap_err();
        assert!(why.contains("saw 2 of 18 timer ticks"), "{why}");
        let why = judge(
            &[],
            &ProbeEnd::Exited("qemu-system-x86_64: error: failed to set MSR 0x10a".into()),
            "KVM with -cpu host",
        )
        .unwrap_err();
        assert_eq!(
            why,
            "KVM with -cpu host failed: qemu-system-x86_64: error: failed to set MSR 0x10a"
        );
    }

    fn key() -> HostKey {
        HostKey {
            arch: "x86_64".into(),
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            qemu_version: "QEMU emulator version 10.0.2".into(),
            kernel: "6.1.0".into(),
            boot_id: "b".into(),
            kvm_device: "/dev/kvm".into(),
        }
    }

    #[test]
    fn cache_round_trip_and_staleness() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache {
            dir: d.path().join("sub"),
        };
        assert!(matches!(cache.load(&key()), Cached::Missing));
        let v = Verdict {
            kvm: false,
            cpu: None,
            reason: "r".into(),
            source: Source::Watchdog,
        };
        let p = cache.store(&key(), &v).unwrap();
        assert_eq!(p, d.path().join("sub/accel-x86_64.json"));
        match cache.load(&key()) {
            Cached::Hit(got) => assert_eq!(got, v),
            other => panic!("{other:?}"),
        }
        let mut k = key();
        k.qemu_version = "QEMU emulator version 10.1.0".into();
        k.kernel = "6.2".into();
        match cache.load(&k) {
            Cached::Stale(f) => assert_eq!(f, ["qemu version", "kernel release"]),
            other => panic!("{other:?}"),
        }
        // No temporary file is left.
        let names: Vec<_> = std::fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["accel-x86_64.json"]);
        std::fs::write(cache.path("x86_64"), "{ not json").unwrap();
        assert!(matches!(cache.load(&key()), Cached::Unreadable(_)));
    }

    #[test]
    fn an_unwritable_cache_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, "").unwrap();
        let cache = Cache {
            dir: file.join("below-a-file"),
        };
        let v = Verdict {
            kvm: true,
            cpu: Some("host".into()),
            reason: "r".into(),
            source: Source::Probe,
        };
        assert!(cache.store(&key(), &v).is_err());
    }
}
