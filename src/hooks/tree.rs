//! The merged hooks tree (`TMP_HOOKS_PATH`): every subdirectory of every chosen
//! element except `tests`, merged as DIB does, and every element's top-level
//! files (`source-repository-*`, `element-deps`, ...: DIB copies them too and
//! source-repositories reads them there), plus our build-time files under
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
    let entries = element_entries(dir)?;
    if entries.is_empty() {
        return Ok(());
    }
    // `-H`: a linked element entry is copied as its content, as DIB's
    // `find -follow` finds it; links inside stay links. A top-level file of a later element replaces an
    // earlier one's (README, element-deps), as DIB's plain cp does.
    Cmd::new(format!("copying element {name} into the hooks tree"), "cp")
        .args(["-a", "-H", "-f", "-t"])
        .arg(hooks)
        .args(&entries)
        .run()?;
    Ok(())
}

/// What DIB copies of an element: every directory but `tests` and
/// `__pycache__`, and every regular file but compiled Python, symlinks
/// followed, sorted.
fn element_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading element {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| copied_by_dib(p))
        .collect();
    v.sort();
    Ok(v)
}

fn copied_by_dib(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if p.is_dir() {
        !matches!(name, "tests" | "__pycache__")
    } else {
        p.is_file() && !name.ends_with(".pyc")
    }
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
