//! Gathering a report: the timeline from the log's events, the disk from the
//! block-device graph and the measured filesystems, the contents from the
//! tree, the inputs from the plan. Reading only; the executor decides when.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::model::*;
use crate::blockdev::config::Label;
use crate::blockdev::partition::PartitionExtent;
use crate::blockdev::{Graph, Spec};
use crate::log::{Event, Stamped};
use crate::plan::Plan;

/// How many directories the report lists, and how deep it looks for them.
const TOP_DIRECTORIES: usize = 20;
const DIRECTORY_DEPTH: usize = 3;

/// What the executor learns for the report as the build goes.
#[derive(Debug, Default)]
pub struct Facts {
    pub disk: Option<DiskPicture>,
    pub contents: Option<Contents>,
    pub outputs: Vec<OutputFile>,
}

/// The whole report of a build that ended with `error` (none: it succeeded).
pub fn report(plan: &Plan, facts: Facts, error: Option<String>, events: &[Stamped]) -> Report {
    // Every event is stamped on the same clock, so none is later than now.
    let seconds = crate::log::elapsed();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut inputs = inputs(plan);
    inputs.outputs = facts.outputs;
    Report {
        image: plan.image_name.clone(),
        arch: plan.arch.clone(),
        ok: error.is_none(),
        error,
        seconds,
        started_at: now.saturating_sub(seconds as u64),
        timeline: timeline(events, seconds),
        disk: facts.disk,
        contents: facts.contents,
        inputs,
    }
}

/// One bar per hook that ran or was restored and per task of the tool; a
/// hook or task still running when the build stopped ends at `end`, failed.
pub fn timeline(events: &[Stamped], end: f64) -> Vec<Bar> {
    let mut bars = Vec::new();
    let mut open: HashMap<(String, String), (usize, f64)> = HashMap::new();
    for Stamped { time, event } in events {
        match event {
            Event::HookStart {
                phase,
                element,
                hook,
            } => {
                open.insert((phase.clone(), hook.clone()), (bars.len(), *time));
                bars.push(bar(phase, hook, Some(element), BarKind::Hook, *time));
            }
            Event::TaskStart { group, task } => {
                open.insert((group.clone(), task.clone()), (bars.len(), *time));
                bars.push(bar(group, task, None, BarKind::Step, *time));
            }
            Event::HookEnd {
                phase,
                hook: label,
                ok,
                ..
            }
            | Event::TaskEnd {
                group: phase,
                task: label,
                ok,
                ..
            } => {
                if let Some((i, start)) = open.remove(&(phase.clone(), label.clone())) {
                    bars[i].seconds = time - start;
                    bars[i].ok = *ok;
                }
            }
            Event::Restored {
                phase,
                element,
                hook,
            } => {
                let mut b = bar(phase, hook, Some(element), BarKind::Restored, *time);
                b.ok = true;
                bars.push(b);
            }
            _ => {}
        }
    }
    for (i, start) in open.into_values() {
        bars[i].seconds = (end - start).max(0.0);
    }
    bars
}

fn bar(phase: &str, label: &str, element: Option<&String>, kind: BarKind, start: f64) -> Bar {
    Bar {
        phase: phase.to_string(),
        label: label.to_string(),
        element: element.cloned(),
        start,
        seconds: 0.0,
        kind,
        ok: false,
    }
}

/// The elements with their directories, the lockfile and the epoch.
pub fn inputs(plan: &Plan) -> Inputs {
    let elements = plan
        .elements
        .iter()
        .map(|name| ElementInput {
            name: name.clone(),
            path: plan
                .element_paths
                .get(name)
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            overrides: plan
                .element_overrides
                .get(name)
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect(),
            requested: plan.requested_elements.contains(name),
        })
        .collect();
    let lockfile = match &plan.lock {
        crate::lock::Request::Locked { path, .. } => Some(LockInput {
            path: path.display().to_string(),
            sha256: crate::digest::sha256_of(path).unwrap_or_default(),
        }),
        _ => None,
    };
    Inputs {
        elements,
        lockfile,
        source_date_epoch: plan.settings.source_date_epoch,
        outputs: Vec::new(),
    }
}

/// A finished output as the report lists it.
pub fn output_file(path: &Path, kind: &str, sha256: String) -> OutputFile {
    OutputFile {
        path: path.display().to_string(),
        kind: kind.to_string(),
        bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
        sha256,
    }
}

/// The partitions of the disk with their filesystems; `usage` holds the
/// measured (total, used) bytes of each filesystem node.
pub fn disk_picture(
    graph: &Graph,
    size: u64,
    extents: &[PartitionExtent],
    usage: &BTreeMap<String, (u64, u64)>,
) -> DiskPicture {
    let fs_on = |base: &str| filesystem_on(graph, base, usage);
    let table = graph.tables().first().map(|t| match t.label {
        Label::Gpt => "gpt".to_string(),
        Label::Mbr => "mbr".to_string(),
    });
    let mut partitions: Vec<PartPicture> = extents
        .iter()
        .map(|e| PartPicture {
            name: e.name.clone(),
            number: e.number,
            start: e.start_bytes,
            size: e.size_bytes,
            part_type: e.part_type.to_string(),
            boot: e.boot,
            filesystem: fs_on(&e.name),
        })
        .collect();
    partitions.sort_by_key(|p| p.start);
    if partitions.is_empty()
        && let Some(disk) = graph
            .nodes()
            .iter()
            .find(|n| matches!(n.spec, Spec::LocalLoop(_)))
    {
        partitions.push(PartPicture {
            name: disk.name.clone(),
            number: 0,
            start: 0,
            size,
            part_type: String::new(),
            boot: false,
            filesystem: fs_on(&disk.name),
        });
    }
    DiskPicture {
        size,
        table,
        partitions,
    }
}

