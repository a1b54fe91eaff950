//! The ostree output: the finished tree, laid out as ostree deployments
//! expect, committed to a ref.
//!
//! The tree itself stays as it is (the other outputs are made from it). The
//! commit is assembled by ostree from two layers, so nothing is moved in the
//! tree and no file is copied twice:
//! 1. the tree without what moves (`--skip-list`), as a temporary orphan
//!    commit: every file's content object is written here;
//! 2. that commit overlaid with a small staging tree (`/usr/etc`, the factory
//!    copy of `/var`, the kernel under `/usr/lib/modules`, the symlinks into
//!    `/var`, the tmpfiles.d entries), committed with the plan's parent, time
//!    and metadata. The temporary commit is then pruned.
//!
//! The layout moves (also in `docs/ostree.md`):
//! - `/etc` → `/usr/etc` (ostree merges it into each deployment's `/etc`);
//! - `/var` → empty; its content is kept in `/usr/share/factory/var`, and
//!   `usr/lib/tmpfiles.d/00-dib-create-var.conf` recreates it at boot;
//! - `/home`, `/root`, `/opt`, `/srv`, `/mnt`, `/usr/local` → symlinks into
//!   `/var` (content into the factory copy), `/media` → `run/media`,
//!   `/tmp` → `sysroot/tmp`, plus `/sysroot` and `/ostree` → `sysroot/ostree`;
//! - `/boot/vmlinuz-K`, `initrd.img-K`, `config-K`, `System.map-K` →
//!   `/usr/lib/modules/K/{vmlinuz,initramfs.img,config,System.map}`; the rest
//!   of `/boot` and the `/vmlinuz`-style links are left out;
//! - device nodes, FIFOs and sockets are left out (ostree stores none), as
//!   is what is below `/proc`, `/sys`, `/dev` and `/run` (as in the tar).

use anyhow::Context;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::host::{Cmd, Host};
use crate::log;
use crate::plan::{OstreePlan, Parent};

/// Where `/var`'s content is kept in the commit.
pub const FACTORY_VAR: &str = "usr/share/factory/var";
/// The tmpfiles.d file that recreates `/var` from it. It sorts first, so that
/// its entries win over the packages' own for the same paths.
pub const TMPFILES: &str = "usr/lib/tmpfiles.d/00-dib-create-var.conf";

/// Top-level directories that become symlinks, and where their content goes
/// (a directory below `/var`, or nowhere).
const LINKED: &[(&str, &str, Option<&str>)] = &[
    ("home", "var/home", Some("home")),
    ("root", "var/roothome", Some("roothome")),
    ("opt", "var/opt", Some("opt")),
    ("srv", "var/srv", Some("srv")),
    ("mnt", "var/mnt", Some("mnt")),
    ("usr/local", "../var/usrlocal", Some("usrlocal")),
    ("media", "run/media", None),
    ("tmp", "sysroot/tmp", None),
    ("ostree", "sysroot/ostree", None),
];

/// Directories whose content no output keeps (mount points of the chroot).
const EMPTIED: &[&str] = &["proc", "sys", "dev", "run"];

/// Kernel files in `/boot` and their names in `/usr/lib/modules/<kver>/`.
const KERNEL_FILES: &[(&str, &str)] = &[
    ("vmlinuz-", "vmlinuz"),
    // ppc64el's kernels are uncompressed ELF files; ostree looks for the name vmlinuz.
    ("vmlinux-", "vmlinuz"),
    ("initrd.img-", "initramfs.img"),
    ("config-", "config"),
    ("System.map-", "System.map"),
];

/// What the tree holds that the layout changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Top-level entry names.
    pub top: Vec<String>,
    /// Entry names in `/boot`.
    pub boot: Vec<String>,
    /// Device nodes, FIFOs and sockets outside [`EMPTIED`], relative.
    pub special: Vec<String>,
    /// `usr/local` exists.
    pub usr_local: bool,
}

/// The two layers of the commit, as paths relative to the tree's root.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Left out of the first layer (`--skip-list`: absolute, one per line).
    pub skip: Vec<String>,
    /// Copied from the tree into the staging tree: (from, to).
    pub copies: Vec<(String, String)>,
    /// Symlinks of the staging tree: (path, target).
    pub links: Vec<(String, String)>,
    /// Empty directories of the staging tree.
    pub dirs: Vec<String>,
}

