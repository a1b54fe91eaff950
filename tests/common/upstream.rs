//! diskimage-builder itself (upstream), for the differential tests.

use std::path::PathBuf;
use std::process::Command;

/// Why DIB cannot be run here, if it cannot.
pub fn unavailable() -> Option<String> {
    match Command::new("python3")
        .args(["-c", "import diskimage_builder.element_dependencies"])
        .output()
    {
        Err(e) => Some(format!("python3 not runnable: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "diskimage-builder not importable (pip install diskimage-builder): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Ok(_) => None,
    }
}

/// DIB's own elements directory.
pub fn elements_dir() -> Result<PathBuf, String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import diskimage_builder, os; print(os.path.dirname(diskimage_builder.__file__))",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PathBuf::from(dir).join("elements"))
}
