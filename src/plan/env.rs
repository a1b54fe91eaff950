//! The environment every hook starts from, as DIB's disk-image-create sets it
//! up before the first phase. Build directories (TMP_*) are not known yet and
//! are added by the executor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cli::Cli;
use crate::element;
use crate::paths;

/// PATH for hooks when the caller has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The element search directories: ELEMENTS_PATH, then the shipped elements.
pub fn search_dirs(caller: &BTreeMap<String, String>) -> Vec<PathBuf> {
    element::search_path(
        caller.get("ELEMENTS_PATH").map(String::as_str),
        &paths::elements_dir(),
    )
}

/// The base hook environment. DIB_* variables pass through from the caller
/// (unless `-c`), and the values set here win over them where DIB sets them too.
pub fn hook_env(
    cli: &Cli,
    caller: &BTreeMap<String, String>,
    arch: &str,
    elements: &[(String, PathBuf)],
    dirs: &[PathBuf],
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if !cli.clear_env {
        env.extend(
            caller
                .iter()
                // DIB_CREATE_* configure dib-create itself, not the hooks.
                .filter(|(k, _)| k.starts_with("DIB_") && !k.starts_with("DIB_CREATE_"))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    let path = caller.get("PATH").cloned().unwrap_or(DEFAULT_PATH.into());
    env.insert("PATH".into(), path);
    // HOME as DIB passes it; SOURCE_DATE_EPOCH so that the tools hooks run
    // (mmdebstrap, mkinitramfs, python's byte-compiler) make reproducible files.
    for k in ["HOME", "SOURCE_DATE_EPOCH"] {
        if let Some(v) = caller.get(k) {
            env.insert(k.into(), v.clone());
        }
    }
    env.insert("LC_ALL".into(), "C".into());
    env.insert("ARCH".into(), arch.into());
    env.insert("IMAGE_NAME".into(), cli.output.clone());
    env.insert("IMAGE_ELEMENT".into(), image_element(elements));
    env.insert("IMAGE_ELEMENT_YAML".into(), image_element_yaml(elements));
    env.insert(
        "BASH_FUNC_get_image_element_array%%".into(),
        image_element_array_function(elements),
    );
    env.insert("ELEMENTS_PATH".into(), join_dirs(dirs));
    env.insert("_LIB".into(), paths::lib_dir().display().to_string());
    env.insert("DIB_IMAGE_CACHE".into(), image_cache(cli, caller));
    set_defaults(&mut env, cli);
    env
}

/// Variables with a default that the caller (or a flag) may override.
fn set_defaults(env: &mut BTreeMap<String, String>, cli: &Cli) {
    if cli.offline {
        env.insert("DIB_OFFLINE".into(), "1".into());
    }
    if cli.no_tmpfs {
        env.insert("DIB_NO_TMPFS".into(), "1".into());
    }
    if cli.trace > 0 {
        env.insert("DIB_DEBUG_TRACE".into(), cli.trace.to_string());
    }
    if let Some(t) = &cli.install_type {
        env.insert("DIB_DEFAULT_INSTALLTYPE".into(), t.clone());
    }
    // DIB's own default install type.
    env.entry("DIB_DEFAULT_INSTALLTYPE".into())
        .or_insert_with(|| "source".into());
    env.entry("DIB_PYTHON_VERSION".into())
        .or_insert_with(|| "3".into());
    env.entry("DIB_ROOT_FSTYPE".into())
        .or_insert_with(|| "ext4".into());
    if let Some(label) = &cli.root_label {
        env.insert("DIB_ROOT_LABEL".into(), label.clone());
    }
    let default_label = if env["DIB_ROOT_FSTYPE"] == "xfs" {
        // xfs labels hold 12 characters at most.
        "img-rootfs"
    } else {
        "cloudimg-rootfs"
    };
    env.entry("DIB_ROOT_LABEL".into())
        .or_insert_with(|| default_label.into());
}

/// `--image-cache` (or DIB_IMAGE_CACHE), else `~/.cache/image-create` as in DIB.
pub fn image_cache(cli: &Cli, caller: &BTreeMap<String, String>) -> String {
    if let Some(dir) = &cli.image_cache {
        return dir.display().to_string();
    }
    let home = caller.get("HOME").map(String::as_str).unwrap_or("/root");
    format!("{home}/.cache/image-create")
}

/// IMAGE_ELEMENT: the element names, space separated, in order.
fn image_element(elements: &[(String, PathBuf)]) -> String {
    elements
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// IMAGE_ELEMENT_YAML: a YAML map of element name → directory.
fn image_element_yaml(elements: &[(String, PathBuf)]) -> String {
    let map: BTreeMap<&str, String> = elements
        .iter()
        .map(|(n, p)| (n.as_str(), p.display().to_string()))
        .collect();
    serde_saphyr::to_string(&map).unwrap_or_else(|_| {
        // Plain strings always serialise; keep a readable fallback regardless.
        map.iter().map(|(k, v)| format!("{k}: '{v}'\n")).collect()
    })
}

/// DIB exports the bash function `get_image_element_array`, which prints
/// `[element]="path" ...` for `eval declare -A image_elements=(...)`. Bash
/// imports a function from a `BASH_FUNC_<name>%%` variable; the pairs are
/// baked in because the element set is fixed for the build.
fn image_element_array_function(elements: &[(String, PathBuf)]) -> String {
    let pairs: Vec<String> = elements
        .iter()
        .filter(|(_, p)| !p.to_string_lossy().contains(['\'', '"', '$', '`', '\\']))
        .map(|(n, p)| format!("[{n}]=\"{}\"", p.display()))
        .collect();
    format!("() {{  echo '{}'\n}}", pairs.join(" "))
}

fn join_dirs(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("dib-create").chain(args.iter().copied())).unwrap()
    }

    fn caller() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("HOME".into(), "/home/u".into()),
            ("PATH".into(), "/bin".into()),
            ("DIB_RELEASE".into(), "noble".into()),
            ("DIB_INIT_SYSTEM".into(), "systemd".into()),
            ("OTHER".into(), "x".into()),
            ("DIB_CREATE_DATA_DIR".into(), "/d".into()),
        ])
    }

    fn els() -> Vec<(String, PathBuf)> {
        vec![
            ("base".into(), "/e/base".into()),
            ("vm".into(), "/e/vm".into()),
        ]
    }

    #[test]
    fn hook_env_has_dib_variables_and_defaults() {
        let c = cli(&[
            "--offline",
            "--install-type",
            "package",
            "-o",
            "out/img",
            "vm",
        ]);
        let env = hook_env(&c, &caller(), "amd64", &els(), &[PathBuf::from("/e")]);
        assert_eq!(env["ARCH"], "amd64");
        assert_eq!(env["IMAGE_NAME"], "out/img");
        assert_eq!(env["IMAGE_ELEMENT"], "base vm");
        assert_eq!(env["IMAGE_ELEMENT_YAML"], "base: /e/base\nvm: /e/vm\n");
        assert_eq!(env["DIB_RELEASE"], "noble");
        assert_eq!(env["DIB_INIT_SYSTEM"], "systemd");
        assert_eq!(env["DIB_OFFLINE"], "1");
        assert_eq!(env["DIB_DEFAULT_INSTALLTYPE"], "package");
        assert_eq!(env["DIB_PYTHON_VERSION"], "3");
        assert_eq!(env["DIB_IMAGE_CACHE"], "/home/u/.cache/image-create");
        assert_eq!(env["DIB_ROOT_LABEL"], "cloudimg-rootfs");
        assert_eq!(env["DIB_ROOT_FSTYPE"], "ext4");
        assert_eq!(env["LC_ALL"], "C");
        assert_eq!(env["ELEMENTS_PATH"], "/e");
        assert!(env.contains_key("_LIB"));
        assert!(!env.contains_key("OTHER"));
        assert!(!env.contains_key("DIB_CREATE_DATA_DIR"));
    }

    #[test]
    fn clear_env_drops_caller_dib_variables() {
        let env = hook_env(&cli(&["-c", "vm"]), &caller(), "amd64", &els(), &[]);
        assert!(!env.contains_key("DIB_RELEASE"));
        assert_eq!(env["PATH"], "/bin");
    }

    #[test]
    fn xfs_root_gets_the_short_label() {
        let mut c = caller();
        c.insert("DIB_ROOT_FSTYPE".into(), "xfs".into());
        let env = hook_env(&cli(&["vm"]), &c, "amd64", &els(), &[]);
        assert_eq!(env["DIB_ROOT_LABEL"], "img-rootfs");
        let env = hook_env(&cli(&["--root-label", "r", "vm"]), &c, "amd64", &els(), &[]);
        assert_eq!(env["DIB_ROOT_LABEL"], "r");
    }
}

#[cfg(test)]
mod element_array_tests {
    use super::*;

    /// The exported function works the way upstream elements call it.
    #[test]
    fn bash_imports_get_image_element_array() {
        let f = image_element_array_function(&[
            ("base".into(), PathBuf::from("/e/base")),
            ("vm".into(), PathBuf::from("/e dir/vm")),
        ]);
        let out = crate::host::Cmd::new("t", "bash")
            .env("BASH_FUNC_get_image_element_array%%", f)
            .args([
                "-c",
                r#"eval declare -A image_elements=($(get_image_element_array)); echo "${image_elements[base]}|${image_elements[vm]}""#,
            ])
            .read()
            .unwrap();
        assert_eq!(out, "/e/base|/e dir/vm");
    }
}