/// The layout for a tree with `l`'s entries.
pub fn layout(l: &Listing) -> Layout {
    let has = |name: &str| l.top.iter().any(|t| t == name);
    let mut out = Layout::default();
    if has("etc") {
        out.skip.push("/etc".into());
        out.copies.push(("etc".into(), "usr/etc".into()));
    }
    if has("var") {
        out.skip.push("/var".into());
        out.copies.push(("var".into(), FACTORY_VAR.into()));
    }
    out.dirs.extend(["var".to_string(), "sysroot".to_string()]);
    for (path, target, keep) in LINKED {
        let present = if *path == "usr/local" {
            l.usr_local
        } else {
            has(path)
        };
        if present {
            out.skip.push(format!("/{path}"));
            if let Some(k) = keep {
                out.copies
                    .push(((*path).to_string(), format!("{FACTORY_VAR}/{k}")));
            }
        }
        out.links.push(((*path).to_string(), (*target).to_string()));
    }
    for name in &l.boot {
        out.skip.push(format!("/boot/{name}"));
        if let Some((kver, to)) = kernel_file(name) {
            out.copies.push((
                format!("boot/{name}"),
                format!("usr/lib/modules/{kver}/{to}"),
            ));
        }
    }
    for name in &l.top {
        if ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"].contains(&name.as_str()) {
            out.skip.push(format!("/{name}"));
        }
        // ostree refuses device nodes before it looks at the skip list, so
        // these go whole and come back empty.
        if EMPTIED.contains(&name.as_str()) {
            out.skip.push(format!("/{name}"));
            out.dirs.push(name.clone());
        }
    }
    // A special file elsewhere: its directory comes from the staging tree,
    // where special files are removed. A directory already left out (or
    // below one) needs nothing more; of nested ones the topmost is taken.
    let covered = |dir: &Path, skip: &[String]| {
        skip.iter()
            .any(|k| dir.starts_with(k.trim_start_matches('/')))
    };
    let mut dirs: Vec<String> = l
        .special
        .iter()
        .filter_map(|f| {
            Path::new(f)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
        })
        .filter(|d| !d.is_empty() && !covered(Path::new(d), &out.skip))
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut taken: Vec<String> = Vec::new();
    for d in dirs {
        if !taken.iter().any(|t| Path::new(&d).starts_with(t)) {
            taken.push(d);
        }
    }
    for d in taken {
        out.skip.push(format!("/{d}"));
        out.copies.push((d.clone(), d));
    }
    out.skip.sort();
    out.skip.dedup();
    out
}

/// `vmlinuz-6.1.0-28-amd64` → ("6.1.0-28-amd64", "vmlinuz").
fn kernel_file(name: &str) -> Option<(&str, &str)> {
    KERNEL_FILES.iter().find_map(|(prefix, to)| {
        let kver = name.strip_prefix(prefix)?;
        (!kver.is_empty() && !kver.ends_with(".old")).then_some((kver, *to))
    })
}

/// Reads what [`layout`] needs from the tree.
pub fn list(tree: &Path) -> anyhow::Result<Listing> {
    let names = |rel: &str| -> anyhow::Result<Vec<String>> {
        let dir = tree.join(rel);
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut v: Vec<String> = fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    };
    let mut l = Listing {
        top: names("")?,
        boot: names("boot")?,
        usr_local: tree.join("usr/local").symlink_metadata().is_ok(),
        ..Default::default()
    };
    for top in &l.top {
        if !EMPTIED.contains(&top.as_str()) {
            find_special(tree, Path::new(top), &mut l.special)?;
        }
    }
    l.special.sort();
    if let Some(f) = l.special.iter().find(|f| !f.contains('/')) {
        anyhow::bail!(
            "/{f} is a device node, FIFO or socket at the top of the tree: ostree cannot store it, and the tree's root cannot be staged without it; remove it in a cleanup.d hook"
        );
    }
    Ok(l)
}

/// Collects the device nodes, FIFOs and sockets at and below `rel`.
fn find_special(tree: &Path, rel: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    let path = tree.join(rel);
    let t = path
        .symlink_metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .file_type();
    if t.is_block_device() || t.is_char_device() || t.is_fifo() || t.is_socket() {
        out.push(rel.to_string_lossy().into_owned());
    } else if t.is_dir() {
        for e in fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))? {
            find_special(tree, &rel.join(e?.file_name()), out)?;
        }
    }
    Ok(())
}

