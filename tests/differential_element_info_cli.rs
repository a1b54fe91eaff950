//! Differential test: our `element-info` binary against DIB 3.x's element-info
//! (`diskimage_builder.element_dependencies.main`), on element sets over our
//! elements followed by DIB's, and over our elements alone.
//!
//! - The plain output is compared as a set of names: DIB prints a Python set,
//!   whose order changes from run to run. Ours is given `-d`, which older DIB
//!   had and DIB 3.x dropped (it always expands).
//! - `--env` output is evaluated in bash as DIB's callers do, and the values
//!   compared: IMAGE_ELEMENT (as a set), IMAGE_ELEMENT_YAML (parsed) and the
//!   array `get_image_element_array` builds.
//! - When DIB refuses a set, ours must refuse it too, with exit 2 and a message.
//!
//! No path may differ: both tools get the same ELEMENTS_PATH, both report real
//! paths, and our shipped-elements directory (which dib-create appends to
//! ELEMENTS_PATH) is our elements directory, already on the path. Without
//! ELEMENTS_PATH the two would differ: DIB refuses to run, and ours lists the
//! shipped elements.
//!
//! When python3 or diskimage-builder is missing, the DIB cases print
//! `SKIP <test>: <reason>` and are ignored; with DIB_CREATE_REQUIRE_ALL=1 they
//! fail. The cases that check our command line alone always run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

mod common;

/// (set, DIB accepts it over our elements then DIB's, over ours alone). The
/// sets the issue asks for come first: DIB's element-info refuses `vm` without
/// a layout (only disk-image-create adds block-device-mbr), and our elements
/// alone have no `sysctl` or `debian`. Then sets that succeed over our elements
/// alone (naming the layout), then refusals. The expectations keep a DIB that
/// refuses everything from passing the test.
const SETS: &[(&str, bool, bool)] = &[
    ("debian-minimal vm", false, false),
    ("ubuntu-minimal vm", false, false),
    (
        "debian-minimal sysctl modprobe dhcp-all-interfaces simple-init cloud-init-datasources devuser",
        true,
        false,
    ),
    ("debian", true, false),
    ("base debian-minimal vm block-device-mbr", true, true),
    (
        "base ubuntu-minimal vm block-device-gpt cloud-init devuser growroot openssh-server",
        true,
        true,
    ),
    (
        "base debian-minimal vm block-device-efi enable-serial-console cloud-init-nocloud",
        true,
        true,
    ),
    ("base debian-minimal rpi3", true, true),
    (
        "base debian vm block-device-mbr cloud-init-datasources",
        true,
        false,
    ),
    ("base centos vm block-device-gpt", true, false),
    ("debian-minimal ubuntu-minimal", false, false),
    ("vm block-device-mbr", false, false),
    ("debian-minimal no-such-element", false, false),
];

#[derive(Clone, Copy)]
enum Tree {
    /// Our elements, then DIB's.
    OursThenDib,
    /// Our elements alone.
    Ours,
}

impl Tree {
    fn label(self) -> &'static str {
        match self {
            Tree::OursThenDib => "ours_dib",
            Tree::Ours => "ours",
        }
    }

    fn elements_path(self) -> Result<String, String> {
        let ours = ours_dir();
        Ok(match self {
            Tree::OursThenDib => format!(
                "{}:{}",
                ours.display(),
                common::upstream::elements_dir()?.display()
            ),
            Tree::Ours => ours.display().to_string(),
        })
    }
}

fn ours_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("elements")
}

/// What a tool made of a set: None when it refused.
type Names = Option<BTreeSet<String>>;

/// The variables `--env` sets, after bash has evaluated them.
#[derive(Debug, PartialEq)]
struct EnvVars {
    image_element: BTreeSet<String>,
    yaml: BTreeMap<String, String>,
    array: BTreeMap<String, String>,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn dib(elements_path: &str, args: &[&str]) -> Result<Run, String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; from diskimage_builder.element_dependencies import main; sys.exit(main())",
        ])
        .args(args)
        .env("ELEMENTS_PATH", elements_path)
        .output()
        .map_err(|e| format!("running python3: {e}"))?;
    Ok(run_of(out))
}

fn ours(elements_path: Option<&str>, args: &[&str]) -> Result<Run, String> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_element-info"));
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DIB_CREATE_DATA_DIR", env!("CARGO_MANIFEST_DIR"));
    if let Some(p) = elements_path {
        c.env("ELEMENTS_PATH", p);
    }
    let out = c
        .output()
        .map_err(|e| format!("running element-info: {e}"))?;
    Ok(run_of(out))
}

fn run_of(out: std::process::Output) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Ours must refuse with exit 2 and one clear line, never a panic.
fn check_refusal(run: &Run, what: &str) -> Result<(), String> {
    if run.code != Some(2) || !run.stderr.contains("element-info: ") {
        return Err(format!(
            "{what}: expected exit 2 and an element-info: message, got {:?}: {}",
            run.code, run.stderr
        ));
    }
    if run.stderr.contains("panicked") || !run.stdout.is_empty() {
        return Err(format!("{what}: {}{}", run.stdout, run.stderr));
    }
    Ok(())
}

fn names(run: &Run) -> Names {
    (run.code == Some(0)).then(|| run.stdout.split_whitespace().map(str::to_owned).collect())
}

