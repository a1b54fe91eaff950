//! Disk images for real: the shipped layouts (mbr, gpt, efi) built from
//! debian-minimal to raw and qcow2, each checked with independent tools
//! (qemu-img check, sgdisk/sfdisk, fsck of every filesystem found by offset,
//! fstab against blkid); container archives checked with skopeo and umoci;
//! and fault tests that leave no loop device, mount or output behind.

mod common;

use common::{Need, Scratch, run_ok, trial, with_loop_at};
use libtest_mimic::{Arguments, Failed};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let args = Arguments::from_args();
    let fast = [
        Need::Root,
        Need::LoopDevices,
        Need::Tool("sgdisk"),
        Need::Tool("mkfs.vfat"),
    ];
    let mut real = fast.to_vec();
    real.extend([Need::Tool("mmdebstrap"), Need::Network("deb.debian.org:80")]);
    let containers = [Need::Root, Need::Tool("skopeo"), Need::Tool("umoci")];
    let mut tests = vec![
        trial(
            "fake_os_efi_layout_all_disk_formats",
            &fast,
            fake_os_all_formats,
        ),
        trial(
            "fake_os_default_image_size_fits_the_journal",
            &fast,
            fake_os_default_size,
        ),
        trial(
            "container_archives_unpack_with_skopeo_and_umoci",
            &containers,
            containers_unpack,
        ),
        trial(
            "failing_finalise_leaves_no_loop_device",
            &fast,
            failing_finalise_with_disk,
        ),
        trial(
            "sigint_while_filling_the_image",
            &fast,
            sigint_while_filling,
        ),
        trial(
            "finalise_on_tree_and_on_mounted_image",
            &fast,
            finalise_modes,
        ),
        trial(
            "legacy_image_block_device_is_refused",
            &fast,
            legacy_block_device,
        ),
        trial(
            "xfs_btrfs_and_swap_from_a_custom_config",
            &[
                Need::Root,
                Need::LoopDevices,
                Need::Tool("mkfs.xfs"),
                Need::Tool("mkfs.btrfs"),
                Need::Tool("xfs_repair"),
            ],
            other_filesystems,
        ),
        trial(
            "mbr_logical_partitions_are_filled_and_mounted_by_number",
            &fast,
            logical_partitions,
        ),
        trial(
            "dib_lvm_configs_build_without_device_mapper",
            &lvm_needs(),
            dib_lvm_configs,
        ),
        trial(
            "lvm_thin_pools_and_overfull_groups_are_refused",
            &lvm_needs(),
            lvm_refusals,
        ),
    ];
    // CI builds only the GPT layout for BIOS here: tests/vm.rs builds and
    // boots debian-minimal on block-device-mbr and block-device-efi, so the
    // other two (two more full builds) run in scripts/test-long (--ignored).
    for layout in ["mbr", "gpt", "efi"] {
        let t = trial(
            &format!("debian_minimal_{layout}_raw_and_qcow2"),
            &real,
            move || debian_layout(layout),
        );
        tests.push(if layout == "gpt" {
            t
        } else {
            t.with_ignored_flag(true)
        });
    }
    libtest_mimic::run(&args, tests).exit();
}

fn lvm_needs() -> Vec<Need> {
    vec![
        Need::Root,
        Need::LoopDevices,
        Need::Upstream,
        Need::Installed("lvs", "lvm2"),
        Need::Tool("mkfs.xfs"),
        Need::Tool("xfs_repair"),
    ]
}

fn cmd(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args);
    c
}

fn fake_os_all_formats() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-disk-");
    let out = s.path().join("fake");
    let mut c = s.command();
    c.args([
        "-n",
        "--image-size",
        "0.3",
        "-t",
        "raw,qcow2,vhd,vmdk,squashfs",
        "-o",
    ])
    .arg(&out)
    .args(["fake-os", "block-device-efi"]);
    run_ok(c)?;
    let raw = out.with_extension("raw");
    check_disk(&raw, 3)?;
    for ext in ["qcow2", "vhd", "vmdk"] {
        let img = out.with_extension(ext);
        let fmt = if ext == "vhd" { "vpc" } else { ext };
        let info = run_ok(cmd(
            "qemu-img",
            &["info", "--output=json", img.to_str().unwrap()],
        ))?;
        if !info.contains(&format!("\"format\": \"{fmt}\"")) {
            return Err(format!("{ext}: qemu-img says {info}").into());
        }
        if ext == "qcow2" && !info.contains("\"compression-type\": \"zstd\"") {
            return Err(format!("qcow2 is not zstd-compressed: {info}").into());
        }
    }
    run_ok(cmd(
        "qemu-img",
        &["check", out.with_extension("qcow2").to_str().unwrap()],
    ))?;
    let listing = run_ok(cmd(
        "unsquashfs",
        &["-l", out.with_extension("squash").to_str().unwrap()],
    ))?;
    if !listing.contains("squashfs-root/etc/os-release") {
        return Err("squashfs lacks etc/os-release".into());
    }
    common::assert_clean(s.path())
}

