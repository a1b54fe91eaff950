//! The build report as a person sees it: the sample report, rendered and
//! photographed by headless Chromium, makes a full-size picture with content
//! in it (a page that failed to lay out comes out blank and small).
//!
//! DIB_CREATE_REPORT_SCREENSHOT=PATH keeps the screenshot of the sample (and
//! DIB_CREATE_REPORT_HTML=PATH its page); docs/report.png is made that way.

mod common;

use common::{Need, trial};
use libtest_mimic::{Arguments, Failed};

fn main() {
    let args = Arguments::from_args();
    let chromium = [Need::Installed(
        common::chromium::CHROMIUM,
        "scripts/install-deps",
    )];
    let tests = vec![
        trial("report_renders_in_chromium", &chromium, renders_in_chromium),
        trial(
            "failed_report_renders_in_chromium",
            &chromium,
            failed_renders_in_chromium,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}

fn renders_in_chromium() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let page = dib::report::render(&dib::report::sample());
    let png = common::chromium::photograph(&page, dir.path())?;
    if png.len() < 30_000 {
        return Err(format!("{} bytes of PNG: a blank page?", png.len()).into());
    }
    if let Some(keep) = std::env::var_os("DIB_CREATE_REPORT_SCREENSHOT") {
        std::fs::write(&keep, &png).map_err(|e| format!("writing {keep:?}: {e}"))?;
    }
    if let Some(keep) = std::env::var_os("DIB_CREATE_REPORT_HTML") {
        std::fs::write(&keep, &page).map_err(|e| format!("writing {keep:?}: {e}"))?;
    }
    Ok(())
}

/// A build that failed before the disk: the header, the error and what
/// there is of the timeline still make a page.
fn failed_renders_in_chromium() -> Result<(), Failed> {
    let mut r = dib::report::sample();
    r.ok = false;
    r.error = Some("install.d/01-package-installs failed: exit status 100\nE: <none>".into());
    r.timeline
        .retain(|b| b.phase != "disk" && b.phase != "outputs");
    if let Some(b) = r
        .timeline
        .iter_mut()
        .find(|b| b.label == "01-package-installs")
    {
        b.ok = false;
    }
    r.disk = None;
    r.contents = None;
    r.inputs.outputs.clear();
    let dir = tempfile::tempdir()?;
    common::chromium::photograph(&dib::report::render(&r), dir.path())?;
    Ok(())
}
