//! Fuzzing every parser of user files with a stable-Rust harness (proptest):
//! block-device YAML, package-installs, pkg-map, element-deps, lockfiles and
//! deb822. Inputs are the seeds in `tests/fuzz-corpus/<parser>/` (and any
//! crash reproducer saved there), each mutated at random byte positions, and
//! random text over each format's alphabet. A parser may accept or refuse an
//! input; it must never panic.
//!
//! CI replays the corpus with a fixed number of cases from a fixed seed.
//! `DIB_CREATE_FUZZ_SECONDS=N` (scripts/test-long) runs each parser for N
//! seconds with fresh seeds instead, and a panicking input is written to
//! the corpus directory for replay.

use libtest_mimic::{Arguments, Failed, Trial};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One parser: its corpus directory, the characters its text is made of,
/// and a call that must not panic.
struct Target {
    name: &'static str,
    alphabet: &'static str,
    parse: fn(&str),
}

const TARGETS: &[Target] = &[
    Target {
        name: "blockdev",
        alphabet: "[- a-z0-9_:%.'\"{}\\[\\]/\n]{0,300}",
        parse: |text| {
            let _ = dib::blockdev::load_str(text, "fuzz", &Default::default());
        },
    },
    Target {
        name: "package-installs",
        alphabet: "[- a-z0-9_:=!,.'\"{}\\[\\]\n]{0,300}",
        parse: |text| with_element("package-installs.yaml", text, package_installs),
    },
    Target {
        name: "pkg-map",
        alphabet: "[ a-z0-9_:,\"{}\\[\\]\n]{0,300}",
        parse: |text| {
            let _ = dib::element::pkgmap::PkgMap::parse(Path::new("pkg-map"), text);
        },
    },
    Target {
        name: "element-deps",
        alphabet: "[- a-z0-9_.#\n\u{feff}\u{0}]{0,200}",
        parse: |text| with_element("element-deps", text, element_deps),
    },
    Target {
        name: "lockfile",
        alphabet: "[- A-Za-z0-9_:./#\n]{0,400}",
        parse: |text| {
            let _ = dib::lock::lockfile::Lockfile::parse(text, "fuzz");
        },
    },
    Target {
        name: "deb822",
        alphabet: "[- A-Za-z0-9_:.# \n]{0,400}",
        parse: |text| {
            let _ = dib::pkgdb::deb822::parse(text);
        },
    },
];

/// Writes `text` as `file` of a scratch element and calls `f` on it.
fn with_element(file: &str, text: &str, f: fn(&str, &Path)) {
    let d = tempfile::tempdir().expect("tempdir");
    let el = d.path().join("fuzzed");
    std::fs::create_dir_all(&el).expect("element dir");
    std::fs::write(el.join(file), text).expect("write");
    f("fuzzed", &el);
}

fn package_installs(name: &str, dir: &Path) {
    let env = [("DISTRO_NAME", "debian"), ("DIB_RELEASE", "bookworm")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ctx = dib::element::package_installs::Context {
        env: &env,
        arch: "amd64",
    };
    let _ = dib::element::package_installs::compute(&[(name.to_string(), dir.to_path_buf())], &ctx);
}

fn element_deps(name: &str, dir: &Path) {
    let _ = dib::element::discovery::read_element(name, dir);
}

fn corpus_dir(t: &Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(t.name)
}

fn seeds(t: &Target) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(t))
        .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

/// A seed with a few bytes inserted, removed or replaced.
fn mutated(seeds: Vec<String>) -> impl Strategy<Value = String> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 0..8);
    (prop::sample::select(seeds), edits).prop_map(|(seed, edits)| {
        let mut chars: Vec<char> = seed.chars().collect();
        for (at, op, c) in edits {
            let i = at.index(chars.len() + 1);
            match op {
                0 => chars.insert(i, c),
                1 if i < chars.len() => {
                    chars.remove(i);
                }
                _ if i < chars.len() => chars[i] = c,
                _ => chars.push(c),
            }
        }
        chars.into_iter().collect()
    })
}

/// Runs `cases` inputs from `seed`; on a panic, saves the input.
fn run_cases(t: &Target, cases: u32, seed: [u8; 32]) -> Result<(), Failed> {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let seeds = seeds(t);
    let strategy = if seeds.is_empty() {
        t.alphabet.boxed()
    } else {
        prop_oneof![3 => mutated(seeds), 1 => t.alphabet].boxed()
    };
    let parse = t.parse;
    runner
        .run(&strategy, |text| {
            let caught = std::panic::catch_unwind(|| parse(&text));
            prop_assert!(caught.is_ok(), "the parser panicked");
            Ok(())
        })
        .map_err(|e| {
            let input = match &e {
                proptest::test_runner::TestError::Fail(_, v) => v.clone(),
                _ => String::new(),
            };
            let saved = corpus_dir(t).join(format!(
                "crash-{}",
                dib::digest::sha256_bytes(input.as_bytes())
            ));
            let _ = std::fs::write(&saved, &input);
            format!(
                "{}: {e}; the input is saved as {} for replay",
                t.name,
                saved.display()
            )
            .into()
        })
}

fn fuzz(t: &'static Target) -> Result<(), Failed> {
    let budget = std::env::var("DIB_CREATE_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let Some(secs) = budget else {
        // CI: the corpus and 512 mutations of it, always the same ones.
        return run_cases(t, 512, [7; 32]);
    };
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&rounds.to_le_bytes());
        seed[8..16].copy_from_slice(&(std::process::id() as u64).to_le_bytes());
        run_cases(t, 2000, seed)?;
        rounds += 1;
    }
    println!("{}: {} inputs in {secs} s, no panic", t.name, rounds * 2000);
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    // The parsers' own panics are what we look for; keep their messages short.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let tests: Vec<Trial> = TARGETS
        .iter()
        .map(|t| {
            Trial::test(
                format!("{}_never_panics", t.name.replace('-', "_")),
                move || fuzz(t),
            )
        })
        .collect();
    libtest_mimic::run(&args, tests).exit();
}