/// No --image-size: the size computed for a tree of a few MiB must leave
/// mke2fs room for the 64 MiB journal (it refused: "Total journal size too
/// big for filesystem").
fn fake_os_default_size() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-disk-size-");
    let out = s.path().join("small");
    let mut c = s.command();
    c.args(["-n", "-t", "raw", "-o"])
        .arg(&out)
        .args(["fake-os", "block-device-mbr"]);
    run_ok(c)?;
    check_disk(&out.with_extension("raw"), 1)?;
    common::assert_clean(s.path())
}

/// sfdisk's JSON dump of a raw disk, its parsed table, and its partitions.
fn partition_table(
    raw: &Path,
) -> Result<(String, serde_json::Value, Vec<serde_json::Value>), Failed> {
    let dump = run_ok(cmd("sfdisk", &["-J", raw.to_str().unwrap()]))?;
    let table: serde_json::Value = serde_json::from_str(&dump)?;
    let parts = table["partitiontable"]["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok((dump, table, parts))
}

/// Byte offset and size of a partition of a 512-byte-sector disk.
fn extent(p: &serde_json::Value) -> (u64, u64) {
    (
        p["start"].as_u64().unwrap_or(0) * 512,
        p["size"].as_u64().unwrap_or(0) * 512,
    )
}

/// Checks a raw disk with tools that are not ours: the partition table, each
/// filesystem's fsck, and that fstab names filesystems that exist.
fn check_disk(raw: &Path, parts: usize) -> Result<(), Failed> {
    let (dump, table, partitions) = partition_table(raw)?;
    if partitions.len() != parts {
        return Err(format!("expected {parts} partitions, sfdisk says {dump}").into());
    }
    if table["partitiontable"]["label"] == "gpt" {
        let v = run_ok(cmd("sgdisk", &["-v", raw.to_str().unwrap()]))?;
        if !v.contains("No problems found") {
            return Err(format!("sgdisk -v: {v}").into());
        }
    }
    let sector = table["partitiontable"]["sectorsize"]
        .as_u64()
        .unwrap_or(512);
    let mut seen = Vec::new();
    for p in &partitions {
        let start = p["start"].as_u64().unwrap() * sector;
        let size = p["size"].as_u64().unwrap() * sector;
        if let Some(fs) = check_filesystem_at(raw, start, size)? {
            seen.push(fs);
        }
    }
    let fstab = read_fstab(raw, &partitions, sector)?;
    for line in fstab
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let id = line.split_whitespace().next().unwrap_or("");
        if !seen
            .iter()
            .any(|(label, uuid)| id == format!("LABEL={label}") || id == format!("UUID={uuid}"))
        {
            return Err(
                format!("fstab line {line:?} names no filesystem on the disk ({seen:?})").into(),
            );
        }
    }
    Ok(())
}

/// Attaches a read-only loop at the partition's offset, runs fsck, and
/// returns (label, uuid) from blkid; None for a partition with no filesystem.
fn check_filesystem_at(
    raw: &Path,
    start: u64,
    size: u64,
) -> Result<Option<(String, String)>, Failed> {
    with_loop_at(raw, start, size, |dev| {
        // -p: probe the device itself; blkid's cache remembers old loop users.
        let probe = Command::new("blkid")
            .args(["-p", "-o", "export", dev])
            .output()?;
        let text = String::from_utf8_lossy(&probe.stdout).to_string();
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or("")
                .to_string()
        };
        let fstype = get("TYPE");
        if fstype.is_empty() {
            return Ok(None);
        }
        let fsck: &[&str] = match fstype.as_str() {
            "ext4" | "ext3" | "ext2" => &["e2fsck", "-fn"],
            "vfat" => &["fsck.vfat", "-n"],
            "xfs" => &["xfs_repair", "-n"],
            "btrfs" => &["btrfs", "check", "--readonly"],
            _ => return Ok(Some((get("LABEL"), get("UUID")))),
        };
        let mut c = Command::new(fsck[0]);
        c.args(&fsck[1..]).arg(dev);
        run_ok(c).map_err(|e| format!("fsck of {fstype} at offset {start}: {e:?}"))?;
        Ok(Some((get("LABEL"), get("UUID"))))
    })
}

