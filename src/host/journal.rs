//! The teardown journal: every host side effect of a build (mount, loop device,
//! file swapped into the tree) is recorded here *as it is made*, in a file in the
//! build directory. It is undone in reverse on success, on failure and on
//! signals; a killed build's journal is replayed by the next run or by
//! `dib-create --cleanup DIR`.
//!
//! The journal is the guard for the whole build: `close()` reports errors,
//! `Drop` is the best-effort fallback.

use anyhow::Context;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Cmd, CmdError, Host, Output, mount};
use crate::log;

/// One undoable host change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A mount at this target; undone by unmounting it.
    Mount(PathBuf),
    /// A loop device we attached; undone by detaching it.
    Loop(PathBuf),
    /// A file we created in the tree; undone by removing it.
    CreatedFile(PathBuf),
    /// An empty directory we created; undone by rmdir (never recursive).
    CreatedDir(PathBuf),
    /// A chroot we run processes in; undone by killing whatever still runs
    /// inside it (daemons, orphans of an interrupted hook), so its mounts can go.
    Chroot(PathBuf),
    /// A file we moved aside to `.1`; undone by moving it back over `.0`.
    Replaced(PathBuf, PathBuf),
    /// An output being written under its temporary name; removed if the
    /// build never commits it. Not part of the stack that `undo_until`
    /// takes down (an output outlives the mounts it was made under).
    Partial(PathBuf),
}

impl Entry {
    fn encode(&self) -> String {
        let (kind, a, b) = match self {
            Entry::Mount(p) => ("mount", p, None),
            Entry::Loop(p) => ("loop", p, None),
            Entry::CreatedFile(p) => ("created", p, None),
            Entry::CreatedDir(p) => ("createddir", p, None),
            Entry::Chroot(p) => ("chroot", p, None),
            Entry::Replaced(p, q) => ("replaced", p, Some(q)),
            Entry::Partial(p) => ("partial", p, None),
        };
        match b {
            Some(q) => format!("{kind}\t{}\t{}", a.display(), q.display()),
            None => format!("{kind}\t{}", a.display()),
        }
    }

    fn decode(line: &str) -> Option<Entry> {
        let mut f = line.split('\t');
        let kind = f.next()?;
        let a = PathBuf::from(f.next()?);
        Some(match kind {
            "mount" => Entry::Mount(a),
            "loop" => Entry::Loop(a),
            "created" => Entry::CreatedFile(a),
            "createddir" => Entry::CreatedDir(a),
            "chroot" => Entry::Chroot(a),
            "replaced" => Entry::Replaced(a, PathBuf::from(f.next()?)),
            "partial" => Entry::Partial(a),
            _ => return None,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Entry::Mount(p) => format!("unmounting {}", p.display()),
            Entry::Loop(p) => format!("detaching {}", p.display()),
            Entry::CreatedFile(p) | Entry::CreatedDir(p) | Entry::Partial(p) => {
                format!("removing {}", p.display())
            }
            Entry::Replaced(p, _) => format!("restoring {}", p.display()),
            Entry::Chroot(p) => format!("stopping processes in {}", p.display()),
        }
    }
}

/// Undoes `e` on this machine.
pub fn undo_on_host(e: &Entry) -> anyhow::Result<()> {
    // What we made in the tree was recorded at its real path; if a symlink
    // has since been put in the way, the path leads elsewhere: leave it.
    if let Entry::CreatedFile(p) | Entry::CreatedDir(p) | Entry::Replaced(p, _) = e
        && !super::tree::unchanged(p)
    {
        anyhow::bail!(
            "not undoing it: a directory on the way to {} became a symlink",
            p.display()
        );
    }
    match e {
        Entry::Mount(p) => mount::unmount(p),
        Entry::Loop(p) => super::loopdev::detach(p),
        Entry::CreatedFile(p) => remove_if_exists(p),
        Entry::Partial(p) => remove_partial(p),
        Entry::CreatedDir(p) => match fs::remove_dir(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(anyhow::anyhow!("removing directory {}: {e}", p.display()))
            }
            _ => Ok(()),
        },
        Entry::Replaced(p, saved) => restore(p, saved),
        Entry::Chroot(p) => super::procs::kill_inside(p),
    }
}