/// The filesystem made on the block device `base`, with its mount point.
fn filesystem_on(
    graph: &Graph,
    base: &str,
    usage: &BTreeMap<String, (u64, u64)>,
) -> Option<FsPicture> {
    let (name, fs) = graph.filesystems().find(|(name, _)| {
        graph
            .node(name)
            .is_some_and(|n| n.bases.iter().any(|b| b == base))
    })?;
    let mount_point = graph
        .mounts()
        .find(|(n, m)| n.bases.iter().any(|b| b == name) && m.mount_point.starts_with('/'))
        .map(|(_, m)| m.mount_point.clone());
    let measured = usage.get(name);
    Some(FsPicture {
        fstype: fs.fstype.clone(),
        label: Some(fs.label.clone()).filter(|l| !l.is_empty()),
        mount_point,
        total: measured.map(|u| u.0),
        used: measured.map(|u| u.1),
    })
}

/// What the tree holds: packages by installed size, the biggest
/// directories, and the totals (each inode counted once).
pub fn contents(tree: &Path) -> anyhow::Result<Contents> {
    let mut packages: Vec<PackageSize> = match crate::pkgdb::of_tree(tree) {
        Some(db) => db
            .sizes(tree)?
            .into_iter()
            .map(|(name, version, bytes)| PackageSize {
                name,
                version,
                bytes,
            })
            .collect(),
        None => Vec::new(),
    };
    packages.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let sizes = DirSizes::of(tree)?;
    Ok(Contents {
        packages,
        directories: sizes.biggest(TOP_DIRECTORIES),
        total_bytes: sizes.total,
        files: sizes.files,
    })
}

/// Bytes below each directory down to [`DIRECTORY_DEPTH`].
struct DirSizes {
    dirs: BTreeMap<PathBuf, u64>,
    total: u64,
    files: u64,
}

impl DirSizes {
    fn of(tree: &Path) -> std::io::Result<Self> {
        let mut sizes = DirSizes {
            dirs: BTreeMap::new(),
            total: 0,
            files: 0,
        };
        let dev = std::fs::symlink_metadata(tree)?.dev();
        let mut seen = HashSet::new();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(tree.join(&rel)) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let Ok(meta) = entry.metadata() else { continue };
                let path = rel.join(entry.file_name());
                if meta.is_dir() {
                    // Other filesystems (a chroot's /proc) are not the image's.
                    if meta.dev() == dev {
                        todo.push(path);
                    }
                } else if meta.is_file() && seen.insert(meta.ino()) {
                    sizes.add(&path, meta.len());
                }
            }
        }
        Ok(sizes)
    }

    fn add(&mut self, file: &Path, bytes: u64) {
        self.total += bytes;
        self.files += 1;
        for dir in file.ancestors().skip(1) {
            let depth = dir.components().count();
            if depth > 0 && depth <= DIRECTORY_DEPTH {
                *self.dirs.entry(dir.to_path_buf()).or_default() += bytes;
            }
        }
    }

    fn biggest(&self, n: usize) -> Vec<DirSize> {
        let mut all: Vec<DirSize> = self
            .dirs
            .iter()
            .map(|(p, b)| DirSize {
                path: format!("/{}", p.display()),
                bytes: *b,
            })
            .collect();
        all.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: f64, event: Event) -> Stamped {
        Stamped { time, event }
    }

    #[test]
    fn hooks_tasks_and_restored_hooks_become_bars() {
        let events = vec![
            at(
                0.5,
                Event::Restored {
                    phase: "root.d".into(),
                    element: "debian-minimal".into(),
                    hook: "08-debootstrap".into(),
                },
            ),
            at(
                1.0,
                Event::HookStart {
                    phase: "install.d".into(),
                    element: "vm".into(),
                    hook: "10-a".into(),
                },
            ),
            at(
                4.0,
                Event::HookEnd {
                    phase: "install.d".into(),
                    element: "vm".into(),
                    hook: "10-a".into(),
                    exit_code: Some(0),
                    seconds: 3.0,
                    ok: true,
                },
            ),
            at(
                5.0,
                Event::TaskStart {
                    group: "disk".into(),
                    task: "partitioning".into(),
                },
            ),
        ];
        let bars = timeline(&events, 9.0);
        assert_eq!(bars.len(), 3);
        assert_eq!(bars[0].kind, BarKind::Restored);
        assert_eq!(
            (bars[1].start, bars[1].seconds, bars[1].ok),
            (1.0, 3.0, true)
        );
        // A task still open when the build stopped ran to the end, failed.
        assert_eq!((bars[2].seconds, bars[2].ok), (4.0, false));
    }

    #[test]
    fn directory_sizes_count_each_file_once_up_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        std::fs::create_dir_all(t.join("usr/lib/x")).unwrap();
        std::fs::create_dir_all(t.join("etc")).unwrap();
        std::fs::write(t.join("usr/lib/x/big"), vec![0u8; 5000]).unwrap();
        std::fs::write(t.join("etc/small"), vec![0u8; 10]).unwrap();
        std::fs::hard_link(t.join("usr/lib/x/big"), t.join("etc/big-again")).unwrap();
        let c = contents(t).unwrap();
        assert_eq!((c.total_bytes, c.files), (5010, 2));
        let names: Vec<&str> = c.directories.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(names[..3], ["/usr", "/usr/lib", "/usr/lib/x"]);
        assert_eq!(c.directories[0].bytes, 5000);
    }
}