/// A file's contents from the ext filesystem at `start` (debugfs, no mount).
fn read_ext_file(raw: &Path, start: u64, size: u64, path: &str) -> Result<Option<String>, Failed> {
    with_loop_at(raw, start, size, |dev| {
        let o = Command::new("debugfs")
            .args(["-R", &format!("cat {path}"), dev])
            .output()?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        Ok((o.status.success() && !text.is_empty()).then_some(text))
    })
}

/// Reads /etc/fstab from the root filesystem (the ext partition holding it).
fn read_fstab(raw: &Path, partitions: &[serde_json::Value], sector: u64) -> Result<String, Failed> {
    for p in partitions {
        let start = p["start"].as_u64().unwrap() * sector;
        let size = p["size"].as_u64().unwrap() * sector;
        if let Some(text) = read_ext_file(raw, start, size, "/etc/fstab")?
            && text.contains(" / ")
        {
            return Ok(text);
        }
    }
    Err("no partition holds an /etc/fstab".into())
}

fn containers_unpack() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-disk-");
    let out = s.path().join("ctr");
    let mut c = s.command();
    c.args(["-n", "-t", "docker,oci", "--docker-target", "demo:v1", "-o"])
        .arg(&out)
        .arg("fake-os");
    run_ok(c)?;
    let docker = s.path().join("ctr.docker.tar");
    let oci = s.path().join("ctr.oci.tar");
    let inspect = run_ok(cmd(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", docker.display())],
    ))?;
    if !inspect.contains("\"Architecture\": \"amd64\"") {
        return Err(format!("skopeo inspect: {inspect}").into());
    }
    run_ok(cmd(
        "skopeo",
        &["inspect", &format!("oci-archive:{}:v1", oci.display())],
    ))?;
    // umoci reads an OCI layout directory: unpack the archive, then the image.
    let layout = s.path().join("layout");
    std::fs::create_dir(&layout)?;
    run_ok(cmd(
        "tar",
        &["-xf", oci.to_str().unwrap(), "-C", layout.to_str().unwrap()],
    ))?;
    let bundle = s.path().join("bundle");
    run_ok(cmd(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:v1", layout.display()),
            bundle.to_str().unwrap(),
        ],
    ))?;
    let release = std::fs::read_to_string(bundle.join("rootfs/etc/os-release"))?;
    if !release.contains("fake os for tests") {
        return Err("the unpacked OCI layer lacks the tree's os-release".into());
    }
    // The docker archive converts to OCI too, and unpacks the same.
    let from_docker = s.path().join("from-docker");
    run_ok(cmd(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{}", docker.display()),
            &format!("oci:{}:d", from_docker.display()),
        ],
    ))?;
    let bundle2 = s.path().join("bundle2");
    run_ok(cmd(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:d", from_docker.display()),
            bundle2.to_str().unwrap(),
        ],
    ))?;
    if !bundle2.join("rootfs/bin/bash").exists() {
        return Err("the docker archive's layer lacks /bin/bash".into());
    }
    Ok(())
}

fn failing_finalise_with_disk() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-disk-");
    s.element(
        "fails",
        "finalise.d",
        "echo \"device is $IMAGE_BLOCK_DEVICE\"; test -b \"$IMAGE_BLOCK_DEVICE\"; exit 7",
    );
    let out = s.path().join("img");
    let mut c = s.command();
    c.args(["-n", "--image-size", "0.1", "-t", "raw,qcow2", "-o"])
        .arg(&out)
        .args(["fake-os", "block-device-gpt", "fails"]);
    let o = c.output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() != Some(1) || !err.contains("exit code 7") {
        return Err(format!(
            "expected the finalise.d failure (exit 7):\n{}",
            common::tail(&err, 20)
        )
        .into());
    }
    if !err.contains("device is /dev/loop") {
        return Err("finalise.d did not see IMAGE_BLOCK_DEVICE".into());
    }
    s.assert_nothing_left(&[out.with_extension("raw"), out.with_extension("qcow2")])
}