/// Puts back what `p` held before we wrote it. We only ever write regular
/// files, so a symlink at `p` means an element replaced it on purpose (as
/// resolvconf does): keep theirs. Elements may also leave the file they want
/// as the saved copy (DIB's `resolv.conf.ORIG` interface).
fn restore(p: &Path, saved: &Path) -> anyhow::Result<()> {
    let is_symlink = p
        .symlink_metadata()
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    if is_symlink {
        return remove_if_exists(saved);
    }
    remove_if_exists(p)?;
    if saved.symlink_metadata().is_ok() {
        fs::rename(saved, p)
            .map_err(|err| anyhow::anyhow!("moving {} back: {err}", saved.display()))?;
    }
    Ok(())
}

fn remove_if_exists(p: &Path) -> anyhow::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::anyhow!("removing {}: {e}", p.display()))
        }
        _ => Ok(()),
    }
}

/// A partial output: a file, or the directory of an ostree repository.
fn remove_partial(p: &Path) -> anyhow::Result<()> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p)
            .map_err(|e| anyhow::anyhow!("removing the partial output {}: {e}", p.display())),
        _ => remove_if_exists(p),
    }
}

/// The journal of one build, holding the build's handle to the host: every
/// command, mount and loop device goes through it, and what must be undone is
/// written down as it is made.
pub struct Journal {
    file: PathBuf,
    entries: Vec<Entry>,
    host: Box<dyn Host>,
}

impl Journal {
    /// A new, empty journal stored at `file`, acting on `host`.
    pub fn create(file: impl Into<PathBuf>, host: Box<dyn Host>) -> anyhow::Result<Self> {
        let j = Journal {
            file: file.into(),
            entries: Vec::new(),
            host,
        };
        j.save()?;
        Ok(j)
    }

