//! What differs between two tarballs of one tree: the members whose listing
//! line or bytes differ, and diffoscope's report when it is installed. Used
//! where a test expects two builds to give the same bytes.

use super::run_ok;
use libtest_mimic::Failed;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// diffoscope's report on two outputs (its tail), when it is installed.
pub fn diffoscope(a: &Path, b: &Path) -> String {
    if !dib::host::tools::on_path("diffoscope") {
        return "  (install diffoscope for a full report)\n".into();
    }
    let mut c = Command::new("diffoscope");
    c.args(["--text", "-", "--max-report-size", "2000000"])
        .arg(a)
        .arg(b);
    match c.output() {
        Ok(o) => super::tail(&String::from_utf8_lossy(&o.stdout), 200),
        Err(e) => format!("  diffoscope did not run: {e}\n"),
    }
}

/// Files whose content or metadata differ between two tarballs.
pub fn differing_files(a: &Path, b: &Path) -> Result<Vec<String>, Failed> {
    let listing = |t: &Path| -> Result<BTreeMap<String, String>, Failed> {
        let mut c = Command::new("tar");
        c.args(["--full-time", "-tvf"]).arg(t);
        let text = run_ok(c)?;
        let mut sums = BTreeMap::new();
        for line in text.lines() {
            let name = line.split_whitespace().nth(5).unwrap_or("").to_string();
            sums.insert(name, line.to_string());
        }
        Ok(sums)
    };
    let (la, lb) = (listing(a)?, listing(b)?);
    let mut out: Vec<String> = la
        .iter()
        .filter(|(k, v)| lb.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(lb.keys().filter(|k| !la.contains_key(*k)).cloned());
    // Same listing line but different bytes: compare the regular files' contents.
    let content = |t: &Path, dir: &Path| -> Result<(), Failed> {
        std::fs::create_dir_all(dir)?;
        let mut c = Command::new("tar");
        c.arg("-xf").arg(t).arg("-C").arg(dir);
        run_ok(c).map(|_| ())
    };
    let (da, db) = (a.with_extension("x"), b.with_extension("x"));
    content(a, &da)?;
    content(b, &db)?;
    let mut c = Command::new("diff");
    c.args(["-rq", "--no-dereference"]).arg(&da).arg(&db);
    let o = c.output()?;
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        out.push(line.replace(&da.display().to_string(), "."));
    }
    Ok(out)
}