/// SIGINT while mkfs copies the tree into the image.
fn sigint_while_filling() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-disk-");
    // Enough incompressible data that filling takes a few seconds.
    s.element(
        "big",
        "post-root.d",
        "head -c 1500M /dev/urandom > \"$TARGET_ROOT/big.bin\"",
    );
    let out = s.path().join("img");
    let mut c = s.command();
    c.args(["-n", "-t", "raw", "-o"])
        .arg(&out)
        .args(["fake-os", "block-device-mbr", "big"]);
    let mut child = c.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let filling = Command::new("pgrep").args(["-f", "mke2fs.*-d "]).output()?;
        if !filling.stdout.is_empty() {
            break;
        }
        if let Some(st) = child.try_wait()? {
            return Err(format!("the build ended ({st}) before filling started").into());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("filling never started".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let status = child.wait()?;
    if status.code() != Some(130) {
        return Err(format!("expected exit 130, got {status}").into());
    }
    s.assert_nothing_left(&[out.with_extension("raw")])
}

fn debian_layout(layout: &str) -> Result<(), Failed> {
    let s = Scratch::new("dib-create-disk-");
    let out = s.path().join(format!("debian-{layout}"));
    let started = Instant::now();
    let mut c = s.command();
    c.env("DIB_RELEASE", "bookworm")
        .args(["-t", "raw,qcow2", "-o"])
        .arg(&out)
        .args(["debian-minimal", &format!("block-device-{layout}")]);
    run_ok(c)?;
    println!(
        "built debian-minimal with block-device-{layout} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let parts = match layout {
        "mbr" => 1,
        "gpt" => 2,
        _ => 3,
    };
    check_disk(&out.with_extension("raw"), parts)?;
    run_ok(cmd(
        "qemu-img",
        &["check", out.with_extension("qcow2").to_str().unwrap()],
    ))?;
    common::assert_clean(s.path())
}

/// Both finalise paths: on the staging tree (default) and on the mounted
/// image, where a hook sees its root on the real partition. Either way the
/// hook's file lands in the image's root filesystem.
fn finalise_modes() -> Result<(), Failed> {
    for mode in ["tree", "mounted"] {
        let s = Scratch::new("dib-create-disk-");
        s.element(
            "where",
            "finalise.d",
            "part=$(echo \"$IMAGE_BLOCK_DEVICES\" | tr ' ' '\\n' | sed -n 's/^\\[root\\]=//p')\n\
             if grep -q \"^$part \" /proc/mounts; then echo mounted; else echo tree; fi > /etc/finalise-mode",
        );
        let out = s.path().join("img");
        let mut c = s.command();
        c.env("DIB_CREATE_FINALISE", mode)
            .args(["-n", "--image-size", "0.2", "-t", "raw", "-o"])
            .arg(&out)
            .args(["fake-os", "block-device-mbr", "where"]);
        run_ok(c)?;
        let raw = out.with_extension("raw");
        let (_, _, parts) = partition_table(&raw)?;
        let (start, size) = extent(parts.first().ok_or("the disk has no partition")?);
        let got = read_ext_file(&raw, start, size, "/etc/finalise-mode")?.unwrap_or_default();
        let got = got.trim();
        if got != mode {
            return Err(format!("DIB_CREATE_FINALISE={mode}: the hook saw {got:?}").into());
        }
        common::assert_clean(s.path())?;
    }
    Ok(())
}

/// Every filesystem type besides ext4 and vfat, from a DIB_BLOCK_DEVICE_CONFIG:
/// xfs (filled through a mount), btrfs (--rootdir) and swap (mount point none).
const OTHER_FILESYSTEMS: &str = "
- local_loop:
    name: image0
    size: 1GiB
- partitioning:
    base: image0
    label: gpt
    partitions:
      - name: root
        size: 300MiB
        mkfs:
          type: ext4
          mount:
            mount_point: /
            fstab:
              fsck-passno: 1
      - name: srv
        size: 320MiB
        mkfs:
          type: xfs
          label: srvdata
          mount:
            mount_point: /srv
            fstab:
              options: defaults
      - name: home
        size: 200MiB
        mkfs:
          type: btrfs
          mount:
            mount_point: /home
            fstab:
              options: defaults
      - name: swap
        size: 64MiB
        mkfs:
          type: swap
          mount:
            mount_point: none
            fstab:
              options: sw
";

fn other_filesystems() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-disk-");
    s.element(
        "data",
        "post-root.d",
        "mkdir -p \"$TARGET_ROOT/srv\" \"$TARGET_ROOT/home\"\n\
         echo on-xfs > \"$TARGET_ROOT/srv/data\"; echo on-btrfs > \"$TARGET_ROOT/home/data\"",
    );
    let out = s.path().join("fs");
    let mut c = s.command();
    c.env("DIB_BLOCK_DEVICE_CONFIG", OTHER_FILESYSTEMS)
        .args(["-n", "-t", "raw", "-o"])
        .arg(&out)
        .args(["fake-os", "data"]);
    run_ok(c)?;
    let raw = out.with_extension("raw");
    check_disk(&raw, 4)?;
    let (_, _, parts) = partition_table(&raw)?;
    let fstab = read_fstab(&raw, &parts, 512)?;
    for want in [" /srv xfs ", " /home btrfs ", " none swap sw "] {
        if !fstab.contains(want) {
            return Err(format!("fstab lacks {want:?}:\n{fstab}").into());
        }
    }
    // The root filesystem must not hold what belongs to the others.
    let (start, size) = extent(&parts[0]);
    if read_ext_file(&raw, start, size, "/srv/data")?.is_some() {
        return Err("/srv/data landed in the root filesystem, not in xfs".into());
    }
    s.assert_nothing_left(&[])
}

