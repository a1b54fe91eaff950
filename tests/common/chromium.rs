//! Headless Chromium for the report tests: a page photographed at a fixed
//! size, and checks that the picture has content (a page that failed to lay
//! out comes out blank).

use super::tail as log_tail;
use libtest_mimic::Failed;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "chromium-headless-shell";
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 2400;
/// Chromium normally takes a second or two; past this it hangs.
const PATIENCE: Duration = Duration::from_secs(60);

/// Screenshots `page` and checks the picture; returns the PNG.
pub fn photograph(page: &str, scratch: &Path) -> Result<Vec<u8>, Failed> {
    let html = scratch.join("report.html");
    std::fs::write(&html, page)?;
    let png = scratch.join("report.png");
    screenshot(&html, &png, scratch)?;
    let bytes = std::fs::read(&png)?;
    check_dimensions(&bytes)?;
    check_not_blank(&bytes)?;
    Ok(bytes)
}

/// Runs Chromium on `html` with its profile and home in `scratch`, killing it
/// when it takes too long.
fn screenshot(html: &Path, png: &Path, scratch: &Path) -> Result<(), Failed> {
    let home = scratch.join("home");
    std::fs::create_dir_all(&home)?;
    let log = scratch.join("chromium.log");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--no-sandbox",
            "--headless",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("profile").display()
        ))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(scratch.join("chromium.err"))?)
        .spawn()
        .map_err(|e| format!("starting {CHROMIUM}: {e}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{CHROMIUM} took more than {PATIENCE:?}; killed").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let noise = std::fs::read_to_string(scratch.join("chromium.err")).unwrap_or_default();
    if !status.success() || !png.exists() {
        return Err(format!(
            "{CHROMIUM} ({status}) made no screenshot:\n{}",
            log_tail(&noise, 30)
        )
        .into());
    }
    Ok(())
}

/// The PNG's size from its IHDR chunk, which always comes first.
fn check_dimensions(png: &[u8]) -> Result<(), Failed> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return Err("the screenshot is not a PNG".into());
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (w, h) = (be(&png[16..20]), be(&png[20..24]));
    if (w, h) != (WIDTH, HEIGHT) {
        return Err(format!("screenshot is {w}x{h}, not {WIDTH}x{HEIGHT}").into());
    }
    Ok(())
}

/// A rendered report has text, bars and panels: many colours, none of them
/// covering nearly everything.
fn check_not_blank(png: &[u8]) -> Result<(), Failed> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().ok_or("PNG too large")?];
    let frame = reader.next_frame(&mut buf)?;
    let pixel = frame.line_size / frame.width as usize;
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for row in buf[..frame.buffer_size()].chunks(frame.line_size) {
        for p in row.chunks(pixel) {
            *counts.entry(p).or_default() += 1;
        }
    }
    let total = (frame.width * frame.height) as usize;
    let commonest = counts.values().copied().max().unwrap_or(0);
    if counts.len() < 50 {
        return Err(format!("only {} colours in the screenshot", counts.len()).into());
    }
    if commonest * 10 > total * 9 {
        return Err(format!("one colour covers {commonest} of {total} pixels").into());
    }
    Ok(())
}
