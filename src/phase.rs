//! The one table of build phases: DIB's hook directories in the order they
//! run, where each runs, which part of the build it belongs to, and whether
//! it installs packages or marks a lockfile point. Every layer (elements,
//! the hook runner, the phase cache, lockfiles, the executor, the tests)
//! reads this table instead of keeping its own list. A leaf module.

use serde::Serialize;

/// Where a phase's hooks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// On the host, with the tree at `$TARGET_ROOT`.
    Outside,
    /// Inside a chroot of the tree.
    Chroot,
}

/// Which part of the build a phase belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Builds the tree: its steps are keyed and sealed by the phase cache.
    Tree,
    /// Runs on the finished tree, for the disk and the outputs: its hooks are
    /// inputs of the outputs' cache key.
    Late,
}

/// One step of a build, in run order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Phase {
    Root,
    ExtraData,
    PreInstall,
    Install,
    /// The `-p` packages, installed after install.d (no hook directory).
    Extra,
    PostInstall,
    PostRoot,
    BlockDevice,
    PreFinalise,
    Finalise,
    Cleanup,
}

/// A row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub phase: Phase,
    /// The hook directory ("root.d"), or the step's name when it has none.
    pub name: &'static str,
    /// Elements ship hooks for it in a directory of this name.
    pub has_hooks: bool,
    pub place: Place,
    pub stage: Stage,
    /// package-installs.yaml may name it as a package's `phase`.
    pub installs_packages: bool,
    /// A lockfile records which packages a build had after this step, under
    /// this name ("bootstrap" for what root.d installed).
    pub lock_name: Option<&'static str>,
}

const fn row(
    phase: Phase,
    name: &'static str,
    place: Place,
    stage: Stage,
    installs_packages: bool,
    lock_name: Option<&'static str>,
) -> Row {
    Row {
        phase,
        name,
        has_hooks: !matches!(phase, Phase::Extra),
        place,
        stage,
        installs_packages,
        lock_name,
    }
}

use Place::{Chroot, Outside};
use Stage::{Late, Tree};

/// Every step, in the order a build runs them (DIB's order).
pub const TABLE: [Row; 11] = [
    row(
        Phase::Root,
        "root.d",
        Outside,
        Tree,
        false,
        Some("bootstrap"),
    ),
    row(Phase::ExtraData, "extra-data.d", Outside, Tree, false, None),
    row(
        Phase::PreInstall,
        "pre-install.d",
        Chroot,
        Tree,
        true,
        Some("pre-install.d"),
    ),
    row(
        Phase::Install,
        "install.d",
        Chroot,
        Tree,
        true,
        Some("install.d"),
    ),
    row(Phase::Extra, "extra", Chroot, Tree, false, Some("extra")),
    row(
        Phase::PostInstall,
        "post-install.d",
        Chroot,
        Tree,
        true,
        Some("post-install.d"),
    ),
    row(Phase::PostRoot, "post-root.d", Outside, Tree, false, None),
    row(
        Phase::BlockDevice,
        "block-device.d",
        Outside,
        Late,
        false,
        None,
    ),
    row(
        Phase::PreFinalise,
        "pre-finalise.d",
        Outside,
        Late,
        false,
        None,
    ),
    row(Phase::Finalise, "finalise.d", Chroot, Late, false, None),
    row(Phase::Cleanup, "cleanup.d", Outside, Late, false, None),
];

impl Phase {
    /// Its row of [`TABLE`].
    pub fn row(self) -> &'static Row {
        TABLE
            .iter()
            .find(|r| r.phase == self)
            .expect("every phase has a row")
    }

    /// The hook directory or step name ("install.d", "extra").
    pub fn name(self) -> &'static str {
        self.row().name
    }

    pub fn place(self) -> Place {
        self.row().place
    }

    /// The step called `name` (a hook directory or "extra").
    pub fn from_name(name: &str) -> Option<Phase> {
        TABLE.iter().find(|r| r.name == name).map(|r| r.phase)
    }

    /// The step a lockfile names `name` ("bootstrap", "install.d").
    pub fn from_lock_name(name: &str) -> Option<Phase> {
        TABLE
            .iter()
            .find(|r| r.lock_name == Some(name))
            .map(|r| r.phase)
    }

    /// The name a lockfile gives this step, when it is a lockfile point.
    pub fn lock_name(self) -> Option<&'static str> {
        self.row().lock_name
    }

    /// The lockfile's name for it, else its own.
    pub fn lock_label(self) -> &'static str {
        self.lock_name().unwrap_or(self.name())
    }
}

/// The steps of `stage`, in order.
pub fn stage(stage: Stage) -> impl Iterator<Item = Phase> {
    TABLE
        .iter()
        .filter(move |r| r.stage == stage)
        .map(|r| r.phase)
}

/// Every hook directory, in run order.
pub fn hook_dirs() -> impl Iterator<Item = &'static str> {
    TABLE.iter().filter(|r| r.has_hooks).map(|r| r.name)
}

/// The hook directories package-installs.yaml may name, in run order.
pub fn package_phases() -> impl Iterator<Item = &'static str> {
    TABLE.iter().filter(|r| r.installs_packages).map(|r| r.name)
}

/// The steps a lockfile records, in order.
pub fn lock_points() -> impl Iterator<Item = Phase> {
    TABLE
        .iter()
        .filter(|r| r.lock_name.is_some())
        .map(|r| r.phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_run_order_and_names_are_unique() {
        let phases: Vec<Phase> = TABLE.iter().map(|r| r.phase).collect();
        let mut sorted = phases.clone();
        sorted.sort();
        assert_eq!(phases, sorted);
        for r in &TABLE {
            assert_eq!(Phase::from_name(r.name), Some(r.phase));
            assert_eq!(r.phase.row().name, r.name);
        }
        // The tree stage comes first, then the late stage, never mixed.
        let first_late = TABLE.iter().position(|r| r.stage == Late).unwrap();
        assert!(TABLE[first_late..].iter().all(|r| r.stage == Late));
    }

    #[test]
    fn dib_phase_facts() {
        assert_eq!(hook_dirs().count(), 10);
        assert_eq!(
            package_phases().collect::<Vec<_>>(),
            ["pre-install.d", "install.d", "post-install.d"]
        );
        assert_eq!(Phase::Finalise.place(), Place::Chroot);
        assert_eq!(Phase::PostRoot.place(), Place::Outside);
        assert_eq!(Phase::from_lock_name("bootstrap"), Some(Phase::Root));
        assert_eq!(lock_points().count(), 5);
    }
}