/// DIB's MBR partitions are logical unless flagged primary; logical ones are
/// numbered from 5, after the extended partition.
const LOGICAL: &str = "
- local_loop:
    name: image0
    size: 512MiB
- partitioning:
    base: image0
    label: mbr
    partitions:
      - name: root
        flags: [primary]
        size: 256MiB
        mkfs:
          type: ext4
          mount:
            mount_point: /
            fstab: {options: defaults, fsck-passno: 1}
      - name: data
        size: 100%
        mkfs:
          type: ext4
          label: data
          mount:
            mount_point: /srv
            fstab: {options: defaults, fsck-passno: 2}
";

fn logical_partitions() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-disk-");
    s.element(
        "data",
        "post-root.d",
        "mkdir -p \"$TARGET_ROOT/srv\"; echo on-logical > \"$TARGET_ROOT/srv/data\"",
    );
    let out = s.path().join("logical");
    let mut c = s.command();
    c.env("DIB_BLOCK_DEVICE_CONFIG", LOGICAL)
        .args(["-n", "-t", "raw", "-o"])
        .arg(&out)
        .args(["fake-os", "data"]);
    run_ok(c)?;
    let raw = out.with_extension("raw");
    let (dump, _, parts) = partition_table(&raw)?;
    let names: Vec<String> = parts
        .iter()
        .map(|p| {
            p["node"]
                .as_str()
                .unwrap_or("")
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    if names != ["1", "2", "5"] {
        return Err(
            format!("expected partitions 1, 2 (extended) and 5, got {names:?}:\n{dump}").into(),
        );
    }
    let (start, size) = extent(&parts[2]);
    match read_ext_file(&raw, start, size, "/data")? {
        Some(t) if t.trim() == "on-logical" => {}
        other => return Err(format!("/srv/data on the logical partition: {other:?}").into()),
    }
    s.assert_nothing_left(&[])
}

/// A block-device.d hook that picks the device itself (DIB's pre-YAML path)
/// gets a clear refusal, and nothing is left behind.
fn legacy_block_device() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-disk-");
    s.element(
        "legacy",
        "block-device.d",
        "echo IMAGE_BLOCK_DEVICE=/dev/loop42",
    );
    let out = s.path().join("img");
    let mut c = s.command();
    c.args(["-n", "-t", "raw", "-o"])
        .arg(&out)
        .args(["fake-os", "block-device-mbr", "legacy"]);
    let o = c.output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() != Some(2) || !err.contains("IMAGE_BLOCK_DEVICE=/dev/loop42") {
        return Err(format!("expected a refusal (exit 2):\n{}", common::tail(&err, 10)).into());
    }
    s.assert_nothing_left(&[out.with_extension("raw")])
}

// ---- LVM, without device-mapper ----------------------------------------------

/// DIB's `lvm_*` test configs (from the installed diskimage-builder) that
/// build; `lvm_tree_multiple_partitions` is refused when read (see
/// src/blockdev/dib_configs.rs), and the two below are refused at build time.
const DIB_LVM_CONFIGS: &[&str] = &[
    "lvm_tree",
    "lvm_graph",
    "lvm_tree_multiple_pv",
    "lvm_tree_multiple_pv_vg",
    "lvm_tree_partition_ordering",
    // lv_data takes all 476 extents of two 1G partitions: two runs, built in
    // a file of its own and copied into place (src/exec/lvm.rs).
    "lvm_tree_spanned_vg",
];

