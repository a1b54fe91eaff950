//! A migration trap: diskimage-builder's own element directory placed before
//! ours on ELEMENTS_PATH makes its base, dpkg, package-installs, bootloader
//! and the rest shadow ours. Those expect DIB's runtime (its Python package
//! behind DIB_PYTHON_EXEC, its block-device tool) and fail deep in the build,
//! so the plan refuses them up front, naming each one and the fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::UsageError;

/// True when `element` lies in an installed diskimage-builder package
/// (`.../diskimage_builder/elements/<name>`).
pub fn in_dib_package(element: &Path) -> bool {
    let Some(elements) = element.parent() else {
        return false;
    };
    let Some(package) = elements.parent() else {
        return false;
    };
    elements.file_name().is_some_and(|n| n == "elements")
        && package
            .file_name()
            .is_some_and(|n| n == "diskimage_builder")
        && package.join("__init__.py").is_file()
}

/// Refuses chosen elements that come from a DIB package and shadow one of
/// ours (in `shipped`). A user's own copy of such an element, anywhere else,
/// is a deliberate choice and passes.
pub fn check(
    chosen: &[(String, PathBuf)],
    overridden: &BTreeMap<String, Vec<PathBuf>>,
    shipped: &Path,
) -> Result<(), UsageError> {
    let shadowing: Vec<&(String, PathBuf)> = chosen
        .iter()
        .filter(|(name, path)| {
            in_dib_package(path)
                && overridden
                    .get(name)
                    .is_some_and(|o| o.iter().any(|p| p.starts_with(shipped)))
        })
        .collect();
    let Some((_, first)) = shadowing.first() else {
        return Ok(());
    };
    let dib_dir = first.parent().unwrap_or(first).display().to_string();
    let names: Vec<&str> = shadowing.iter().map(|(n, _)| n.as_str()).collect();
    Err(UsageError(format!(
        "ELEMENTS_PATH puts diskimage-builder's elements ({dib_dir}) before dib-create's ({}), so DIB's {} replace ours; they need DIB's own runtime and would fail during the build. Put dib-create's directory first (ELEMENTS_PATH=<your elements>:{}:{dib_dir}) or drop DIB's directory; to use one of DIB's elements instead of ours on purpose, copy it into a directory of your own",
        shipped.display(),
        names.join(", "),
        shipped.display(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn dib_package_elements_shadowing_ours_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let dib = t.path().join("site/diskimage_builder");
        fs::create_dir_all(dib.join("elements/base")).unwrap();
        fs::write(dib.join("__init__.py"), "").unwrap();
        let ours = t.path().join("ours");
        let mine = t.path().join("mine/base");
        let chosen = vec![("base".to_string(), dib.join("elements/base"))];
        let overridden = BTreeMap::from([("base".to_string(), vec![ours.join("base")])]);
        let msg = check(&chosen, &overridden, &ours).unwrap_err().0;
        assert!(msg.contains("DIB's base replace ours"), "{msg}");
        assert!(
            msg.contains(&format!("ELEMENTS_PATH=<your elements>:{}", ours.display())),
            "{msg}"
        );
        // A user's own base shadowing ours is their choice.
        let chosen = vec![("base".to_string(), mine)];
        assert!(check(&chosen, &overridden, &ours).is_ok());
        // DIB's element that shadows nothing of ours (ours come first) passes.
        let chosen = vec![("base".to_string(), dib.join("elements/base"))];
        assert!(check(&chosen, &BTreeMap::new(), &ours).is_ok());
    }
}
