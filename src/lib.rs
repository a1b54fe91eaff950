//! dib-create: an element-based disk image composer that runs diskimage-builder
//! elements unchanged. The pipeline layers each live in their own module:
//!
//! - [`cli`]: DIB-compatible flags into a typed request;
//! - [`element`]: discovery, dependency resolution, hooks, package-installs, pkg-map;
//! - [`plan`]: the resolved, printable build plan;
//! - [`hooks`]: running phases outside and inside the chroot;
//! - [`rootfs`]: the chroot and foreign architectures;
//! - [`blockdev`]: block-device YAML, partitions, filesystems;
//! - [`output`]: image formats;
//! - [`cache`]: package and root caches;
//! - [`lock`]: lockfiles (record, build locked, diff);
//! - [`boot`]: boot tests of built images in qemu;
//! - [`host`]: the only layer that touches the host.

pub mod arch;
pub mod blockdev;
pub mod boot;
pub mod cache;
pub mod cli;
pub mod digest;
pub mod element;
pub mod error;
pub mod exec;
pub mod hooks;
pub mod host;
pub mod lock;
pub mod log;
pub mod output;
pub mod paths;
pub mod phase;
pub mod pkgdb;
pub mod plan;
pub mod report;
pub mod rootfs;