fn dib_config(name: &str) -> Result<String, Failed> {
    let dir = common::upstream::elements_dir()?
        .parent()
        .ok_or("no DIB package directory")?
        .join("block_device/tests/config");
    Ok(std::fs::read_to_string(dir.join(format!("{name}.yaml")))?)
}

/// DIB's config with ext4 for xfs: its configs give xfs to 100 MiB volumes,
/// and mkfs.xfs makes none under 300 MiB since xfsprogs 5.19 (DIB fails
/// there too). The layout is what these tests read back; xfs on logical
/// volumes is built in the shipped efi-lvm layout.
fn dib_config_on_ext4(name: &str) -> Result<String, Failed> {
    Ok(dib_config(name)?
        .replace("type: \"xfs\"", "type: ext4")
        .replace("type: xfs", "type: ext4"))
}

/// Builds fake-os on `config` into the raw image `name`; the build's output
/// and the state of the host's /etc/lvm from before the build.
fn build_on_config(
    s: &Scratch,
    name: &str,
    config: &str,
) -> Result<(std::process::Output, String), Failed> {
    let mut c = s.command();
    c.env("DIB_BLOCK_DEVICE_CONFIG", config)
        .args(["-n", "-t", "raw", "-o"])
        .arg(s.path().join(name))
        .arg("fake-os");
    let before = common::etc_lvm_state()?;
    Ok((c.output()?, before))
}

/// Read-only loop devices over every partition of `raw`, detached on drop.
struct PartitionLoops {
    devs: Vec<(String, u64)>,
}

impl PartitionLoops {
    fn attach(raw: &Path, parts: &[serde_json::Value]) -> Result<Self, Failed> {
        let mut me = PartitionLoops { devs: Vec::new() };
        for p in parts {
            let (start, size) = extent(p);
            let mut c = Command::new("losetup");
            c.args(["--find", "--show", "--read-only"])
                .arg(format!("--offset={start}"))
                .arg(format!("--sizelimit={size}"))
                .arg(raw);
            me.devs.push((run_ok(c)?.trim().to_string(), start));
        }
        Ok(me)
    }
}

impl Drop for PartitionLoops {
    fn drop(&mut self) {
        for (d, _) in &self.devs {
            let _ = Command::new("losetup").args(["-d", d]).status();
        }
    }
}

/// One lvm2 report (`lvs`, `pvs`) as JSON rows, read with a private
/// configuration that sees only `devs` and writes nothing to /etc/lvm.
fn lvm_report(
    conf: &Path,
    tool: &str,
    fields: &str,
    devs: &PartitionLoops,
) -> Result<Vec<serde_json::Value>, Failed> {
    let list: Vec<std::path::PathBuf> = devs.devs.iter().map(|(d, _)| d.into()).collect();
    std::fs::create_dir_all(conf.join("lock"))?;
    std::fs::write(
        conf.join("lvm.conf"),
        dib::host::lvm::render(&conf.join("lock"), &list),
    )?;
    let mut c = Command::new(tool);
    c.env("LVM_SYSTEM_DIR", conf)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .args([
            "--driverloaded",
            "n",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            fields,
        ]);
    let text = run_ok(c)?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let key = if tool == "lvs" { "lv" } else { "pv" };
    Ok(v["report"][0][key].as_array().cloned().unwrap_or_default())
}

fn field(row: &serde_json::Value, k: &str) -> String {
    row[k].as_str().unwrap_or_default().to_string()
}

/// What DIB's config asks of each lv: (vg, lv, bytes), from the config text
/// and the groups' extent counts: DIB rounds a size down to whole extents,
/// lvcreate a percentage too.
fn wanted_lv_sizes(config: &str, vg_extents: &dyn Fn(&str) -> u64) -> Vec<(String, String, u64)> {
    const EXTENT: u64 = 4 << 20;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str(config).unwrap_or_default();
    let mut out = Vec::new();
    for entry in docs.iter().filter_map(|d| d.get("lvm")) {
        for lv in entry["lvs"].as_array().into_iter().flatten() {
            let vg = lv["base"].as_str().unwrap_or_default().to_string();
            let total = vg_extents(&vg);
            let extents = match (lv["size"].as_str(), lv["extents"].as_str()) {
                (Some(size), _) => dib::blockdev::size::parse_size(size).unwrap_or(0) / EXTENT,
                (None, Some(e)) => {
                    let pct: u64 = e.trim_end_matches("%VG").parse().unwrap_or(0);
                    pct * total / 100
                }
                _ => 0,
            };
            out.push((
                vg,
                lv["name"].as_str().unwrap_or_default().to_string(),
                extents * EXTENT,
            ));
        }
    }
    out
}

