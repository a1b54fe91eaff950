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

/// Caller variables that DIB's elements document and read, passed to the
/// hooks as they are (DIB passes the whole environment; we pass what is
/// known to matter, plus what `--pass-env` names). A trailing `*` is a prefix.
pub const PASSED_ENV: &[&str] = &[
    // Read by OS and boot elements before (or instead of) their own defaults.
    "DISTRO_NAME",
    "EFI_BOOT_DIR",
    "BASE_IMAGE_FILE",
    "NO_SOURCE_REPOSITORIES",
    // Red Hat registration, Gentoo and u-boot settings.
    "REG_*",
    "GENTOO_*",
    "UBOOT_*",
];

/// The proxy variables, passed to the hooks too (apt, debootstrap, pip and
/// curl in hooks read them).
pub const PROXY_ENV: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
];

/// Whether `key` matches one of `patterns` (names, or prefixes ending in `*`).
fn matches_any(key: &str, patterns: &[impl AsRef<str>]) -> bool {
    patterns.iter().any(|p| {
        let p = p.as_ref().trim();
        match p.strip_suffix('*') {
            Some(prefix) => !prefix.is_empty() && key.starts_with(prefix),
            None => key == p,
        }
    })
}

/// The caller's variables in [`PROXY_ENV`], [`PASSED_ENV`] or in `extra` (`--pass-env`).
fn passed_through<'a>(
    caller: &'a BTreeMap<String, String>,
    extra: &'a [String],
) -> impl Iterator<Item = (String, String)> + 'a {
    caller
        .iter()
        .filter(|(k, _)| {
            PROXY_ENV.contains(&k.as_str()) || matches_any(k, PASSED_ENV) || matches_any(k, extra)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
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
    if !cli.clear_env {
        env.extend(passed_through(caller, &cli.pass_env));
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
    env.insert("IMAGE_NAME".into(), absolute_image_name(&cli.output));
    env.insert("IMAGE_ELEMENT".into(), image_element(elements));
    env.insert("IMAGE_ELEMENT_YAML".into(), image_element_yaml(elements));
    env.insert(
        "BASH_FUNC_get_image_element_array%%".into(),
        image_element_array_function(elements),
    );
    env.insert("ELEMENTS_PATH".into(), join_dirs(dirs));
    env.insert("_LIB".into(), paths::lib_dir().display().to_string());
    env.insert("DIB_IMAGE_CACHE".into(), image_cache(cli, caller));
    env.entry("DIB_LOCKFILES".into())
        .or_insert_with(|| lockfiles_dir(caller));
    set_defaults(&mut env, cli);
    env
}

/// Variables with a default that the caller (or a flag) may override.
fn set_defaults(env: &mut BTreeMap<String, String>, cli: &Cli) {
    // Flags win over the caller's variables; DIB exports each of these,
    // empty or "0" when off, and elements read them under `set -u`.
    for (key, on, on_value) in [
        ("DIB_OFFLINE", cli.offline, "1"),
        ("DIB_NO_TMPFS", cli.no_tmpfs, "1"),
        ("DIB_CHECKSUM", cli.checksum, "1"),
    ] {
        if on {
            env.insert(key.into(), on_value.into());
        }
    }
    for (key, off_value) in [
        ("DIB_OFFLINE", ""),
        ("DIB_NO_TMPFS", "0"),
        ("DIB_CHECKSUM", "0"),
        ("DIB_MIN_TMPFS", "2"),
    ] {
        env.entry(key.into()).or_insert_with(|| off_value.into());
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

/// IMAGE_NAME as an absolute path. DIB's hooks run in the caller's working
/// directory and ours in the build directory, so a relative `-o` would land
/// what hooks write beside the image (`${IMAGE_NAME}.vmlinuz`) in the build
/// directory, which is deleted.
fn absolute_image_name(output: &str) -> String {
    std::path::absolute(output)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| output.to_owned())
}

/// Where elements keep their flock files (`DIB_LOCKFILES`), DIB's default.
fn lockfiles_dir(caller: &BTreeMap<String, String>) -> String {
    let home = caller.get("HOME").map(String::as_str).unwrap_or("/root");
    format!("{home}/.cache/dib/lockfiles")
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

/// What `element-info --env` prints, in DIB's format: bash that sets
/// IMAGE_ELEMENT and IMAGE_ELEMENT_YAML and defines `get_image_element_array`.
/// DIB pastes paths in unquoted; here a path that the shell would split or
/// expand is quoted (plain paths come out as DIB prints them).
pub fn element_info_script(elements: &[(String, PathBuf)]) -> String {
    let single = |s: &str| s.replace('\'', r"'\''");
    let pairs: String = elements
        .iter()
        .map(|(n, p)| {
            let path = shell_escape::unix::escape(p.to_string_lossy());
            let mut quoted = String::new();
            for c in path.chars() {
                if matches!(c, '"' | '$' | '`' | '\\') {
                    quoted.push('\\');
                }
                quoted.push(c);
            }
            format!("[{n}]={quoted} ")
        })
        .collect();
    format!(
        "export IMAGE_ELEMENT='{}'\n\
         export IMAGE_ELEMENT_YAML='{}'\n\
         function get_image_element_array {{\n  echo \"{pairs}\"\n}};\n\
         export -f get_image_element_array;\n",
        single(&image_element(elements)),
        single(&image_element_yaml(elements)),
    )
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
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(env["IMAGE_NAME"], cwd.join("out/img").display().to_string());
        assert_eq!(env["DIB_CHECKSUM"], "0");
        assert_eq!(env["DIB_NO_TMPFS"], "0");
        assert_eq!(env["DIB_LOCKFILES"], "/home/u/.cache/dib/lockfiles");
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
    fn core_variables_are_set_when_off() {
        let env = hook_env(&cli(&["vm"]), &caller(), "amd64", &els(), &[]);
        assert_eq!(env["DIB_OFFLINE"], "");
        assert_eq!(env["DIB_CHECKSUM"], "0");
        let env = hook_env(&cli(&["--checksum", "vm"]), &caller(), "amd64", &els(), &[]);
        assert_eq!(env["DIB_CHECKSUM"], "1");
    }

    #[test]
    fn documented_variables_and_pass_env_reach_the_hooks() {
        let mut c = caller();
        for (k, v) in [
            ("http_proxy", "http://proxy:3128"),
            ("NO_PROXY", "localhost"),
            ("REG_METHOD", "portal"),
            ("EFI_BOOT_DIR", "EFI/debian"),
            ("MY_SETTING", "1"),
            ("MY_OTHER", "2"),
            ("SECRET_TOKEN", "x"),
        ] {
            c.insert(k.into(), v.into());
        }
        let env = hook_env(&cli(&["vm"]), &c, "amd64", &els(), &[]);
        assert_eq!(env["http_proxy"], "http://proxy:3128");
        assert_eq!(env["NO_PROXY"], "localhost");
        assert_eq!(env["REG_METHOD"], "portal");
        assert_eq!(env["EFI_BOOT_DIR"], "EFI/debian");
        assert!(!env.contains_key("MY_SETTING"));
        assert!(!env.contains_key("SECRET_TOKEN"));
        let env = hook_env(
            &cli(&["--pass-env", "MY_*,OTHER", "vm"]),
            &c,
            "amd64",
            &els(),
            &[],
        );
        assert_eq!(env["MY_SETTING"], "1");
        assert_eq!(env["MY_OTHER"], "2");
        assert_eq!(env["OTHER"], "x");
        assert!(!env.contains_key("SECRET_TOKEN"));
        let env = hook_env(&cli(&["-c", "vm"]), &c, "amd64", &els(), &[]);
        assert!(!env.contains_key("http_proxy"));
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

#[cfg(test)]
mod element_info_tests {
    use super::*;

    #[test]
    fn plain_paths_print_as_dib_prints_them() {
        let script = element_info_script(&[
            ("vm".into(), PathBuf::from("/e/vm")),
            ("base".into(), PathBuf::from("/e/base")),
        ]);
        assert_eq!(
            script,
            "export IMAGE_ELEMENT='vm base'\n\
             export IMAGE_ELEMENT_YAML='base: /e/base\nvm: /e/vm\n'\n\
             function get_image_element_array {\n  echo \"[vm]=/e/vm [base]=/e/base \"\n};\n\
             export -f get_image_element_array;\n"
        );
    }

    /// Paths with quotes, spaces and `$` survive eval, the YAML and the array.
    #[test]
    fn awkward_paths_survive_bash() {
        let odd = "/e/it's a $dir \"x\"/vm";
        let script = element_info_script(&[
            ("base".into(), PathBuf::from("/e/base")),
            ("vm".into(), PathBuf::from(odd)),
        ]);
        let out = crate::host::Cmd::new("t", "bash")
            .args([
                "-c",
                r#"eval "$1"; eval declare -A a=($(get_image_element_array)); printf '%s|%s|%s' "$IMAGE_ELEMENT" "${a[vm]}" "$IMAGE_ELEMENT_YAML""#,
                "bash",
                &script,
            ])
            .read()
            .unwrap();
        let (names, rest) = out.split_once('|').unwrap();
        let (vm, yaml) = rest.split_once('|').unwrap();
        assert_eq!(names, "base vm");
        assert_eq!(vm, odd);
        let map: BTreeMap<String, String> = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(map["vm"], odd);
    }
}
