//! The executor against the recording host: the order of its effects and of
//! their undos, without root. The plan is real (made from elements written
//! here); commands, mounts and loop devices are only recorded, and the files
//! the build writes land in a scratch directory.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::Parser;

use crate::host::fake::{Event, FakeHost};
use crate::host::{CmdError, Entry, Output};
use crate::plan::Plan;

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let s = Scratch {
            dir: tempfile::tempdir().unwrap(),
        };
        s.hook("os", "root.d", "true");
        std::fs::write(
            s.path().join("elements/os/element-provides"),
            "operating-system\n",
        )
        .unwrap();
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Element `element` gets the hook `phase/50-<element>`.
    fn hook(&self, element: &str, phase: &str, body: &str) {
        let d = self.path().join("elements").join(element).join(phase);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join(format!("50-{element}"));
        std::fs::write(&f, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn plan(&self, args: &[&str]) -> Plan {
        let out = self.path().join("out/img");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let mut argv = vec!["dib-create", "-n", "-o", out.to_str().unwrap()];
        argv.extend(args);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let env: BTreeMap<String, String> = [
            ("ELEMENTS_PATH", self.path().join("elements")),
            ("DIB_CREATE_BUILD_ROOT", self.path().join("builds")),
            ("HOME", self.path().join("home")),
            ("TMPDIR", self.path().to_path_buf()),
            ("PATH", PathBuf::from("/usr/sbin:/usr/bin:/sbin:/bin")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
        .collect();
        crate::plan::build_with_env(&cli, &env).unwrap()
    }
}

/// A fake host on which root.d makes a tree, the writers create their
/// output file, and the hook named `fail` (if any) exits 3.
fn host(fail: Option<&'static str>) -> (FakeHost, Arc<Mutex<Vec<Event>>>) {
    let h = FakeHost::new().on_run(move |cmd| {
        let what = cmd.what().to_string();
        if Some(what.as_str()) == fail {
            return Err(CmdError::Failed {
                what,
                cmdline: "hook".into(),
                status: "exited with code 3".into(),
                code: Some(3),
                tail: "about to fail".into(),
            });
        }
        if what == "sourcing environment.d files" {
            // Outside the chroot the real bash sources the real files; the
            // chroot's files are not on this host, so the environment passes
            // through unchanged there.
            if !cmd.in_chroot() {
                return cmd.clone().run_here();
            }
            let env = cmd
                .env_list()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            return Ok(Output {
                stdout: crate::element::envd::dump(&env),
                ..Default::default()
            });
        }
        if what.starts_with("root.d/")
            && let Some(t) = cmd.env_value("TARGET_ROOT")
        {
            for d in ["bin", "etc", "usr/sbin"] {
                std::fs::create_dir_all(Path::new(t).join(d)).unwrap();
            }
        }
        let args: Vec<String> = cmd
            .argv()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        if let Some(i) = args.iter().position(|a| a == "--file") {
            std::fs::write(&args[i + 1], "an archive").unwrap();
        }
        Ok(Output::default())
    });
    let log = h.events.clone();
    (h, log)
}

/// Every mount and loop device made was undone once, in reverse order of
/// making; returns the targets made.
fn assert_undone_in_reverse(events: &[Event]) -> Vec<PathBuf> {
    let mut open: Vec<Entry> = Vec::new();
    let mut made = Vec::new();
    let mut loops = 0;
    for e in events {
        match e {
            Event::Mount(t) => {
                open.push(Entry::Mount(t.clone()));
                made.push(t.clone());
            }
            Event::Loop(_) => {
                // The fake numbers its devices in order.
                open.push(Entry::Loop(PathBuf::from(format!("/dev/fakeloop{loops}"))));
                loops += 1;
            }
            Event::Undo(u @ (Entry::Mount(_) | Entry::Loop(_))) => {
                let last = open.pop();
                assert_eq!(last.as_ref(), Some(u), "undone out of order: {events:#?}");
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "never undone: {open:?}\n{events:#?}");
    made
}

fn runs(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Run(w) => Some(w.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_tar_build_runs_the_phases_in_order_and_undoes_the_chroot() {
    let s = Scratch::new();
    for phase in ["pre-install.d", "post-install.d", "finalise.d", "cleanup.d"] {
        s.hook(&format!("e{}", phase.len()), phase, "true");
    }
    let plan = s.plan(&["-t", "tar", "os", "e13", "e14", "e10", "e9"]);
    let (h, log) = host(None);
    super::execute::execute(&plan, Box::new(h)).unwrap();
    let events = FakeHost::log(&log);
    let ran = runs(&events);
    let order = [
        "root.d/50-os",
        "pre-install.d/50-e13",
        "post-install.d/50-e14",
    ];
    let pos: Vec<usize> = order
        .iter()
        .map(|h| {
            ran.iter()
                .position(|r| r == h)
                .unwrap_or_else(|| panic!("{h} did not run: {ran:?}"))
        })
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{ran:?}");
    let made = assert_undone_in_reverse(&events);
    // The chroot twice (tree phases, finalise), proc first each time.
    let procs = made.iter().filter(|m| m.ends_with("mnt/proc")).count();
    assert_eq!(procs, 2, "{made:?}");
    assert!(s.path().join("out/img.tar").is_file());
    assert!(s.path().join("out/img.manifest.json").is_file());
    // The build directory is gone.
    let left: Vec<_> = std::fs::read_dir(s.path().join("builds"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_failing_hook_in_each_phase_undoes_exactly_what_was_made() {
    for phase in crate::phase::hook_dirs() {
        let s = Scratch::new();
        s.hook("fails", phase, "exit 3");
        let plan = s.plan(&[
            "-t",
            "tar,raw",
            "--image-size",
            "0.1",
            "os",
            "block-device-mbr",
            "fails",
        ]);
        let (h, log) = host(Some(Box::leak(
            format!("{phase}/50-fails").into_boxed_str(),
        )));
        let err = super::execute::execute(&plan, Box::new(h)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("50-fails") && msg.contains(phase),
            "{phase}: {msg}"
        );
        let events = FakeHost::log(&log);
        assert_undone_in_reverse(&events);
        // Nothing half-written at the output path.
        for ext in ["tar", "raw", "manifest.json"] {
            assert!(
                !s.path().join(format!("out/img.{ext}")).exists(),
                "{phase}: .{ext}"
            );
        }
    }
}

#[test]
fn a_disk_build_attaches_one_loop_and_detaches_it_before_the_outputs() {
    let s = Scratch::new();
    let plan = s.plan(&["-t", "raw", "--image-size", "0.1", "os", "block-device-efi"]);
    let (h, log) = host(None);
    super::execute::execute(&plan, Box::new(h)).unwrap();
    let events = FakeHost::log(&log);
    assert_undone_in_reverse(&events);
    let loops = events
        .iter()
        .filter(|e| matches!(e, Event::Loop(_)))
        .count();
    assert_eq!(loops, 1, "{events:#?}");
    let detached = events
        .iter()
        .position(|e| matches!(e, Event::Undo(Entry::Loop(_))))
        .unwrap();
    let esp = events
        .iter()
        .position(|e| matches!(e, Event::Run(w) if w.starts_with("making vfat")))
        .expect("the ESP is made");
    assert!(esp < detached, "filesystems are made before the loop goes");
    assert!(s.path().join("out/img.raw").is_file());
}

#[test]
fn a_teardown_that_fails_keeps_its_entry_and_the_build_directory() {
    let s = Scratch::new();
    let plan = s.plan(&["-t", "tar", "os"]);
    let (h, log) = host(None);
    // The chroot's /proc stays busy: the build fails with it, naming it,
    // and the journal keeps exactly that entry for `dib-create --cleanup`.
    let busy = FailProc(h);
    let err = super::execute::execute(&plan, Box::new(busy)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("unmounting") && msg.contains("proc"), "{msg}");
    let dirs: Vec<PathBuf> = std::fs::read_dir(s.path().join("builds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(dirs.len(), 1, "the build directory is kept");
    let journal = std::fs::read_to_string(dirs[0].join("teardown.journal")).unwrap();
    assert_eq!(journal.lines().count(), 1, "{journal}");
    assert!(
        journal.starts_with("mount\t") && journal.trim_end().ends_with("/proc"),
        "{journal}"
    );
    assert!(!FakeHost::log(&log).is_empty());
}

/// A host whose unmount of any `proc` fails.
struct FailProc(FakeHost);

impl crate::host::Host for FailProc {
    fn run(&mut self, cmd: crate::host::Cmd) -> Result<Output, CmdError> {
        self.0.run(cmd)
    }
    fn mount(&mut self, s: &crate::host::mount::Source, t: &Path) -> anyhow::Result<()> {
        self.0.mount(s, t)
    }
    fn attach_loop(&mut self, f: &Path, o: u64, n: Option<u64>) -> anyhow::Result<PathBuf> {
        self.0.attach_loop(f, o, n)
    }
    fn add_partitions(&mut self, d: &Path) -> anyhow::Result<Vec<PathBuf>> {
        self.0.add_partitions(d)
    }
    fn undo(&mut self, e: &Entry) -> anyhow::Result<()> {
        self.0.undo(e)?;
        match e {
            Entry::Mount(p) if p.ends_with("proc") => anyhow::bail!("busy"),
            _ => Ok(()),
        }
    }
    fn stop_orphans(&mut self) {}
    fn mounts_under(&self, d: &Path) -> anyhow::Result<Vec<PathBuf>> {
        self.0.mounts_under(d)
    }
    fn capabilities(&self) -> crate::host::Capabilities {
        self.0.capabilities()
    }
}
