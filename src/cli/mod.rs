//! Command line: disk-image-create's flags, parsed into a typed [`Request`].
//!
//! Every flag of disk-image-create parses with DIB's meaning. Flags whose
//! behaviour lands in a later stage say so at run time (exit 2), never at parse
//! time, so scripts written for DIB keep parsing.

pub mod setup;

use clap::{ArgAction, Parser, ValueEnum};
use std::path::PathBuf;

/// Output formats of the plan printed by `--dry-run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    Yaml,
}

/// The accelerator for boot tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// Probe KVM briefly and fall back to TCG.
    Auto,
    Kvm,
    Tcg,
}

/// A shell to print completions for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "dib-create",
    version,
    about = "Compose disk images from diskimage-builder elements",
    long_about = "Compose disk images from diskimage-builder (DIB) elements.\n\n\
        dib-create reads the same elements, flags and DIB_* variables as disk-image-create, \
        and builds the root filesystem, block devices and outputs they describe.",
    after_help = "Environment: ELEMENTS_PATH (colon-separated element directories, searched \
        before the shipped ones), DIB_* variables as in disk-image-create, \
        break=before-<phase>|after-<phase>|after-error to get a shell.",
    next_line_help = false
)]
pub struct Cli {
    /// Elements to include in the image.
    #[arg(
        value_name = "ELEMENT",
        required_unless_present_any = ["cleanup", "cache_prune", "lock_diff", "completions", "man", "list_elements"]
    )]
    pub elements: Vec<String>,

    // ---- Image ----
    /// Architecture of the image, in dpkg naming (amd64, arm64, armhf, ...).
    #[arg(short = 'a', value_name = "ARCH", env = "ARCH", help_heading = "Image")]
    pub arch: Option<String>,
    /// Image file name without extension.
    #[arg(
        short = 'o',
        value_name = "NAME",
        default_value = "image",
        help_heading = "Image"
    )]
    pub output: String,
    /// Output types, comma separated: qcow2, raw, vhd, vmdk, tar, tgz, squashfs, docker, oci, ostree, ...
    #[arg(
        short = 't',
        value_name = "TYPES",
        default_value = "qcow2",
        help_heading = "Image"
    )]
    pub types: String,
    /// Do not compress the qcow2 output.
    #[arg(short = 'u', help_heading = "Image")]
    pub uncompressed: bool,
    /// Extra packages to install after install.d (comma separated, repeatable).
    #[arg(short = 'p', value_name = "PKGS", action = ArgAction::Append, help_heading = "Image")]
    pub packages: Vec<String>,
    /// Do not add the `base` element.
    #[arg(short = 'n', help_heading = "Image")]
    pub no_base: bool,
    /// Write sha256 and md5 checksum files beside each output.
    #[arg(long, help_heading = "Image")]
    pub checksum: bool,
    /// Image size in GiB (default: computed from the tree).
    #[arg(long, value_name = "GIB", help_heading = "Image")]
    pub image_size: Option<f64>,
    /// Extra space in MiB added to the computed tree size instead of the 60% fill factor.
    #[arg(long, value_name = "MIB", help_heading = "Image")]
    pub image_extra_size: Option<u64>,
    /// Label of the root filesystem (default cloudimg-rootfs, img-rootfs for xfs).
    #[arg(long, value_name = "LABEL", help_heading = "Image")]
    pub root_label: Option<String>,
    /// Options passed to mkfs for the root filesystem.
    #[arg(
        long,
        value_name = "OPTS",
        allow_hyphen_values = true,
        help_heading = "Image"
    )]
    pub mkfs_options: Option<String>,
    /// Journal size in MiB of the root ext filesystem (default 64).
    #[arg(long, value_name = "MIB", help_heading = "Image")]
    pub mkfs_journal_size: Option<u64>,
    /// Extra qemu-img convert options (e.g. "compat=0.10"). qcow2 is
    /// zstd-compressed unless these set compression_type or compat=0.10.
    #[arg(
        long,
        value_name = "OPTS",
        allow_hyphen_values = true,
        help_heading = "Image"
    )]
    pub qemu_img_options: Option<String>,
    /// Maximum size the root filesystem may be grown online to, in blocks.
    #[arg(long, value_name = "BLOCKS", help_heading = "Image")]
    pub max_online_resize: Option<u64>,
    /// Repository and tag of a docker output (default: the image name).
    #[arg(long, value_name = "TARGET", help_heading = "Image")]
    pub docker_target: Option<String>,
    /// ostree repository the ostree output commits into (default `<-o>.ostree`;
    /// a missing one is created in archive mode).
    #[arg(long, value_name = "DIR", help_heading = "ostree")]
    pub ostree_repo: Option<PathBuf>,
    /// Ref of the ostree commit (default `<distro>/<release>/<arch>/<image name>`).
    #[arg(long = "ostree-ref", value_name = "REF", help_heading = "ostree")]
    pub ostree_branch: Option<String>,
    /// Parent of the ostree commit: `none` or a commit checksum (default: the
    /// ref's current commit in the repository).
    #[arg(long, value_name = "COMMIT", help_heading = "ostree")]
    pub ostree_parent: Option<String>,
    /// `version` metadata of the ostree commit (default: its UTC time, YYYYMMDD.HHMMSS).
    #[arg(long, value_name = "VERSION", help_heading = "ostree")]
    pub ostree_version: Option<String>,
    /// GPG key that signs the ostree commit.
    #[arg(long, value_name = "KEYID", help_heading = "ostree")]
    pub ostree_gpg_sign: Option<String>,
    /// GnuPG home holding that key (default: gpg's own).
    #[arg(long, value_name = "DIR", help_heading = "ostree")]
    pub ostree_gpg_homedir: Option<PathBuf>,
    /// Element used to build a ramdisk image.
    #[arg(long, value_name = "ELEMENT", help_heading = "Image")]
    pub ramdisk_element: Option<String>,
    /// Default installation type for source elements (package, source, ...).
    #[arg(long, value_name = "TYPE", help_heading = "Image")]
    pub install_type: Option<String>,

    // ---- Build environment ----
    /// Cache directory (packages, bootstrapped roots).
    #[arg(
        long,
        value_name = "DIR",
        env = "DIB_IMAGE_CACHE",
        help_heading = "Build"
    )]
    pub image_cache: Option<PathBuf>,
    /// Do not update cached resources from the network.
    #[arg(long, help_heading = "Build")]
    pub offline: bool,
    /// Accepted for DIB compatibility: dib-create always builds on disk,
    /// next to its phase cache (dpkg's syncs are skipped instead).
    #[arg(long, help_heading = "Build")]
    pub no_tmpfs: bool,
    /// Accepted for DIB compatibility; has no effect (see --no-tmpfs).
    #[arg(long, value_name = "GIB", help_heading = "Build")]
    pub min_tmpfs: Option<u64>,
    /// Clear the environment before building (keeps only a safe list of variables).
    #[arg(short = 'c', help_heading = "Build")]
    pub clear_env: bool,
    /// Pass these caller variables to the hooks too, beside DIB_* and DIB's
    /// documented ones (comma separated; `NAME_*` passes a prefix).
    #[arg(
        long,
        value_name = "NAMES",
        env = "DIB_CREATE_PASS_ENV",
        value_delimiter = ',',
        help_heading = "Build"
    )]
    pub pass_env: Vec<String>,
    /// Trace hooks (repeat for more detail: -x runs hooks with bash -x).
    #[arg(short = 'x', action = ArgAction::Count, help_heading = "Build")]
    pub trace: u8,
    /// Write the build log to FILE as well.
    #[arg(long, value_name = "FILE", help_heading = "Build")]
    pub logfile: Option<PathBuf>,
    /// Write the build report (one HTML file: timeline, disk, contents,
    /// inputs) to FILE; the default is `<output>.report.html`, also for a
    /// failed build.
    #[arg(long, value_name = "FILE", help_heading = "Build")]
    pub report: Option<PathBuf>,
    /// Write no build report.
    #[arg(long, help_heading = "Build", conflicts_with = "report")]
    pub no_report: bool,
    /// How the log reaches stderr: text lines (with a live status line on a
    /// terminal) or one JSON object per event.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = crate::log::Format::Text, help_heading = "Build")]
    pub log_format: crate::log::Format,
    /// Keep the build directory (and its mounts undone) after a failure, for debugging.
    #[arg(long, help_heading = "Build")]
    pub keep_on_failure: bool,
    /// Run every phase: do not restore snapshots from, or store them in, the
    /// phase cache (also DIB_CREATE_PHASE_CACHE=0; see docs/phase-cache.md).
    #[arg(long, help_heading = "Build")]
    pub no_phase_cache: bool,
    /// Shrink the phase cache now: remove entries unused for
    /// DIB_CREATE_PHASE_CACHE_KEEP_DAYS, surplus outputs, and the least
    /// recently used entries past DIB_CREATE_PHASE_CACHE_MAX_SIZE; then exit.
    #[arg(long, help_heading = "Build", conflicts_with = "elements")]
    pub cache_prune: bool,
    /// Undo what a killed build left behind in its build directory, then exit.
    #[arg(
        long,
        value_name = "BUILD_DIR",
        help_heading = "Build",
        conflicts_with = "elements"
    )]
    pub cleanup: Option<PathBuf>,

    // ---- Lockfile ----
    /// Build as usual and write every package the build installed, pinned by
    /// version and SHA256, to FILE (see docs/lockfile.md).
    #[arg(long, value_name = "FILE", help_heading = "Lockfile", conflicts_with_all = ["lockfile", "lock_update"])]
    pub lock: Option<PathBuf>,
    /// Build with exactly the packages FILE pins: every .deb is fetched into the
    /// cache and verified, and apt sees only those.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Lockfile",
        conflicts_with = "lock_update"
    )]
    pub lockfile: Option<PathBuf>,
    /// Like --lock, for an existing FILE: re-resolve, rewrite it, print what changed.
    #[arg(long, value_name = "FILE", help_heading = "Lockfile")]
    pub lock_update: Option<PathBuf>,
    /// Print the packages added, removed and changed from lockfile OLD to NEW, then exit.
    #[arg(
        long,
        num_args = 2,
        value_names = ["OLD", "NEW"],
        help_heading = "Lockfile",
        conflicts_with_all = ["elements", "lock", "lockfile", "lock_update", "cleanup"]
    )]
    pub lock_diff: Option<Vec<PathBuf>>,

    // ---- Plan ----
    /// Resolve and check everything and print the plan; build nothing. The
    /// elements' environment.d files are sourced by bash (in a scratch
    /// directory, starting from the hook environment), as a build sources
    /// them: what they run, runs. An unknown DIB_RELEASE is looked up on the
    /// mirror. Nothing else is run, mounted or written.
    #[arg(long, help_heading = "Plan")]
    pub dry_run: bool,
    /// Format of the --dry-run plan.
    #[arg(long, value_enum, default_value = "text", help_heading = "Plan")]
    pub format: PlanFormat,

    // ---- The command itself ----
    /// Print the shell completion script for SHELL (element names complete
    /// from ELEMENTS_PATH in bash and fish), then exit.
    #[arg(
        long,
        value_enum,
        value_name = "SHELL",
        help_heading = "Setup",
        exclusive = true
    )]
    pub completions: Option<Shell>,
    /// Print the manual page (roff), then exit: `dib-create --man | man -l -`.
    #[arg(long, help_heading = "Setup", exclusive = true)]
    pub man: bool,
    /// Print the names of the elements on ELEMENTS_PATH and the shipped ones, then exit.
    #[arg(long, help_heading = "Setup", exclusive = true)]
    pub list_elements: bool,

    // ---- Boot test ----
    /// After building, boot the image in qemu and wait for a login prompt (timeout in seconds).
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "600", help_heading = "Boot test")]
    pub boot_test: Option<u64>,
    /// Accelerator for --boot-test.
    #[arg(long, value_enum, default_value = "auto", help_heading = "Boot test")]
    pub accel: Accel,
}

