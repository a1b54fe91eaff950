//! Native tools for a foreign-architecture chroot.
//!
//! Under qemu-user every program start costs tens of milliseconds of
//! translation, and mkinitramfs starts about ten thousand small programs
//! (cp, mkdir, realpath, readlink, modinfo, ...), which made the initramfs
//! of an arm64 image take most of its build. Those programs do the same work
//! on any architecture. So, when the host has the *very same version* of a
//! tool's package as the image, a host copy of the tool is put in the hooks
//! tree, with its ELF interpreter pointed at a host loader in the hooks tree
//! and the host libraries it needs beside it. `dib-native-tools CMD` (in the
//! chroot) binds those copies over the image's for the duration of CMD only;
//! the image's files are never changed. Tools whose versions differ, and
//! anything that reports or depends on the architecture (uname, dpkg, perl,
//! localedef), are left emulated. kmod is not bound over: mkinitramfs
//! copies /usr/bin/kmod itself into the initramfs, and would copy the
//! host's. But its `modinfo`, which mkinitramfs starts once per module
//! (about 100 ms each emulated, some 2000 times for an arm64 kernel's
//! MODULES=most), is put ahead of the image's link in mkinitramfs's PATH
//! (see `dib-native-tools`). Comparing the unpacked initramfs of an
//! emulated and a native-assisted build shows no other difference.

use anyhow::Context;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::super::hooks::tree::OURS;
use crate::host::{Cmd, tools};
use crate::log;

/// Each tool and the Debian package that ships it. Their output depends
/// only on their input files, not on the machine they run on.
const TOOLS: &[(&str, &str)] = &[
    ("cp", "coreutils"),
    ("mkdir", "coreutils"),
    ("realpath", "coreutils"),
    ("readlink", "coreutils"),
    ("ln", "coreutils"),
    ("cat", "coreutils"),
    ("rm", "coreutils"),
    ("mv", "coreutils"),
    ("chmod", "coreutils"),
    ("touch", "coreutils"),
    ("dirname", "coreutils"),
    ("basename", "coreutils"),
    ("sort", "coreutils"),
    ("find", "findutils"),
    ("xargs", "findutils"),
    ("cpio", "cpio"),
    ("gzip", "gzip"),
    ("zstd", "zstd"),
    ("grep", "grep"),
    ("sed", "sed"),
    // It reads the module's ELF whatever the architecture.
    ("modinfo", "kmod"),
];

/// Where the chroot sees the hooks tree, and the loader's path in it. The
/// new interpreter path must fit where the old one was (27 bytes on amd64).
const IN_CHROOT: &str = "/tmp/in_target.d";
const LOADER: &str = "ldnative";

/// Prepares `hooks/dib-create/native` for the image in `target`, when
/// `enabled` (the image's programs are emulated and the setting is on);
/// returns the tools it holds (none when no version matches).
pub fn prepare(
    target: &Path,
    hooks: &Path,
    arch: &str,
    enabled: bool,
) -> anyhow::Result<Vec<String>> {
    if !enabled {
        return Ok(Vec::new());
    }
    let dir = hooks.join(OURS).join("native");
    let chosen = matching_tools(target)?;
    if chosen.is_empty() {
        log::info("native tools: none (no tool of the host has the image's version)");
        return Ok(Vec::new());
    }
    fs::create_dir_all(dir.join("bin"))?;
    fs::create_dir_all(dir.join("lib"))?;
    let mut libs = BTreeSet::new();
    let mut loader = None;
    let mut names = Vec::new();
    for (name, host) in &chosen {
        let bytes = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let Some((interp, patched)) = with_interpreter(&bytes, &format!("{IN_CHROOT}/{LOADER}"))
        else {
            continue;
        };
        loader.get_or_insert(interp);
        libs.extend(shared_libraries(host)?);
        let dest = dir.join("bin").join(name);
        fs::write(&dest, patched)?;
        set_mode(&dest, 0o755)?;
        names.push(name.clone());
    }
    let Some(loader) = loader else {
        return Ok(Vec::new());
    };
    fs::copy(&loader, hooks.join(LOADER)).with_context(|| format!("copying {loader}"))?;
    set_mode(&hooks.join(LOADER), 0o755)?;
    let libdir = copy_libraries(&libs, &dir.join("lib"))?;
    fs::write(dir.join("libdir"), format!("{}\n", libdir.display()))?;
    fs::write(dir.join("tools"), names.join("\n") + "\n")?;
    log::info(&format!(
        "native tools for the {arch} chroot (the host has the image's versions): {}",
        names.join(" ")
    ));
    Ok(names)
}