    /// Reads a journal a previous (killed) build left behind.
    pub fn load(file: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let file = file.into();
        let text = fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("reading journal {}: {e}", file.display()))?;
        let entries = text.lines().filter_map(Entry::decode).collect();
        Ok(Journal {
            file,
            entries,
            host: Box::new(super::RealHost),
        })
    }

    /// The host this journal acts on.
    pub fn host(&mut self) -> &mut dyn Host {
        self.host.as_mut()
    }

    /// Runs a command on the host, its output streamed to the log.
    pub fn run(&mut self, cmd: Cmd) -> Result<Output, CmdError> {
        self.host.run(cmd)
    }

    /// Runs a command on the host and returns its stdout, trailing newline trimmed.
    pub fn read(&mut self, cmd: Cmd) -> Result<String, CmdError> {
        let out = self.host.run(cmd.capture())?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Mounts `source` at `target` and records it; returns the entry.
    pub fn mount(&mut self, source: &mount::Source, target: &Path) -> anyhow::Result<Entry> {
        self.host.mount(source, target)?;
        let e = Entry::Mount(target.to_path_buf());
        self.record(e.clone())?;
        Ok(e)
    }

    /// Mounts `source` on a directory of the image's tree (held open, so
    /// the mount lands there whatever the names leading to it now say) and
    /// records its real path.
    pub fn mount_in(
        &mut self,
        source: &mount::Source,
        dir: &super::tree::Dir,
    ) -> anyhow::Result<Entry> {
        let real = dir.real_path()?;
        self.host
            .mount(source, &dir.fd_path())
            .with_context(|| format!("mounting on {}", real.display()))?;
        let e = Entry::Mount(real);
        self.record(e.clone())?;
        Ok(e)
    }

    /// Attaches a loop device over `file` and records it.
    pub fn attach_loop(&mut self, file: &Path) -> anyhow::Result<(PathBuf, Entry)> {
        self.attach_loop_range(file, 0, None)
    }

    /// Attaches a loop device over `size` bytes of `file` from `offset` (a
    /// logical volume's extents) and records it.
    pub fn attach_loop_range(
        &mut self,
        file: &Path,
        offset: u64,
        size: Option<u64>,
    ) -> anyhow::Result<(PathBuf, Entry)> {
        let dev = self.host.attach_loop(file, offset, size)?;
        let e = Entry::Loop(dev.clone());
        self.record(e.clone())?;
        Ok((dev, e))
    }

    /// Records a change that has just been made.
    pub fn record(&mut self, e: Entry) -> anyhow::Result<()> {
        log::debug(&format!("journal: {}", e.encode()));
        self.entries.push(e);
        self.save()
    }

    /// Undoes the most recent entries back to (and including) `e`, e.g. to
    /// take down the chroot mounts before the tree is archived.
    pub fn undo_until(&mut self, e: &Entry) -> anyhow::Result<()> {
        let Some(pos) = self.entries.iter().rposition(|x| x == e) else {
            return Err(anyhow::anyhow!(
                "undoing up to {}: the journal has no such entry (it was undone already, or never made)",
                e.describe()
            ));
        };
        let mut errors = Vec::new();
        let mut partials = Vec::new();
        while self.entries.len() > pos {
            let entry = self.entries.pop().expect("non-empty");
            if matches!(entry, Entry::Partial(_)) {
                partials.push(entry);
                continue;
            }
            if let Err(err) = self.host.undo(&entry) {
                errors.push(format!("{}: {err:#}", entry.describe()));
                // Keep what failed recorded so a later cleanup can retry it.
                self.entries.insert(pos, entry);
                break;
            }
        }
        partials.reverse();
        self.entries.extend(partials);
        self.save()?;
        errors_to_result(errors)
    }

    /// Unmounts what hooks mounted below `root` themselves (a package cache
    /// bind, a pip cache), deepest first, as DIB's unmount_dir does after
    /// post-root.d and at the end of a build; the journal's own mounts are
    /// left to it. Returns what was unmounted.
    pub fn unmount_strays(&mut self, root: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let strays = self.strays_under(root)?;
        for m in &strays {
            log::warn(&format!(
                "a hook left {} mounted; unmounting it, as diskimage-builder does",
                m.display()
            ));
            self.host.undo(&Entry::Mount(m.clone()))?;
        }
        Ok(strays)
    }

    /// Mounts below `root` (not `root` itself) that the journal did not
    /// make, deepest first.
    pub fn strays_under(&self, root: &Path) -> anyhow::Result<Vec<PathBuf>> {
        // Compared as real paths: the mount table has no symlinks in it.
        let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let mut ours: std::collections::HashSet<PathBuf> = self
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Mount(p) => Some(real(p)),
                _ => None,
            })
            .collect();
        // The root itself is the caller's (an overlay, the mounted image).
        ours.insert(real(root));
        let strays: Vec<PathBuf> = self
            .host
            .mounts_under(root)?
            .into_iter()
            .filter(|m| !ours.contains(&real(m)))
            .collect();
        Ok(strays)
    }

    /// Undoes everything in reverse; keeps going past failures and reports them all.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.undo_all()
    }

    fn undo_all(&mut self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        let mut failed = Vec::new();
        while let Some(entry) = self.entries.pop() {
            if let Err(err) = self.host.undo(&entry) {
                errors.push(format!("{}: {err:#}", entry.describe()));
                failed.push(entry);
            }
        }
        failed.reverse();
        self.entries = failed;
        self.save()?;
        errors_to_result(errors)
    }

    /// Keeps the entries `keep` accepts; returns the others, which are
    /// forgotten (not undone).
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> Vec<Entry> {
        let (kept, dropped): (Vec<Entry>, Vec<Entry>) =
            self.entries.drain(..).partition(|e| keep(e));
        self.entries = kept;
        dropped
    }

    /// The entries still recorded.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn save(&self) -> anyhow::Result<()> {
        let mut text = String::new();
        for e in &self.entries {
            text.push_str(&e.encode());
            text.push('\n');
        }
        let tmp = self.file.with_extension("tmp");
        let mut f = fs::File::create(&tmp)
            .map_err(|e| anyhow::anyhow!("writing journal {}: {e}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &self.file)?;
        Ok(())
    }
}

