//! The build report: one self-contained HTML file beside the outputs (also
//! for a failed build) with a timeline of the hooks, the disk to scale, what
//! is in the image and what went into it.

pub mod collect;
pub mod model;
pub mod render;
#[doc(hidden)]
pub mod sample;

pub use model::*;
pub use render::render;
#[doc(hidden)]
pub use sample::sample;

use anyhow::Context;
use std::path::Path;

/// Renders `report` and puts it at `path` whole: written beside it under a
/// temporary name, then renamed.
pub fn write(path: &Path, report: &Report) -> anyhow::Result<()> {
    let html = render(report);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".report-")
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, html.as_bytes())?;
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(path)
        .with_context(|| format!("renaming the report to {}", path.display()))?;
    Ok(())
}
