//! A recording stand-in for the host: commands, mounts and loop devices are
//! written down instead of made, so the executor's order of effects and of
//! their undos can be checked without root. A test decides what each
//! command does (create files, fail) through [`FakeHost::on_run`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Capabilities, Cmd, CmdError, Entry, Host, Output, mount};

/// One thing the executor asked of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A command, by its description ("install.d/50-hook", "writing ...").
    Run(String),
    /// A mount at this target.
    Mount(PathBuf),
    /// A loop device over this file.
    Loop(PathBuf),
    /// Partition nodes of this loop device.
    Partitions(PathBuf),
    /// An undo, as the journal describes it ("unmounting /x").
    Undo(Entry),
}

/// What a command does on the fake host.
pub type OnRun = Box<dyn FnMut(&Cmd) -> Result<Output, CmdError> + Send>;

/// The fake host. Clones share one event log.
pub struct FakeHost {
    pub events: Arc<Mutex<Vec<Event>>>,
    on_run: OnRun,
    caps: Capabilities,
    loops: usize,
    fail_undo: Option<Entry>,
    /// Mounts made behind the journal's back (by a hook), until undone.
    foreign: Vec<PathBuf>,
}

impl FakeHost {
    /// A host with every capability, on which every command succeeds.
    pub fn new() -> Self {
        FakeHost {
            events: Arc::new(Mutex::new(Vec::new())),
            on_run: Box::new(|_| Ok(Output::default())),
            caps: Capabilities {
                root: true,
                loop_devices: true,
            },
            loops: 0,
            fail_undo: None,
            foreign: Vec::new(),
        }
    }

    /// Undoing `e` fails ("busy"), as a mount in use would.
    pub fn fail_undo(mut self, e: Entry) -> Self {
        self.fail_undo = Some(e);
        self
    }

    /// A mount at `target` that a hook made, not the journal.
    pub fn with_foreign_mount(mut self, target: impl Into<PathBuf>) -> Self {
        self.foreign.push(target.into());
        self
    }

    /// Changes what the host offers.
    pub fn with_capabilities(mut self, caps: Capabilities) -> Self {
        self.caps = caps;
        self
    }

    /// Decides what each command does.
    pub fn on_run(
        mut self,
        f: impl FnMut(&Cmd) -> Result<Output, CmdError> + Send + 'static,
    ) -> Self {
        self.on_run = Box::new(f);
        self
    }

    /// What the executor did, in order.
    pub fn log(events: &Arc<Mutex<Vec<Event>>>) -> Vec<Event> {
        events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push(&self, e: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }
}

impl Default for FakeHost {
    fn default() -> Self {
        Self::new()
    }
}

impl Host for FakeHost {
    fn run(&mut self, cmd: Cmd) -> Result<Output, CmdError> {
        self.push(Event::Run(cmd.what().to_string()));
        (self.on_run)(&cmd)
    }

    fn mount(&mut self, _source: &mount::Source, target: &Path) -> anyhow::Result<()> {
        // A directory held open (`/proc/self/fd/N`) is recorded by its path.
        let target = if target.starts_with("/proc/self/fd") {
            std::fs::read_link(target).unwrap_or_else(|_| target.to_path_buf())
        } else {
            target.to_path_buf()
        };
        self.push(Event::Mount(target));
        Ok(())
    }

    fn attach_loop(
        &mut self,
        file: &Path,
        _offset: u64,
        _size: Option<u64>,
    ) -> anyhow::Result<PathBuf> {
        self.push(Event::Loop(file.to_path_buf()));
        self.loops += 1;
        Ok(PathBuf::from(format!("/dev/fakeloop{}", self.loops - 1)))
    }

    fn add_partitions(&mut self, dev: &Path) -> anyhow::Result<Vec<PathBuf>> {
        self.push(Event::Partitions(dev.to_path_buf()));
        Ok((1..=8)
            .map(|n| PathBuf::from(format!("{}p{n}", dev.display())))
            .collect())
    }

    fn undo(&mut self, entry: &Entry) -> anyhow::Result<()> {
        self.push(Event::Undo(entry.clone()));
        if self.fail_undo.as_ref() == Some(entry) {
            anyhow::bail!("busy");
        }
        if let Entry::Mount(p) = entry {
            self.foreign.retain(|m| m != p);
        }
        // Files in the tree are real (a scratch directory): undo those for real.
        match entry {
            Entry::CreatedFile(_)
            | Entry::CreatedDir(_)
            | Entry::Replaced(..)
            | Entry::Partial(_) => super::journal::undo_on_host(entry),
            _ => Ok(()),
        }
    }

    fn stop_orphans(&mut self) {}

    fn mounts_under(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = self
            .foreign
            .iter()
            .filter(|m| m.starts_with(dir))
            .cloned()
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        Ok(v)
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }
}