/// Each of DIB's LVM configs built on a host without device-mapper: lvs reads
/// back the names and sizes the config asks for, every filesystem found at
/// its volume's extents passes fsck, and /etc/lvm is as it was.
fn dib_lvm_configs() -> Result<(), Failed> {
    for name in DIB_LVM_CONFIGS {
        let s = Scratch::new("dib-create-lvm-");
        let (o, etc_before) = build_on_config(&s, name, &dib_config_on_ext4(name)?)?;
        if !o.status.success() {
            return Err(format!(
                "{name}: build failed:\n{}",
                common::tail(&String::from_utf8_lossy(&o.stderr), 30)
            )
            .into());
        }
        check_lvm_image(&s, name)?;
        if common::etc_lvm_state()? != etc_before {
            return Err(format!("{name}: the build changed the host's /etc/lvm").into());
        }
        s.assert_nothing_left(&[])?;
    }
    Ok(())
}

fn check_lvm_image(s: &Scratch, name: &str) -> Result<(), Failed> {
    let raw = s.path().join(format!("{name}.raw"));
    let (_, _, parts) = partition_table(&raw)?;
    let loops = PartitionLoops::attach(&raw, &parts)?;
    let conf = s.path().join("lvm-readback");
    let pvs = lvm_report(&conf, "pvs", "pv_name,vg_name,pe_start,pv_pe_count", &loops)?;
    let lvs = one_row_per_volume(lvm_report(
        &conf,
        "lvs",
        "vg_name,lv_name,lv_size,seg_pe_ranges,vg_autoactivation",
        &loops,
    )?);
    // The build holds its groups from the host's event activation; the
    // image's initramfs must find them activatable.
    if let Some(l) = lvs
        .iter()
        .find(|l| field(l, "vg_autoactivation") != "enabled")
    {
        return Err(format!(
            "{name}: volume group {} is left flagged against autoactivation",
            field(l, "vg_name")
        )
        .into());
    }
    let vg_extents = |vg: &str| -> u64 {
        pvs.iter()
            .filter(|p| field(p, "vg_name") == vg)
            .map(|p| field(p, "pv_pe_count").parse::<u64>().unwrap_or(0))
            .sum()
    };
    let wanted = wanted_lv_sizes(&dib_config_on_ext4(name)?, &vg_extents);
    if wanted.is_empty() {
        return Err(format!("{name}: no lv read from the config").into());
    }
    let got: Vec<(String, String, u64)> = lvs
        .iter()
        .map(|l| {
            (
                field(l, "vg_name"),
                field(l, "lv_name"),
                field(l, "lv_size").parse().unwrap_or(0),
            )
        })
        .collect();
    let sorted = |mut v: Vec<(String, String, u64)>| {
        v.sort();
        v
    };
    if sorted(got.clone()) != sorted(wanted.clone()) {
        return Err(
            format!("{name}: lvs reads back {got:?}, the config asks for {wanted:?}").into(),
        );
    }
    for l in &lvs {
        let runs = lv_runs(l, &pvs, &loops)?;
        let size: u64 = field(l, "lv_size").parse()?;
        let found = match runs[..] {
            [(offset, _)] => check_filesystem_at(&raw, offset, size)?,
            // Spanning physical volumes: its runs joined, as device-mapper
            // joins them at boot.
            _ => {
                let joined = s.path().join(format!("{}.joined", field(l, "lv_name")));
                join_runs(&raw, &runs, &joined)?;
                let found = check_filesystem_at(&joined, 0, size)?;
                std::fs::remove_file(&joined)?;
                found
            }
        };
        if found.is_none() && !field(l, "lv_name").contains("swap") {
            return Err(format!(
                "{name}: no filesystem at the extents of {}",
                field(l, "lv_name")
            )
            .into());
        }
    }
    Ok(())
}

/// lvs gives a row per segment with a segment field asked for: one row per
/// volume, its segments' ranges in order, space-separated.
fn one_row_per_volume(rows: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    for row in rows {
        let same = |r: &&mut serde_json::Value| {
            field(r, "vg_name") == field(&row, "vg_name")
                && field(r, "lv_name") == field(&row, "lv_name")
        };
        match out.iter_mut().find(|r| same(r)) {
            Some(r) => {
                let ranges = format!(
                    "{} {}",
                    field(r, "seg_pe_ranges"),
                    field(&row, "seg_pe_ranges")
                );
                r["seg_pe_ranges"] = ranges.into();
            }
            None => out.push(row),
        }
    }
    out
}

