//! The merged hooks tree (`TMP_HOOKS_PATH`): every subdirectory of every chosen
//! element except `tests`, merged as DIB does, plus our build-time files under
//! `dib-create/` (helpers, pkg-maps, package lists). The chroot sees it at
//! /tmp/in_target.d; it is unmounted before outputs are made.

use anyhow::Context;
use std::fs;
use std::path::{Path, PathBuf};

use crate::host::Cmd;
use crate::plan::Plan;

/// Our subdirectory of the hooks tree.
pub const OURS: &str = "dib-create";

/// Builds the hooks tree at `hooks` from the plan's elements.
pub fn prepare(plan: &Plan, hooks: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(hooks).with_context(|| format!("creating {}", hooks.display()))?;
    for name in &plan.elements {
        let dir = &plan.element_paths[name];
        merge_element(name, dir, hooks)?;
    }
    install_helpers(&plan.settings.data_dir, hooks)?;
    write_pkg_maps(plan, hooks)?;
    write_package_lists(plan, hooks)?;
    Ok(())
}

fn merge_element(name: &str, dir: &Path, hooks: &Path) -> anyhow::Result<()> {
    let subdirs = element_subdirs(dir)?;
    if subdirs.is_empty() {
        return Ok(());
    }
    Cmd::new(format!("copying element {name} into the hooks tree"), "cp")
        .args(["-a", "-H", "-t"])
        .arg(hooks)
        .args(&subdirs)
        .run()?;
    Ok(())
}

/// The subdirectories DIB copies: all but `tests`, symlinks followed, sorted.
fn element_subdirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading element {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "tests"))
        .collect();
    v.sort();
    Ok(v)
}

fn install_helpers(data: &Path, hooks: &Path) -> anyhow::Result<()> {
    let src = data.join(crate::paths::CHROOT_HELPERS);
    let dst = hooks.join(OURS).join("bin");
    fs::create_dir_all(&dst)?;
    if src.is_dir() {
        Cmd::new("installing build-time helpers", "cp")
            .args(["-a", "-t"])
            .arg(&dst)
            .args(list_dir(&src)?)
            .run()?;
    }
    Ok(())
}

fn write_pkg_maps(plan: &Plan, hooks: &Path) -> anyhow::Result<()> {
    let dst = hooks.join(OURS).join("pkg-map");
    fs::create_dir_all(&dst)?;
    for name in &plan.elements {
        let src = plan.element_paths[name].join("pkg-map");
        if src.is_file() {
            fs::copy(&src, dst.join(name)).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

fn write_package_lists(plan: &Plan, hooks: &Path) -> anyhow::Result<()> {
    for (phase, set) in &plan.packages {
        let dir = hooks.join(OURS).join("packages").join(phase);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("install"), lines(&set.install))?;
        fs::write(dir.join("uninstall"), lines(&set.uninstall))?;
    }
    Ok(())
}

fn lines(v: &[String]) -> String {
    v.iter().map(|s| format!("{s}\n")).collect()
}

fn list_dir(d: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(d)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}
