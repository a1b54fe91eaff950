//! The live status line on a terminal: the phase, the hook, the elapsed
//! times, and bytes and rate while packages download. Log lines scroll above
//! it. Drawn by indicatif; fed from the same events as the text log.

use indicatif::{HumanBytes, ProgressBar, ProgressState, ProgressStyle};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::event::Event;

/// What the line shows besides the build's elapsed time.
#[derive(Default)]
struct Shown {
    phase: String,
    hook: Option<(String, Instant)>,
    position: (usize, usize),
    download: Option<Downloads>,
}

/// Bytes fetched in the current phase, for the rate.
struct Downloads {
    since: Instant,
    bytes: u64,
}

pub struct StatusLine {
    bar: ProgressBar,
    shown: Arc<Mutex<Shown>>,
}

impl StatusLine {
    /// A status line on stderr, redrawn ten times a second.
    pub fn start() -> Self {
        let shown = Arc::new(Mutex::new(Shown::default()));
        let state = Arc::clone(&shown);
        let style = ProgressStyle::with_template("{spinner:.green} {elapsed_precise} {status}")
            .expect("a valid template")
            .with_key(
                "status",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&describe(&state.lock().unwrap()));
                },
            );
        let bar = ProgressBar::new_spinner().with_style(style);
        bar.enable_steady_tick(Duration::from_millis(100));
        StatusLine { bar, shown }
    }

    /// Prints a log line above the status line.
    pub fn println(&self, line: &str) {
        self.bar.println(line);
    }

    /// Follows the build: the phase and hook that run, and downloads.
    pub fn observe(&self, e: &Event) {
        let mut s = self.shown.lock().unwrap();
        match e {
            Event::PhaseStart { phase, hooks, from } => {
                s.phase = phase.clone();
                s.hook = None;
                s.position = (*from, *hooks);
                s.download = None;
            }
            Event::HookStart { hook, element, .. } => {
                s.hook = Some((format!("{hook} ({element})"), Instant::now()));
                s.position.0 += 1;
            }
            Event::TaskStart { task, .. } => {
                s.phase = task.clone();
                s.hook = None;
                s.position = (0, 0);
            }
            Event::Download { bytes, .. } => s.add_download(*bytes),
            Event::Output { line, .. } => {
                if let Some(bytes) = apt_fetch_size(line) {
                    s.add_download(bytes);
                }
            }
            _ => {}
        }
    }

    /// Hides the line while `f` owns the terminal (an interactive shell).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Removes the line for good.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Shown {
    fn add_download(&mut self, bytes: u64) {
        let d = self.download.get_or_insert_with(|| Downloads {
            since: Instant::now(),
            bytes: 0,
        });
        d.bytes += bytes;
    }
}

fn describe(s: &Shown) -> String {
    let mut out = s.phase.clone();
    if s.position.1 > 0 {
        let _ = write!(out, " [{}/{}]", s.position.0.max(1), s.position.1);
    }
    if let Some((hook, since)) = &s.hook {
        let _ = write!(out, " {hook} {}s", since.elapsed().as_secs());
    }
    if let Some(d) = &s.download {
        let secs = d.since.elapsed().as_secs_f64().max(0.1);
        let _ = write!(
            out,
            " · {} downloaded, {}/s",
            HumanBytes(d.bytes),
            HumanBytes((d.bytes as f64 / secs) as u64)
        );
    }
    out
}

/// apt's `Get:3 http://... pkg amd64 1.2-3 [1234 kB]`: the size fetched.
/// apt spells sizes in decimal units.
fn apt_fetch_size(line: &str) -> Option<u64> {
    let line = line.trim_start();
    if !line.starts_with("Get:") {
        return None;
    }
    let inner = line.trim_end().strip_suffix(']')?;
    let (_, size) = inner.rsplit_once('[')?;
    let (num, unit) = size.split_once(' ')?;
    let num: f64 = num.replace(',', "").parse().ok()?;
    let scale = match unit {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some((num * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_fetch_lines_give_their_size() {
        let get =
            "Get:12 http://deb.debian.org/debian bookworm/main amd64 libc6 amd64 2.36-9 [2,757 kB]";
        assert_eq!(apt_fetch_size(get), Some(2_757_000));
        assert_eq!(apt_fetch_size("Get:1 http://x y [512 B]"), Some(512));
        assert_eq!(apt_fetch_size("Hit:1 http://x y InRelease"), None);
        assert_eq!(apt_fetch_size("Get:2 http://x y InRelease"), None);
    }

    #[test]
    fn the_line_names_phase_hook_and_downloads() {
        let mut s = Shown {
            phase: "install.d".into(),
            hook: Some(("50-foo (bar)".into(), Instant::now())),
            position: (3, 12),
            download: None,
        };
        s.add_download(3 << 20);
        let line = describe(&s);
        assert!(
            line.starts_with("install.d [3/12] 50-foo (bar) 0s"),
            "{line}"
        );
        assert!(line.contains("3.00 MiB downloaded"), "{line}");
    }
}
