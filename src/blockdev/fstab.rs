//! The fstab DIB writes from the block-device graph.
//!
//! One line per mount that has an `fstab` node, in mount order:
//! `LABEL=<label>` when the filesystem has a label, else `UUID=<uuid>`, then
//! the mount point, type, options, dump frequency and fsck pass. Swap is
//! written as DIB writes it: mount point `none`, options `sw`, `0 0`.

use std::collections::BTreeMap;

use super::config::{FstabEntry, Spec};
use super::graph::Graph;
use super::ids;

/// What the executor knows about a filesystem it made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FsFacts {
    pub label: Option<String>,
    pub uuid: Option<String>,
    pub fstype: String,
}

/// The facts the config implies for each mkfs node, keyed by node name: the
/// configured label and type, and the configured UUID or one derived from
/// `seed` and the node name (random without a seed). The executor passes
/// these to mkfs, so fstab and the filesystems agree.
pub fn facts_from_config(graph: &Graph, seed: Option<u64>) -> BTreeMap<String, FsFacts> {
    graph
        .filesystems()
        .map(|(name, fs)| {
            let uuid = fs
                .uuid
                .clone()
                .unwrap_or_else(|| ids::uuid_string(seed, &format!("fs:{name}")));
            let facts = FsFacts {
                label: Some(fs.label.clone()),
                uuid: Some(uuid),
                fstype: fs.fstype.clone(),
            };
            (name.to_string(), facts)
        })
        .collect()
}

/// Renders `/etc/fstab`. `facts` maps mkfs node names to what was made;
/// a filesystem missing from it is described from the config.
pub fn render(graph: &Graph, facts: &BTreeMap<String, FsFacts>) -> String {
    let mut out = String::new();
    for (mount, mp) in graph.mounts() {
        let Some(entry) = fstab_of(graph, &mount.name) else {
            continue;
        };
        let Some(fs_name) = mount.bases.first() else {
            continue;
        };
        let Some(f) = facts_for(graph, facts, fs_name) else {
            continue;
        };
        let id = match (&f.label, &f.uuid) {
            (Some(l), _) if !l.is_empty() => format!("LABEL={l}"),
            (_, Some(u)) => format!("UUID={u}"),
            _ => continue,
        };
        let line = if f.fstype == "swap" {
            format!("{id} none swap sw 0 0\n")
        } else {
            format!(
                "{id} {} {} {} {} {}\n",
                mp.mount_point, f.fstype, entry.options, entry.dump_freq, entry.fsck_passno
            )
        };
        out.push_str(&line);
    }
    out
}

fn fstab_of<'a>(graph: &'a Graph, mount: &str) -> Option<&'a FstabEntry> {
    graph.nodes().iter().find_map(|n| match &n.spec {
        Spec::Fstab(f) if n.bases.iter().any(|b| b == mount) => Some(f),
        _ => None,
    })
}

fn facts_for(graph: &Graph, facts: &BTreeMap<String, FsFacts>, fs: &str) -> Option<FsFacts> {
    if let Some(f) = facts.get(fs) {
        return Some(f.clone());
    }
    graph
        .filesystems()
        .find(|(n, _)| *n == fs)
        .map(|(_, f)| FsFacts {
            label: Some(f.label.clone()),
            uuid: f.uuid.clone(),
            fstype: f.fstype.clone(),
        })
}
