//! `--boot-test`: which output to boot after the build, and how (the
//! firmware, machine and architecture follow from the image's layout).

use serde::Serialize;
use std::path::PathBuf;

use super::{DiskPlan, OutputKind, OutputSpec};
use crate::cli::{Accel, Cli};
use crate::error::UsageError;

/// The boot test a build ends with.
#[derive(Clone, Debug, Serialize)]
pub struct BootPlan {
    pub image: PathBuf,
    pub timeout_secs: u64,
    /// Boot through UEFI (an x86 layout with an EFI system partition; Arm always).
    pub uefi: bool,
    /// The qemu-system that boots it (`x86_64`, `aarch64`, `arm`, `ppc64`).
    pub arch: &'static str,
    /// A Raspberry Pi 3 card (the rpi3 element).
    pub raspi3b: bool,
    pub accel: &'static str,
}

/// Outputs a boot test can start, most convenient first.
const BOOTABLE: &[OutputKind] = &[
    OutputKind::Qcow2,
    OutputKind::Raw,
    OutputKind::Vmdk,
    OutputKind::Vdi,
    OutputKind::Vhd,
    OutputKind::Vpc,
    OutputKind::Vhdx,
    OutputKind::Qed,
];

/// The boot test `--boot-test` asks for, if it does.
pub fn plan(
    cli: &Cli,
    outputs: &[OutputSpec],
    disk: Option<&DiskPlan>,
    elements: &[String],
    arch: &str,
) -> Result<Option<BootPlan>, UsageError> {
    let Some(timeout_secs) = cli.boot_test else {
        return Ok(None);
    };
    let image = BOOTABLE
        .iter()
        .find_map(|k| outputs.iter().find(|o| o.kind == *k))
        .map(|o| o.path.clone())
        .ok_or_else(|| {
            UsageError(
                "--boot-test boots a disk image: add -t qcow2 (or raw, vmdk, ...) to the output types"
                    .into(),
            )
        })?;
    let target = crate::arch::Arch::parse(arch)
        .ok()
        .filter(|a| crate::boot::Arch::parse(a.qemu_system).is_some())
        .ok_or_else(|| {
            UsageError(format!(
                "--boot-test boots {} images; this one is {arch}",
                bootable_arches()
            ))
        })?;
    let guest = crate::boot::Arch::parse(target.qemu_system).expect("filtered above");
    let esp = disk.is_some_and(|d| d.graph.esp_partition().is_some());
    let raspi3b = elements.iter().any(|e| e == "rpi3");
    if raspi3b && cli.accel == Accel::Kvm {
        return Err(UsageError(
            "--boot-test of a Raspberry Pi 3 card is emulated only: use --accel tcg or auto".into(),
        ));
    }
    Ok(Some(BootPlan {
        image,
        timeout_secs,
        // An i386 image with an ESP also has a BIOS boot partition, and the
        // 64-bit OVMF cannot run its BOOTIA32.EFI: it is booted with BIOS.
        uefi: guest.uefi_only() || (esp && target.dpkg != "i386"),
        arch: guest.name(),
        raspi3b,
        accel: match cli.accel {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        },
    }))
}

/// The architectures whose images a boot test can start, for messages.
fn bootable_arches() -> String {
    crate::arch::ARCHES
        .iter()
        .filter(|a| crate::boot::Arch::parse(a.qemu_system).is_some())
        .map(|a| a.dpkg)
        .collect::<Vec<_>>()
        .join(", ")
}