/// Builds the staging tree at `stage` (empty or missing) from `tree`.
fn stage_tree(host: &mut dyn Host, tree: &Path, stage: &Path, l: &Layout) -> anyhow::Result<()> {
    fs::create_dir_all(stage).with_context(|| format!("creating {}", stage.display()))?;
    for d in &l.dirs {
        fs::create_dir_all(stage.join(d))?;
    }
    for (from, to) in &l.copies {
        let dest = stage.join(to);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        // Into an existing directory (/var/opt and /opt both exist): merged.
        let src = if dest.is_dir() {
            format!("{}/.", tree.join(from).display())
        } else {
            tree.join(from).display().to_string()
        };
        host.run(
            Cmd::new(format!("staging /{from} for the ostree commit"), "cp")
                .args(["-a", "--reflink=auto"])
                .arg(src)
                .arg(&dest),
        )?;
    }
    for (path, target) in &l.links {
        let p = stage.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, &p)
            .with_context(|| format!("creating {}", p.display()))?;
    }
    let factory = stage.join(FACTORY_VAR);
    let tmpfiles = stage.join(TMPFILES);
    fs::create_dir_all(tmpfiles.parent().unwrap_or(stage))?;
    remove_special(stage)?;
    fs::write(&tmpfiles, tmpfiles_for(&factory)?)
        .with_context(|| format!("writing {}", tmpfiles.display()))?;
    // Its mode is part of the commit: not the caller's umask.
    fs::set_permissions(&tmpfiles, fs::Permissions::from_mode(0o644))?;
    mirror_dir_metadata(tree, stage, Path::new(""))
}

/// Removes the device nodes, FIFOs and sockets the copies brought along.
fn remove_special(stage: &Path) -> anyhow::Result<()> {
    let mut found = Vec::new();
    find_special(stage, Path::new(""), &mut found)?;
    for f in found {
        log::info(&format!(
            "ostree: leaving out {f}: ostree stores no device nodes, FIFOs or sockets"
        ));
        fs::remove_file(stage.join(&f))?;
    }
    Ok(())
}