/// (offset in the raw file, bytes) of each run of extents of a volume, from
/// `seg_pe_ranges`: `/dev/loopN:first-last`, one per segment.
fn lv_runs(
    lv: &serde_json::Value,
    pvs: &[serde_json::Value],
    loops: &PartitionLoops,
) -> Result<Vec<(u64, u64)>, Failed> {
    const EXTENT: u64 = 4 << 20;
    let mut runs = Vec::new();
    for range in field(lv, "seg_pe_ranges").split_whitespace() {
        let (dev, span) = range.split_once(':').ok_or(format!("pe range {range:?}"))?;
        let (first, last) = span.split_once('-').ok_or(format!("pe range {range:?}"))?;
        let (first, last): (u64, u64) = (first.parse()?, last.parse()?);
        let pv = pvs
            .iter()
            .find(|p| field(p, "pv_name") == dev)
            .ok_or("lv on an unknown pv")?;
        let pe_start: u64 = field(pv, "pe_start").parse()?;
        let part_start = loops
            .devs
            .iter()
            .find(|(d, _)| d == dev)
            .map(|(_, s)| *s)
            .unwrap_or(0);
        runs.push((
            part_start + pe_start + first * EXTENT,
            (last - first + 1) * EXTENT,
        ));
    }
    if runs.is_empty() {
        return Err(format!("no extents for {}", field(lv, "lv_name")).into());
    }
    Ok(runs)
}

/// The bytes of `runs` of `raw`, one after another, in the file `to`.
fn join_runs(raw: &Path, runs: &[(u64, u64)], to: &Path) -> Result<(), Failed> {
    use std::io::{Read, Seek, SeekFrom};
    let mut src = std::fs::File::open(raw)?;
    let mut dst = std::fs::File::create(to)?;
    for &(offset, bytes) in runs {
        src.seek(SeekFrom::Start(offset))?;
        std::io::copy(&mut (&mut src).take(bytes), &mut dst)?;
    }
    Ok(())
}

/// A build refused as bad input (exit 2) with a message containing `says`.
fn expect_refusal(o: &std::process::Output, what: &str, says: &str) -> Result<(), Failed> {
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.code() != Some(2) || !err.contains(says) {
        return Err(format!(
            "{what}: expected exit 2 saying {says:?}, got {:?}:\n{}",
            o.status.code(),
            common::tail(&err, 20)
        )
        .into());
    }
    Ok(())
}

/// What cannot be built is refused as bad input with the reason and the way
/// out: by --dry-run, thin pools and xfs on a volume the config makes too
/// small for it; xfs on a volume whose share of the disk is too small, once
/// the disk is laid out, before finalise.d and before any filesystem is made.
fn lvm_refusals() -> Result<(), Failed> {
    let s = Scratch::new("dib-create-lvm-");
    let dry_run = |config: &str, name: &str| -> Result<std::process::Output, Failed> {
        let mut c = s.command();
        c.env("DIB_BLOCK_DEVICE_CONFIG", config)
            .args(["--dry-run", "-t", "raw", "-o"])
            .arg(s.path().join(name))
            .arg("fake-os");
        Ok(c.output()?)
    };
    expect_refusal(
        &dry_run(&dib_config("lvm_tree_thin_provision")?, "thin")?,
        "thin pool",
        "lv lv_thinpool is a thin-pool volume",
    )?;
    expect_refusal(
        &dry_run(&dib_config("lvm_tree")?, "lvm_tree")?,
        "xfs on 100M (92 MiB in whole extents)",
        "fs_log sits on lv_log, which is 92 MiB; mkfs.xfs makes none smaller than 300 MiB",
    )?;
    // 20% of the group on a 0.3 GB disk: 60 MiB, known once it is laid out.
    let small = common::LVM_EXT4.replace(
        "    base: lv_srv\n    type: ext4",
        "    base: lv_srv\n    type: xfs",
    );
    let mut c = s.command();
    c.env("DIB_BLOCK_DEVICE_CONFIG", &small)
        .args(["-n", "--image-size", "0.3", "-t", "raw", "-o"])
        .arg(s.path().join("small"))
        .arg("fake-os");
    expect_refusal(
        &c.output()?,
        "xfs on 20% of the group",
        "fs_srv sits on lv_srv, which is 60 MiB; mkfs.xfs makes none smaller than 300 MiB",
    )?;
    s.assert_nothing_left(&[s.path().join("lvm_tree.raw"), s.path().join("small.raw")])
}