/// The tools whose package has the same version on the host and in the image.
fn matching_tools(target: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let admindir = target.join("var/lib/dpkg");
    // One comparison per package, not per tool (coreutils ships most).
    let mut same: std::collections::BTreeMap<&str, bool> = Default::default();
    let mut out = Vec::new();
    for (tool, package) in TOOLS {
        let Some(host) = tools::find(tool) else {
            continue;
        };
        let matches = *same.entry(package).or_insert_with(|| {
            let host_version = package_version(package, None);
            host_version.is_some() && host_version == package_version(package, Some(&admindir))
        });
        if matches {
            out.push((tool.to_string(), fs::canonicalize(&host)?));
        }
    }
    Ok(out)
}

fn package_version(package: &str, admindir: Option<&Path>) -> Option<String> {
    let mut c = Cmd::new(format!("reading the version of {package}"), "dpkg-query");
    if let Some(a) = admindir {
        c = c.arg(format!("--admindir={}", a.display()));
    }
    let v = c
        .args(["-W", "-f", "${Status} ${Version}", package])
        .read()
        .ok()?;
    v.strip_prefix("install ok installed ").map(str::to_string)
}

/// The shared libraries a host program loads (from the host's ldd).
fn shared_libraries(program: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Cmd::new("listing a program's libraries", "ldd")
        .arg(program)
        .read()?;
    Ok(out
        .lines()
        .filter_map(|l| l.split("=>").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

/// Copies the libraries into `dest`; returns the host directory of libc,
/// where the host loader looks for them by default (the chroot helper binds
/// `dest` there while the tools run).
fn copy_libraries(libs: &BTreeSet<PathBuf>, dest: &Path) -> anyhow::Result<PathBuf> {
    let mut libdir = None;
    for lib in libs {
        let name = lib.file_name().context("a library without a name")?;
        fs::copy(lib, dest.join(name)).with_context(|| format!("copying {}", lib.display()))?;
        if name.to_string_lossy().starts_with("libc.so") {
            let real = fs::canonicalize(lib)?;
            libdir = real.parent().map(Path::to_path_buf);
        }
    }
    let libdir = libdir.context("the tools do not load libc")?;
    // /lib is /usr/lib on merged-/usr systems; bind the real directory.
    Ok(match libdir.strip_prefix("/lib") {
        Ok(rest) => Path::new("/usr/lib").join(rest),
        Err(_) => libdir,
    })
}

fn set_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

/// A copy of the ELF64 little-endian program `elf` whose interpreter
/// (PT_INTERP) is `new`, and the old interpreter; None for anything else or
/// when `new` does not fit.
pub fn with_interpreter(elf: &[u8], new: &str) -> Option<(String, Vec<u8>)> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (
        u64_at(32) as usize,
        u16_at(54) as usize,
        u16_at(56) as usize,
    );
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if ph + 56 > elf.len() {
            return None;
        }
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) != PT_INTERP {
            continue;
        }
        let (off, size) = (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize);
        let field = elf.get(off..off + size)?;
        let old = String::from_utf8_lossy(field.split(|b| *b == 0).next()?).into_owned();
        if new.len() + 1 > size {
            return None;
        }
        let mut out = elf.to_vec();
        out[off..off + size].fill(0);
        out[off..off + new.len()].copy_from_slice(new.as_bytes());
        return Some((old, out));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_is_replaced_in_a_host_program() {
        let Some(ls) = tools::find("ls") else { return };
        let bytes = fs::read(fs::canonicalize(ls).unwrap()).unwrap();
        let (old, patched) =
            with_interpreter(&bytes, "/tmp/in_target.d/ldnative").expect("ls is ELF64 LE");
        assert!(old.starts_with('/') && old.contains("ld"), "{old}");
        let (now, _) = with_interpreter(&patched, "/x").unwrap();
        assert_eq!(now, "/tmp/in_target.d/ldnative");
        assert_eq!(patched.len(), bytes.len());
    }

    #[test]
    fn too_long_or_not_elf_is_refused() {
        assert!(with_interpreter(b"#!/bin/sh\n", "/x").is_none());
        if let Some(ls) = tools::find("ls") {
            let bytes = fs::read(fs::canonicalize(ls).unwrap()).unwrap();
            assert!(with_interpreter(&bytes, &"/x".repeat(100)).is_none());
        }
    }
}