/// Gives each directory of the staging tree that the tree has too the tree's
/// mode and owner: the later layer's directory metadata wins in the commit.
fn mirror_dir_metadata(tree: &Path, stage: &Path, rel: &Path) -> anyhow::Result<()> {
    let s = stage.join(rel);
    if let Ok(m) = tree.join(rel).symlink_metadata()
        && m.is_dir()
    {
        std::os::unix::fs::lchown(&s, Some(m.uid()), Some(m.gid()))
            .with_context(|| format!("setting the owner of {}", s.display()))?;
        fs::set_permissions(&s, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    } else if rel.starts_with(FACTORY_VAR) || rel.starts_with("usr/etc") {
        // Copies: cp -a kept their metadata.
        return Ok(());
    } else {
        // New (sysroot, usr/share/factory): fixed, not the caller's umask.
        std::os::unix::fs::lchown(&s, Some(0), Some(0))?;
        fs::set_permissions(&s, fs::Permissions::from_mode(0o755))?;
    }
    for e in fs::read_dir(&s).with_context(|| format!("listing {}", s.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            mirror_dir_metadata(tree, stage, &rel.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// The tmpfiles.d lines that rebuild `/var` from its factory copy: each
/// directory of `/var` with its mode and owner, and each entry in it copied
/// (`C`, only when missing) or linked (`L`).
fn tmpfiles_for(factory: &Path) -> anyhow::Result<String> {
    let mut lines = vec![
        "# Written by dib-create for the ostree commit: /var starts empty on a".to_string(),
        format!("# deployment and is filled from /{FACTORY_VAR} at boot."),
    ];
    for (rel, kind) in entries(factory, 2)? {
        let var = format!("/var/{rel}");
        let src = format!("/{FACTORY_VAR}/{rel}");
        match kind {
            Kind::Link(target) => lines.push(format!("L {var} - - - - {target}")),
            Kind::Dir { mode, uid, gid } if !rel.contains('/') => {
                lines.push(format!("d {var} {mode:04o} {uid} {gid} -"))
            }
            _ => lines.push(format!("C {var} - - - - {src}")),
        }
    }
    Ok(lines.join("\n") + "\n")
}

enum Kind {
    Dir { mode: u32, uid: u32, gid: u32 },
    Link(String),
    Other,
}

/// The entries of `root` down to `depth` levels, sorted, relative; below a
/// link or a non-directory nothing is listed.
fn entries(root: &Path, depth: usize) -> anyhow::Result<Vec<(String, Kind)>> {
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    let mut names: Vec<_> = fs::read_dir(root)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        let p = root.join(&n);
        let m = p.symlink_metadata()?;
        let name = n.to_string_lossy().into_owned();
        let kind = if m.file_type().is_symlink() {
            Kind::Link(fs::read_link(&p)?.to_string_lossy().into_owned())
        } else if m.is_dir() {
            Kind::Dir {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            }
        } else {
            Kind::Other
        };
        let recurse = matches!(kind, Kind::Dir { .. }) && depth > 1;
        out.push((name.clone(), kind));
        if recurse {
            for (rel, k) in entries(&p, depth - 1)? {
                out.push((format!("{name}/{rel}"), k));
            }
        }
    }
    Ok(out)
}

/// A commit that was written, not yet on its ref.
#[derive(Clone, Debug)]
pub struct Committed {
    pub commit: String,
    /// Its parent ("none" for the first of a history).
    pub parent: String,
    /// Objects the repository gained.
    pub new_objects: u64,
    pub total_objects: u64,
}

/// Creates an archive-mode repository at `repo`.
pub fn init_repo(host: &mut dyn Host, repo: &Path) -> anyhow::Result<()> {
    host.run(
        Cmd::new("creating the ostree repository", "ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(["init", "--mode=archive"]),
    )?;
    Ok(())
}

/// Commits `tree` into `repo` as the plan says; `scratch` holds the staging
/// tree. The ref is not moved: see [`set_ref`].
pub fn commit(
    host: &mut dyn Host,
    plan: &OstreePlan,
    tree: &Path,
    repo: &Path,
    scratch: &Path,
) -> anyhow::Result<Committed> {
    let before = count_objects(repo);
    let l = layout(&list(tree)?);
    let stage = scratch.join("ostree-stage");
    let _ = fs::remove_dir_all(&stage);
    stage_tree(host, tree, &stage, &l)?;
    let skip = scratch.join("ostree-skip");
    fs::write(&skip, l.skip.join("\n") + "\n")?;
    let repo_arg = format!("--repo={}", repo.display());
    let time = format!("--timestamp=@{}", plan.timestamp);
    let base = read(
        host,
        Cmd::new("committing the tree's files to ostree", "ostree")
            .args([repo_arg.as_str(), "commit", "--orphan", "--no-bindings"])
            .args(["--parent=none", time.as_str()])
            .arg(format!("--tree=dir={}", tree.display()))
            .arg(format!("--skip-list={}", skip.display())),
    )?;
    let parent = parent_of(host, plan, repo)?;
    let mut cmd = Cmd::new("committing the ostree layout", "ostree")
        .args([repo_arg.as_str(), "commit", "--orphan"])
        .arg(format!("--bind-ref={}", plan.branch))
        .arg(format!("--parent={parent}"))
        .arg(&time)
        .arg(format!("--subject={}", plan.subject))
        .arg(format!("--add-metadata-string=version={}", plan.version))
        .arg(format!("--tree=ref={base}"))
        .arg(format!("--tree=dir={}", stage.display()));
    for (k, v) in &plan.metadata {
        cmd = cmd.arg(format!("--add-metadata-string={k}={v}"));
    }
    if let Some(g) = &plan.gpg {
        cmd = cmd.arg(format!("--gpg-sign={}", g.key_id));
        if let Some(h) = &g.homedir {
            cmd = cmd.arg(format!("--gpg-homedir={}", h.display()));
        }
    }
    let commit = run_signed(host, plan.gpg.as_ref(), cmd);
    // The base commit goes whatever happened: a failed build must not leave
    // a whole tree of unreachable objects in a repository that is served.
    let pruned = host.run(
        Cmd::new("removing the temporary ostree commit", "ostree")
            .args([repo_arg.as_str(), "prune"])
            .arg(format!("--delete-commit={base}")),
    );
    let commit = commit?;
    pruned?;
    if parent != "none" {
        // Before the ref moves, so that a failure here changes nothing.
        host.run(
            Cmd::new("making the ostree static delta from the parent", "ostree")
                .args([
                    repo_arg.as_str(),
                    "static-delta",
                    "generate",
                    "--if-not-exists",
                ])
                .arg(format!("--from={parent}"))
                .arg(format!("--to={commit}")),
        )?;
    }
    let _ = fs::remove_dir_all(&stage);
    let _ = fs::remove_file(&skip);
    let total = count_objects(repo);
    let done = Committed {
        commit,
        parent: parent.clone(),
        new_objects: total.saturating_sub(before),
        total_objects: total,
    };
    log::info(&format!(
        "ostree: commit {} for {} (parent {parent}): {} new objects, {} in the repository",
        done.commit, plan.branch, done.new_objects, done.total_objects
    ));
    Ok(done)
}

/// `gpgconf` for the signing key's home.
fn gpgconf(g: &crate::plan::GpgSign) -> Cmd {
    let mut c = Cmd::new("stopping the gpg-agent the signing started", "gpgconf");
    if let Some(h) = &g.homedir {
        c = c.arg("--homedir").arg(h);
    }
    c
}

/// True when a gpg-agent already serves the signing key's home (its socket
/// answers).
fn agent_running(host: &mut dyn Host, g: &crate::plan::GpgSign) -> bool {
    let mut c = Cmd::new("finding the gpg-agent's socket", "gpgconf");
    if let Some(h) = &g.homedir {
        c = c.arg("--homedir").arg(h);
    }
    read(host, c.args(["--list-dirs", "agent-socket"]))
        .is_ok_and(|p| crate::host::socket_answers(Path::new(&p)))
}

/// The parent to pass to `ostree commit`: the plan's, or the ref's head.
fn parent_of(host: &mut dyn Host, plan: &OstreePlan, repo: &Path) -> anyhow::Result<String> {
    match &plan.parent {
        Parent::None => Ok("none".into()),
        Parent::Commit(c) => Ok(c.clone()),
        Parent::Head => {
            let refs = Cmd::new("listing the ostree refs", "ostree")
                .arg(format!("--repo={}", repo.display()))
                .arg("refs");
            // A missing ref is the start of a history.
            if !read(host, refs)?.lines().any(|r| r == plan.branch) {
                return Ok("none".into());
            }
            let head = Cmd::new(format!("reading the ref {}", plan.branch), "ostree")
                .arg(format!("--repo={}", repo.display()))
                .args(["rev-parse", &plan.branch]);
            read(host, head)
        }
    }
}

/// Points `branch` of `repo` at `commit` (done when every output is in place).
pub fn set_ref(host: &mut dyn Host, repo: &Path, branch: &str, commit: &str) -> anyhow::Result<()> {
    host.run(
        Cmd::new(format!("moving the ostree ref {branch}"), "ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(["refs", "--force"])
            .arg(format!("--create={branch}"))
            .arg(commit),
    )?;
    Ok(())
}

/// Updates the repository's summary (signed like the commit), which clients
/// read first, once the ref has moved. The static delta from the parent was
/// made with the commit.
pub fn publish(host: &mut dyn Host, plan: &OstreePlan, repo: &Path) -> anyhow::Result<()> {
    let mut summary = Cmd::new("updating the ostree summary", "ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["summary", "--update"]);
    if let Some(g) = &plan.gpg {
        summary = summary.arg(format!("--gpg-sign={}", g.key_id));
        if let Some(h) = &g.homedir {
            summary = summary.arg(format!("--gpg-homedir={}", h.display()));
        }
    }
    run_signed(host, plan.gpg.as_ref(), summary)?;
    Ok(())
}

/// Runs `cmd`, which signs with `gpg`'s key when given, and returns its
/// output. gpgme starts a gpg-agent for the key's home; one that was not
/// running before is stopped again, so the build leaves no process behind.
fn run_signed(
    host: &mut dyn Host,
    gpg: Option<&crate::plan::GpgSign>,
    cmd: Cmd,
) -> anyhow::Result<String> {
    let was_running = gpg.map(|g| agent_running(host, g));
    let out = read(host, cmd);
    if let (Some(false), Some(g)) = (was_running, gpg) {
        let _ = host.run(gpgconf(g).args(["--kill", "gpg-agent"]));
    }
    out
}

/// Where ostree's syslinux backend keeps the menu of deployments, which
/// GRUB reads (GRUB 2.06 has no reader of ostree's own boot entries, but it
/// parses syslinux menus: module syslinuxcfg). ostree rewrites it at every
/// deployment change, so an upgraded machine boots its new deployment.
pub const SYSLINUX_CFG: &str = "boot/syslinux/syslinux.cfg";

/// Deploys `commit` of `repo` into a new sysroot at `sysroot`, from which
/// the disk is then filled: the stateroot, the repository (bare) holding the
/// commit, the deployment with the kernel command line the bootloader
/// element wrote for `tree`, the tree's GRUB files and ESP, and a grub.cfg
/// that takes its menu from the deployments.
pub fn deploy(
    host: &mut dyn Host,
    plan: &OstreePlan,
    tree: &Path,
    repo: &Path,
    commit: &str,
    sysroot: &Path,
) -> anyhow::Result<()> {
    let Some(d) = &plan.deploy else {
        anyhow::bail!("no deployment was planned");
    };
    let grub_cfg = tree.join("boot/grub/grub.cfg");
    let cfg = fs::read_to_string(&grub_cfg).with_context(|| {
        format!(
            "reading {}: ostree-deploy takes the kernel command line from the bootloader element's grub.cfg (add the vm or bootloader element)",
            grub_cfg.display()
        )
    })?;
    let kargs =
        kernel_args(&cfg).with_context(|| format!("{} has no linux line", grub_cfg.display()))?;
    fs::create_dir_all(sysroot)?;
    let sys = format!("--sysroot={}", sysroot.display());
    let sysrepo = format!("--repo={}", sysroot.join("ostree/repo").display());
    let ostree = |what: &str| Cmd::new(what.to_string(), "ostree");
    host.run(
        ostree("creating the ostree sysroot")
            .args(["admin", "init-fs"])
            .arg(sysroot),
    )?;
    host.run(ostree("creating the stateroot").args(["admin", "os-init", &d.os, &sys]))?;
    host.run(ostree("configuring the sysroot's repository").args([
        sysrepo.as_str(),
        "config",
        "set",
        "sysroot.bootloader",
        "syslinux",
    ]))?;
    prepare_syslinux_menu(sysroot, menu_timeout(&cfg))?;
    host.run(
        ostree("copying the commit into the sysroot")
            .args([sysrepo.as_str(), "pull-local"])
            .arg(repo)
            .arg(commit),
    )?;
    if let Some(url) = &d.remote_url {
        let mut add = ostree("adding the update remote").args([sysrepo.as_str(), "remote", "add"]);
        add = match &plan.gpg {
            // The machine checks updates against the key the image was signed with.
            Some(g) => add.arg(format!(
                "--gpg-import={}",
                export_key(host, g, sysroot)?.display()
            )),
            None => add.arg("--no-gpg-verify"),
        };
        host.run(add.args([crate::plan::REMOTE, url.as_str()]))?;
    }
    host.run(
        ostree("setting the deployment's ref")
            .args([sysrepo.as_str(), "refs"])
            .arg(format!("--create={}", d.refspec))
            .arg(commit),
    )?;
    let mut dep = ostree("deploying the commit").args(["admin", "deploy", &sys, "--os", &d.os]);
    for k in &kargs {
        dep = dep.arg(format!("--karg={k}"));
    }
    host.run(dep.arg(&d.refspec))?;
    writable_deployments(host, sysroot, &d.os)?;
    for dir in ["boot/grub", "boot/efi"] {
        if tree.join(dir).is_dir() {
            host.run(
                Cmd::new(format!("copying /{dir} into the sysroot"), "cp")
                    .arg("-a")
                    .arg(tree.join(dir))
                    .arg(sysroot.join("boot")),
            )?;
        }
    }
    let menu = sysroot.join("boot/grub/grub.cfg");
    fs::write(&menu, deployed_grub_cfg(&cfg))
        .with_context(|| format!("writing {}", menu.display()))?;
    Ok(())
}

/// ostree's syslinux backend rewrites `loader/syslinux.cfg` only where the
/// menu exists already (reached through `boot/syslinux`), and keeps its
/// lines other than the entries. Its TIMEOUT (tenths of a second) is what
/// makes GRUB show a menu: without one GRUB's reader only loads the default
/// entry and leaves GRUB at its prompt.
fn prepare_syslinux_menu(sysroot: &Path, timeout_secs: u64) -> anyhow::Result<()> {
    let boot = sysroot.join("boot");
    fs::create_dir_all(boot.join("loader.0"))?;
    fs::write(
        boot.join("loader.0/syslinux.cfg"),
        format!("TIMEOUT {}\nPROMPT 1\n", timeout_secs.max(1) * 10),
    )?;
    std::os::unix::fs::symlink("loader.0", boot.join("loader"))?;
    let menu = sysroot.join(SYSLINUX_CFG);
    fs::create_dir_all(menu.parent().unwrap_or(&boot))?;
    std::os::unix::fs::symlink("../loader/syslinux.cfg", &menu)?;
    Ok(())
}

/// The menu's timeout in a grub.cfg (`set timeout=N`), else GRUB's 5 s.
fn menu_timeout(cfg: &str) -> u64 {
    cfg.lines()
        .find_map(|l| l.trim().strip_prefix("set timeout=")?.parse().ok())
        .unwrap_or(5)
}

/// The bootloader element's grub.cfg with its menu entries replaced by the
/// deployments' menu: what comes before the first entry (terminal, modules,
/// the search for the root filesystem, the timeout) is kept.
fn deployed_grub_cfg(cfg: &str) -> String {
    let mut out: String = cfg
        .lines()
        .take_while(|l| !l.starts_with("menuentry "))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str("# The ostree deployments, newest first (ostree keeps this menu).\n");
    out.push_str("insmod syslinuxcfg\n");
    out.push_str(&format!("syslinux_source /{SYSLINUX_CFG}\n"));
    out
}

/// ostree marks each deployment's root immutable (chattr +i) against stray
/// writes; in the build directory that would stop its removal, and mke2fs
/// does not carry the flag into the image anyway.
fn writable_deployments(host: &mut dyn Host, sysroot: &Path, os: &str) -> anyhow::Result<()> {
    let dir = sysroot.join("ostree/deploy").join(os).join("deploy");
    for e in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            host.run(
                Cmd::new("clearing the deployment's immutable flag", "chattr")
                    .arg("-i")
                    .arg(&p),
            )?;
        }
    }
    Ok(())
}

/// The signing key's public part, exported beside the sysroot.
fn export_key(
    host: &mut dyn Host,
    g: &crate::plan::GpgSign,
    sysroot: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    let mut c = Cmd::new("exporting the signing key's public part", "gpg");
    if let Some(h) = &g.homedir {
        c = c.arg("--homedir").arg(h);
    }
    let out = host.run(c.args(["--export", &g.key_id]).capture())?;
    if out.stdout.is_empty() {
        anyhow::bail!("gpg exported nothing for the key {}", g.key_id);
    }
    let file = sysroot.with_extension("gpg");
    fs::write(&file, &out.stdout)?;
    Ok(file)
}

/// The kernel command line of the first `linux` line of a grub.cfg: what
/// follows the kernel's path.
fn kernel_args(cfg: &str) -> Option<Vec<String>> {
    cfg.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("linux")).then(|| words.skip(1).map(String::from).collect())
    })
}

fn read(host: &mut dyn Host, cmd: Cmd) -> anyhow::Result<String> {
    let out = host.run(cmd.capture())?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Files below `repo/objects`.
pub fn count_objects(repo: &Path) -> u64 {
    let Ok(dirs) = fs::read_dir(repo.join("objects")) else {
        return 0;
    };
    dirs.filter_map(Result::ok)
        .filter_map(|d| fs::read_dir(d.path()).ok())
        .map(|f| f.count() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing {
        Listing {
            top: [
                "bin",
                "boot",
                "dev",
                "etc",
                "home",
                "initrd.img",
                "media",
                "opt",
                "root",
                "tmp",
                "usr",
                "var",
                "vmlinuz",
            ]
            .map(String::from)
            .to_vec(),
            boot: [
                "System.map-6.1.0-28-amd64",
                "config-6.1.0-28-amd64",
                "grub",
                "initrd.img-6.1.0-28-amd64",
                "vmlinuz-6.1.0-28-amd64",
            ]
            .map(String::from)
            .to_vec(),
            special: [
                "etc/fifo",
                "usr/lib/x/sock",
                "usr/lib/x/y/sock",
                "tmp/a/sock",
                "boot/grub/fifo",
            ]
            .map(String::from)
            .to_vec(),
            usr_local: true,
        }
    }

    #[test]
    fn the_layout_moves_etc_var_and_the_kernel() {
        let l = layout(&listing());
        for s in [
            "/etc",
            "/var",
            "/home",
            "/root",
            "/opt",
            "/media",
            "/tmp",
            "/usr/local",
            "/boot/grub",
            "/boot/vmlinuz-6.1.0-28-amd64",
            "/vmlinuz",
            "/initrd.img",
            "/dev",
            "/usr/lib/x",
        ] {
            assert!(
                l.skip.iter().any(|x| x == s),
                "{s} not skipped: {:?}",
                l.skip
            );
        }
        assert!(
            !l.skip
                .iter()
                .any(|x| x == "/usr" || x == "/boot" || x == "/srv")
        );
        let copied = |from: &str, to: &str| l.copies.contains(&(from.into(), to.into()));
        assert!(copied("etc", "usr/etc"));
        assert!(copied("var", FACTORY_VAR));
        assert!(copied("root", &format!("{FACTORY_VAR}/roothome")));
        assert!(copied("usr/local", &format!("{FACTORY_VAR}/usrlocal")));
        assert!(copied(
            "boot/vmlinuz-6.1.0-28-amd64",
            "usr/lib/modules/6.1.0-28-amd64/vmlinuz"
        ));
        assert!(copied(
            "boot/initrd.img-6.1.0-28-amd64",
            "usr/lib/modules/6.1.0-28-amd64/initramfs.img"
        ));
        assert!(!l.copies.iter().any(|(f, _)| f == "tmp" || f == "media"));
        assert!(l.links.contains(&("home".into(), "var/home".into())));
        assert!(
            l.links
                .contains(&("ostree".into(), "sysroot/ostree".into()))
        );
        assert!(l.dirs.contains(&"sysroot".into()) && l.dirs.contains(&"dev".into()));
        // The FIFO's directory moves with /etc; the socket's is staged.
        assert!(!l.skip.iter().any(|x| x == "/etc/fifo"));
        assert!(copied("usr/lib/x", "usr/lib/x"));
        // Every skipped path is one ostree reaches: none below another.
        for a in &l.skip {
            for b in &l.skip {
                assert!(a == b || !Path::new(a).starts_with(b), "{a} is below {b}");
            }
        }
    }

    #[test]
    fn the_kernel_command_line_comes_from_the_first_linux_line() {
        let cfg = "set default=0\nmenuentry 'Debian' {\n    insmod gzio\n    linux /boot/vmlinuz-6.1 root=LABEL=r ro console=ttyS0,115200\n}\n";
        assert_eq!(
            kernel_args(cfg).unwrap(),
            ["root=LABEL=r", "ro", "console=ttyS0,115200"]
        );
        assert_eq!(kernel_args("set default=0\n"), None);
    }

    #[test]
    fn the_deployed_menu_keeps_the_header_and_reads_ostree_s_menu() {
        let cfg = "set timeout=5\nserial --unit=0\nsearch --label --set=root r\nmenuentry 'Debian' {\n    linux /boot/vmlinuz root=x\n}\n";
        assert_eq!(
            deployed_grub_cfg(cfg),
            "set timeout=5\nserial --unit=0\nsearch --label --set=root r\n\
             # The ostree deployments, newest first (ostree keeps this menu).\n\
             insmod syslinuxcfg\nsyslinux_source /boot/syslinux/syslinux.cfg\n"
        );
    }

    #[test]
    fn the_menu_keeps_grub_s_timeout_and_never_waits_for_ever() {
        assert_eq!(menu_timeout("set default=0\nset timeout=3\n"), 3);
        assert_eq!(menu_timeout("set default=0\n"), 5);
        let d = tempfile::tempdir().unwrap();
        prepare_syslinux_menu(d.path(), 0).unwrap();
        let menu = fs::read_to_string(d.path().join(SYSLINUX_CFG)).unwrap();
        assert_eq!(menu, "TIMEOUT 10\nPROMPT 1\n");
    }

    #[test]
    fn old_kernels_are_not_taken_for_a_version() {
        assert_eq!(kernel_file("vmlinuz-6.1"), Some(("6.1", "vmlinuz")));
        assert_eq!(kernel_file("vmlinuz-6.1.old"), None);
        assert_eq!(kernel_file("grub"), None);
    }

    #[test]
    fn tmpfiles_recreate_directories_copy_entries_and_keep_links() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path();
        fs::create_dir_all(f.join("lib/dpkg")).unwrap();
        fs::write(f.join("lib/dpkg/status"), "x").unwrap();
        fs::create_dir(f.join("mail")).unwrap();
        fs::set_permissions(f.join("mail"), fs::Permissions::from_mode(0o2775)).unwrap();
        std::os::unix::fs::symlink("../run", f.join("run")).unwrap();
        let text = tmpfiles_for(f).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let me = (nix::unistd::getuid(), nix::unistd::getgid());
        assert_eq!(
            lines,
            [
                format!("d /var/lib 0755 {} {} -", me.0, me.1),
                format!("C /var/lib/dpkg - - - - /{FACTORY_VAR}/lib/dpkg"),
                format!("d /var/mail 2775 {} {} -", me.0, me.1),
                "L /var/run - - - - ../run".to_string(),
            ]
        );
    }

    #[test]
    fn listing_finds_special_files_outside_the_emptied_directories() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        fs::create_dir_all(t.join("etc")).unwrap();
        fs::create_dir_all(t.join("dev")).unwrap();
        nix::unistd::mkfifo(&t.join("etc/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        nix::unistd::mkfifo(&t.join("dev/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let l = list(t).unwrap();
        assert_eq!(l.special, ["etc/pipe"]);
        assert_eq!(l.top, ["dev", "etc"]);
    }
}