impl Cli {
    /// The output types, split and trimmed, without empties.
    pub fn output_types(&self) -> Vec<String> {
        split_list(&self.types)
    }

    /// The ostree flags, for the plan.
    pub fn ostree_args(&self) -> crate::plan::OstreeArgs {
        crate::plan::OstreeArgs {
            repo: self.ostree_repo.clone(),
            branch: self.ostree_branch.clone(),
            parent: self.ostree_parent.clone(),
            version: self.ostree_version.clone(),
            gpg_sign: self.ostree_gpg_sign.clone(),
            gpg_homedir: self.ostree_gpg_homedir.clone(),
        }
    }

    /// The `-p` packages, flattened from comma lists.
    pub fn extra_packages(&self) -> Vec<String> {
        self.packages.iter().flat_map(|p| split_list(p)).collect()
    }
}

/// Splits a comma- or space-separated list, dropping empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dib_defective_flags_parse() {
        let c = Cli::try_parse_from([
            "dib-create",
            "--image-extra-size",
            "200",
            "--mkfs-journal-size",
            "32",
            "-t",
            "qcow2,tar",
            "-p",
            "vim,curl",
            "-p",
            "less",
            "-x",
            "-x",
            "debian-minimal",
        ])
        .unwrap();
        assert_eq!(c.image_extra_size, Some(200));
        assert_eq!(c.mkfs_journal_size, Some(32));
        assert_eq!(c.output_types(), ["qcow2", "tar"]);
        assert_eq!(c.extra_packages(), ["vim", "curl", "less"]);
        assert_eq!(c.trace, 2);
    }

    #[test]
    fn lock_flags_parse() {
        let c = Cli::try_parse_from(["dib-create", "--lock-diff", "a.lock", "b.lock"]).unwrap();
        assert_eq!(c.lock_diff.unwrap().len(), 2);
        let c =
            Cli::try_parse_from(["dib-create", "--lockfile", "x.lock", "debian-minimal"]).unwrap();
        assert_eq!(c.lockfile.unwrap().to_str(), Some("x.lock"));
        assert!(
            Cli::try_parse_from(["dib-create", "--lock", "a", "--lockfile", "b", "x"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["dib-create", "--lock-diff", "a.lock", "b.lock", "x"]).is_err()
        );
    }

    #[test]
    fn mkfs_options_take_hyphen_values() {
        let c = Cli::try_parse_from(["dib-create", "--mkfs-options", "-i 8192", "x"]).unwrap();
        assert_eq!(c.mkfs_options.as_deref(), Some("-i 8192"));
    }
}