/// Evaluates `--env` output as DIB's own scripts do.
fn eval_env(script: &str) -> Result<EnvVars, String> {
    const READ: &str = r#"eval "$1"
printf '%s\0%s\0' "$IMAGE_ELEMENT" "$IMAGE_ELEMENT_YAML"
eval declare -A a=($(get_image_element_array))
for k in "${!a[@]}"; do printf '%s\0%s\0' "$k" "${a[$k]}"; done"#;
    let out = Command::new("bash")
        .args(["-c", READ, "bash", script])
        .output()
        .map_err(|e| format!("running bash: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "bash could not evaluate:\n{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut fields = text.split('\0');
    let image_element = fields.next().unwrap_or("");
    let yaml = fields.next().unwrap_or("");
    let rest: Vec<&str> = fields.filter(|f| !f.is_empty()).collect();
    Ok(EnvVars {
        image_element: image_element
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        yaml: serde_saphyr::from_str(yaml)
            .map_err(|e| format!("IMAGE_ELEMENT_YAML does not parse ({e}):\n{yaml}"))?,
        array: rest
            .chunks(2)
            .map(|kv| (kv[0].to_owned(), kv.get(1).unwrap_or(&"").to_string()))
            .collect(),
    })
}

fn compare(tree: Tree, set: &str, accepted: bool) -> Result<(), Failed> {
    let path = tree.elements_path()?;
    let user: Vec<&str> = set.split(' ').collect();
    let env_args: Vec<&str> = std::iter::once("--env").chain(user.clone()).collect();
    let d_args: Vec<&str> = std::iter::once("-d").chain(user.clone()).collect();

    let dib_plain = dib(&path, &user)?;
    let our_plain = ours(Some(&path), &d_args)?;
    let (dib_names, our_names) = (names(&dib_plain), names(&our_plain));
    if dib_names.is_some() != accepted {
        return Err(format!(
            "{set}: DIB {} it, which this test does not expect: {}",
            if accepted { "refused" } else { "accepted" },
            dib_plain.stderr.lines().last().unwrap_or("")
        )
        .into());
    }
    let Some(expected) = dib_names else {
        check_refusal(&our_plain, set)?;
        check_refusal(&ours(Some(&path), &env_args)?, set)?;
        return Ok(());
    };
    if our_names.as_ref() != Some(&expected) {
        return Err(format!(
            "{set}: names differ\n  DIB:  {expected:?}\n  ours: {our_names:?}\n  our stderr: {}",
            our_plain.stderr
        )
        .into());
    }
    // -d changes nothing.
    let bare = ours(Some(&path), &user)?;
    if bare.stdout != our_plain.stdout {
        return Err(format!("{set}: -d changed the output: {}", bare.stdout).into());
    }

    let dib_env = eval_env(&dib(&path, &env_args)?.stdout)?;
    let our_run = ours(Some(&path), &env_args)?;
    let our_env = eval_env(&our_run.stdout)?;
    if dib_env != our_env {
        return Err(
            format!("{set}: --env differs\n  DIB:  {dib_env:?}\n  ours: {our_env:?}").into(),
        );
    }
    // Each tool's three views agree with each other and with the plain list.
    let keys: BTreeSet<String> = our_env.yaml.keys().cloned().collect();
    if keys != expected || our_env.image_element != expected || our_env.yaml != our_env.array {
        return Err(format!("{set}: our --env views disagree: {our_env:?}").into());
    }
    Ok(())
}

/// Checks of our command line that need no DIB.
fn cli_cases() -> Vec<Trial> {
    let ours_path = ours_dir().display().to_string();
    let p1 = ours_path.clone();
    let p2 = ours_path.clone();
    vec![
        Trial::test("cli_no_elements_is_usage_error", || {
            let run = ours(None, &[])?;
            if run.code != Some(2) || !run.stderr.contains("ELEMENT") {
                return Err(format!("{:?}: {}", run.code, run.stderr).into());
            }
            Ok(())
        }),
        Trial::test("cli_unknown_element_exits_2_with_a_hint", move || {
            let run = ours(Some(&p1), &["debian-minimall"])?;
            check_refusal(&run, "unknown element")?;
            if !run.stderr.contains("did you mean debian-minimal") {
                return Err(run.stderr.into());
            }
            Ok(())
        }),
        Trial::test("cli_conflict_exits_2", move || {
            let run = ours(Some(&p2), &["-e", "debian-minimal", "ubuntu-minimal"])?;
            check_refusal(&run, "two operating systems")?;
            Ok(())
        }),
        Trial::test("cli_without_elements_path_uses_shipped_elements", || {
            let run = ours(None, &["debian-minimal"])?;
            let got: BTreeSet<&str> = run.stdout.split_whitespace().collect();
            if run.code != Some(0) || !got.contains("debootstrap") {
                return Err(format!("{:?}: {}{}", run.code, run.stdout, run.stderr).into());
            }
            Ok(())
        }),
        Trial::test("cli_missing_path_entry_exits_2", || {
            let run = ours(Some("/nonexistent-elements"), &["debian-minimal"])?;
            check_refusal(&run, "missing ELEMENTS_PATH entry")?;
            Ok(())
        }),
    ]
}

fn main() {
    let args = Arguments::from_args();
    let missing = common::upstream::unavailable();
    let require_all = common::require_all();
    let mut trials = cli_cases();
    for tree in [Tree::OursThenDib, Tree::Ours] {
        for &(set, ours_dib, ours_only) in SETS {
            let accepted = match tree {
                Tree::OursThenDib => ours_dib,
                Tree::Ours => ours_only,
            };
            let name = format!("{}_{}", tree.label(), set.replace(' ', "_"));
            trials.push(match missing.clone() {
                None => Trial::test(name, move || compare(tree, set, accepted)),
                Some(reason) if require_all => Trial::test(name, move || {
                    Err(format!("DIB_CREATE_REQUIRE_ALL=1 but {reason}").into())
                }),
                Some(reason) => {
                    println!("SKIP {name}: {reason}");
                    Trial::test(name, || Ok(())).with_ignored_flag(true)
                }
            });
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