fn errors_to_result(errors: Vec<String>) -> anyhow::Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("teardown failed: {}", errors.join("; ")))
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if !self.entries.is_empty()
            && let Err(e) = self.undo_all()
        {
            log::warn(&format!("{e:#}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::{Event, FakeHost};
    use std::sync::{Arc, Mutex};

    fn journal(dir: &Path, fail: Option<&str>) -> (Journal, Arc<Mutex<Vec<Event>>>) {
        let mut host = FakeHost::new();
        if let Some(f) = fail {
            host = host.fail_undo(Entry::Mount(f.into()));
        }
        let log = host.events.clone();
        (Journal::create(dir.join("j"), Box::new(host)).unwrap(), log)
    }

    fn undone(log: &Arc<Mutex<Vec<Event>>>) -> Vec<String> {
        FakeHost::log(log)
            .into_iter()
            .filter_map(|e| match e {
                Event::Undo(e) => Some(e.encode()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn undoes_in_reverse_and_persists() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, log) = journal(d.path(), None);
        j.record(Entry::Mount("/a".into())).unwrap();
        j.record(Entry::Loop("/dev/loop3".into())).unwrap();
        j.record(Entry::Mount("/a/proc".into())).unwrap();
        let on_disk = Journal::load(d.path().join("j")).unwrap();
        assert_eq!(on_disk.entries().len(), 3);
        std::mem::forget(on_disk);
        j.close().unwrap();
        assert_eq!(
            undone(&log),
            ["mount\t/a/proc", "loop\t/dev/loop3", "mount\t/a"]
        );
        let text = fs::read_to_string(d.path().join("j")).unwrap();
        assert!(text.is_empty());
    }

    #[test]
    fn strays_below_the_root_are_unmounted_and_ours_are_left() {
        let d = tempfile::tempdir().unwrap();
        let host = FakeHost::new()
            .with_foreign_mount("/t/tmp/yum")
            .with_foreign_mount("/t/tmp/yum/cache")
            .with_foreign_mount("/elsewhere/x")
            .with_foreign_mount("/t/proc");
        let log = host.events.clone();
        let mut j = Journal::create(d.path().join("j"), Box::new(host)).unwrap();
        j.record(Entry::Mount("/t/proc".into())).unwrap();
        let strays = j.unmount_strays(Path::new("/t")).unwrap();
        assert_eq!(
            strays,
            [
                PathBuf::from("/t/tmp/yum/cache"),
                PathBuf::from("/t/tmp/yum")
            ]
        );
        assert_eq!(
            undone(&log),
            ["mount\t/t/tmp/yum/cache", "mount\t/t/tmp/yum"]
        );
        assert_eq!(j.entries(), [Entry::Mount("/t/proc".into())]);
        j.entries.clear();
    }

    #[test]
    fn continues_past_failures_and_keeps_them() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, log) = journal(d.path(), Some("/b"));
        j.record(Entry::Mount("/a".into())).unwrap();
        j.record(Entry::Mount("/b".into())).unwrap();
        j.record(Entry::Mount("/c".into())).unwrap();
        let err = j.undo_all().unwrap_err().to_string();
        assert!(err.contains("unmounting /b"), "{err}");
        assert_eq!(undone(&log).len(), 3);
        assert_eq!(j.entries(), [Entry::Mount("/b".into())]);
        j.entries.clear();
    }

    #[test]
    fn undo_until_stops_at_entry() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, log) = journal(d.path(), None);
        j.record(Entry::Loop("/dev/loop1".into())).unwrap();
        j.record(Entry::Mount("/t".into())).unwrap();
        j.record(Entry::Mount("/t/proc".into())).unwrap();
        j.undo_until(&Entry::Mount("/t".into())).unwrap();
        assert_eq!(j.entries(), [Entry::Loop("/dev/loop1".into())]);
        assert_eq!(undone(&log).len(), 2);
        // An entry that is not there is an error, never a silent no-op.
        let e = j.undo_until(&Entry::Mount("/t".into())).unwrap_err();
        assert!(e.to_string().contains("no such entry"), "{e}");
        j.entries.clear();
    }

    #[test]
    fn a_partial_output_outlives_the_mounts_it_was_written_under() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, _log) = journal(d.path(), None);
        let out = d.path().join(".img.tar.partial");
        j.record(Entry::Loop("/dev/loop1".into())).unwrap();
        fs::write(&out, "half").unwrap();
        j.record(Entry::Partial(out.clone())).unwrap();
        j.undo_until(&Entry::Loop("/dev/loop1".into())).unwrap();
        assert!(out.exists());
        assert_eq!(j.entries(), [Entry::Partial(out.clone())]);
        // A build that never commits it loses it at teardown.
        j.close().unwrap();
        assert!(!out.exists());
    }

    #[test]
    fn encoding_round_trips() {
        for e in [
            Entry::Mount("/x y".into()),
            Entry::Loop("/dev/loop0".into()),
            Entry::CreatedFile("/t/usr/sbin/policy-rc.d".into()),
            Entry::CreatedDir("/t/tmp/in_target.d".into()),
            Entry::Replaced("/t/etc/resolv.conf".into(), "/t/etc/resolv.conf.dib".into()),
            Entry::Partial("/out/.img.raw.1-0.dib-create-partial".into()),
        ] {
            assert_eq!(Entry::decode(&e.encode()), Some(e));
        }
    }
}
