//! Draws a [`Report`] as one self-contained HTML page: inline CSS and SVG, no
//! scripts and nothing fetched, so the file looks the same when it is opened
//! from a CI artifact, a mail attachment or an archive years later.
//!
//! For tests: every timeline bar is a `<rect class="bar KIND">` with
//! `data-phase`, `data-label` and `data-seconds`; the five slowest carry a
//! `<text class="slow-label">`. Every partition is a `<rect class="partition">`
//! whose `width` is exactly `size / disk.size * 1000` (tiny ones get an extra
//! `partition-marker` so they stay visible); its `used` rect is exactly
//! `used / total` of that width.

use super::model::*;

/// Renders the whole page.
pub fn render(r: &Report) -> String {
    let mut page = String::with_capacity(128 * 1024);
    page.push_str(&head(r));
    page.push_str("<body>\n<main>\n");
    page.push_str(&header(r));
    page.push_str(&nav());
    page.push_str(&timeline_section(r));
    page.push_str(&disk_section(r.disk.as_ref()));
    page.push_str(&contents_section(r.contents.as_ref()));
    page.push_str(&inputs_section(&r.inputs));
    page.push_str(&footer());
    page.push_str("</main>\n</body>\n</html>\n");
    page
}

// ---------------------------------------------------------------- text helpers

/// Escapes text for HTML and SVG, in content and in quoted attributes alike.
/// Control characters other than newline and tab are dropped: they are
/// invalid in XML and an error text can carry terminal colour codes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Bytes in binary units, three significant digits or so (`1.9 GiB`, `100 MiB`).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Past 1000 the next unit reads better (`1 MiB`, not `1022 KiB`).
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    };
    let digits = digits.strip_suffix(".0").unwrap_or(&digits);
    format!("{digits} {}", UNITS[unit])
}

/// A duration for people: `8.4 s`, `3 min 07 s`, `1 h 02 min`.
fn human_duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    if whole < 3600 {
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        format!("{} h {:02} min", whole / 3600, whole % 3600 / 60)
    }
}

/// A bar's seconds: one decimal, two for the very short ones so they do not
/// all read `0.0 s`.
fn bar_seconds(seconds: f64) -> String {
    if seconds < 0.1 {
        format!("{seconds:.2} s")
    } else {
        format!("{seconds:.1} s")
    }
}

/// `41872` as `41,872`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 hook ran`, `3 hooks ran`.
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "–".into();
    }
    format!("{:.0} %", part as f64 * 100.0 / whole as f64)
}

/// Seconds since the epoch as a UTC date and time.
fn utc(epoch: u64) -> String {
    let (y, m, d) = civil_date(epoch / 86_400);
    let s = epoch % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01),
/// counted in 400-year eras whose years start on 1 March, so that the leap
/// day falls at the end of a year.
fn civil_date(days: u64) -> (u64, u64, u64) {
    const DAYS_PER_ERA: u64 = 146_097;
    // Day 0 of era 0 is 0000-03-01, which is 719468 days before 1970-01-01.
    let z = days + 719_468;
    let era = z / DAYS_PER_ERA;
    let day_of_era = z % DAYS_PER_ERA;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Cuts `s` to `max` characters, with an ellipsis when it was longer.
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// About how wide `chars` characters of `px`-sized DejaVu Sans are; the page
/// only uses it to keep labels from running into each other.
fn text_width(chars: usize, px: f64) -> f64 {
    chars as f64 * px * 0.6
}

/// An SVG coordinate, short but precise enough for tests to check ratios.
fn coord(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

// ---------------------------------------------------------------- page frame

const CSS: &str = r#"
:root {
  --fg: #1f2328; --muted: #626b75; --line: #d9dee4; --panel: #f6f8fa;
  --ok: #1a7f37; --bad: #cf222e; --accent: #3b6ea8;
}
* { box-sizing: border-box; }
html { background: #eceff3; }
body {
  margin: 0; color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
    Cantarell, "Noto Sans", "DejaVu Sans", sans-serif;
}
main { max-width: 1240px; margin: 0 auto; padding: 20px 20px 32px; }
code, pre, .mono, td.hash {
  font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono",
    "DejaVu Sans Mono", monospace;
  font-size: 12.5px;
}
header.top, section {
  background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 24px; margin-top: 16px;
}
header.top { margin-top: 0; border-top: 6px solid var(--ok); }
header.top.failed { border-top-color: var(--bad); }
.title { display: flex; align-items: center; gap: 14px; flex-wrap: wrap; }
h1 { font-size: 26px; margin: 0; letter-spacing: -0.01em; word-break: break-all; }
h2 { font-size: 19px; margin: 0 0 2px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
.kicker { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: 0.08em; margin: 0 0 2px; }
.badge { display: inline-block; padding: 3px 12px; border-radius: 999px;
  font-weight: 700; font-size: 13px; letter-spacing: 0.06em; color: #fff; }
.badge.ok { background: var(--ok); }
.badge.failed { background: var(--bad); }
dl.facts { display: flex; flex-wrap: wrap; gap: 8px 36px; margin: 14px 0 0; }
dl.facts div { min-width: 90px; }
dl.facts dt { color: var(--muted); font-size: 12px; }
dl.facts dd { margin: 0; font-size: 15px; font-weight: 600; }
.error { margin-top: 16px; }
.error p { margin: 0 0 6px; color: var(--bad); font-weight: 600; }
.error pre { margin: 0; padding: 12px 14px; background: #fff5f5; border: 1px solid #f3c6c6;
  border-left: 4px solid var(--bad); border-radius: 6px; white-space: pre-wrap;
  word-break: break-word; max-height: 420px; overflow: auto; }
nav { margin: 12px 2px 0; font-size: 13px; color: var(--muted); }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; }
.lead { color: var(--muted); margin: 0 0 12px; }
.muted { color: var(--muted); }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: inherit; }
ul.legend { list-style: none; padding: 0; margin: 0 0 10px; display: flex; flex-wrap: wrap;
  gap: 4px 18px; font-size: 12.5px; }
ul.legend li { display: flex; align-items: center; gap: 6px; }
.sw { display: inline-block; width: 22px; height: 11px; border-radius: 2px; }
.sw.restored { background: repeating-linear-gradient(45deg, #7d8793 0 2px, #dde1e6 2px 5px); }
.sw.failed { background: #fff; border: 2px solid var(--bad); }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin-top: 8px; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; background: var(--panel); white-space: nowrap; }
tbody tr:hover { background: #fafbfc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.hash { word-break: break-all; color: #3a4048; }
td.path { word-break: break-all; }
.tag { display: inline-block; padding: 0 8px; border-radius: 999px; font-size: 12px;
  background: #e7edf5; color: #2f4d70; white-space: nowrap; }
.tag.dep { background: #eef0f2; color: var(--muted); }
.cols { display: grid; grid-template-columns: 3fr 2fr; gap: 10px 40px; }
@media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
.hbar { display: grid; grid-template-columns: minmax(120px, 44%) 1fr 70px; gap: 10px;
  align-items: center; padding: 2px 0; font-size: 13px; }
.hbar .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.hbar .ver { color: var(--muted); font-size: 11.5px; margin-left: 4px; }
.hbar .track { height: 10px; background: #eef1f4; border-radius: 3px; overflow: hidden; }
.hbar .fill { display: block; height: 100%; background: #5b8cc2; border-radius: 3px; }
.dir .fill { background: #8a7ab8; }
.hbar .size { text-align: right; font-variant-numeric: tabular-nums; color: #3a4048; }
details { margin-top: 6px; }
summary { cursor: pointer; color: var(--accent); font-size: 13px; padding: 4px 0; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 8px 0 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; word-break: break-all; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 18px; }
"#;

fn head(r: &Report) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} ({}) – dib-create build report</title>\n<style>{CSS}</style>\n</head>\n",
        esc(&r.image),
        status_word(r.ok)
    )
}

fn status_word(ok: bool) -> &'static str {
    if ok { "OK" } else { "FAILED" }
}

fn header(r: &Report) -> String {
    let (class, badge) = if r.ok {
        ("top", "<span class=\"badge ok\">OK</span>")
    } else {
        ("top failed", "<span class=\"badge failed\">FAILED</span>")
    };
    let facts = [
        ("architecture", esc(&r.arch)),
        ("total time", human_duration(r.seconds)),
        ("started", utc(r.started_at)),
        ("hooks", hook_count_fact(&r.timeline)),
        ("outputs", r.inputs.outputs.len().to_string()),
    ];
    let facts: String = facts
        .iter()
        .map(|(k, v)| format!("<div><dt>{k}</dt><dd>{v}</dd></div>"))
        .collect();
    format!(
        "<header class=\"{class}\">\n<p class=\"kicker\">dib-create build report</p>\n\
         <div class=\"title\"><h1>{}</h1>{badge}</div>\n<dl class=\"facts\">{facts}</dl>\n{}</header>\n",
        esc(&r.image),
        failure(r)
    )
}

fn hook_count_fact(bars: &[Bar]) -> String {
    let ran = bars.iter().filter(|b| b.kind == BarKind::Hook).count();
    let restored = bars.iter().filter(|b| b.kind == BarKind::Restored).count();
    if restored == 0 {
        format!("{ran} ran")
    } else {
        format!("{ran} ran, {restored} restored")
    }
}

/// The error block of a failed build, naming the bar that failed when one did.
fn failure(r: &Report) -> String {
    if r.ok {
        return String::new();
    }
    let place = match r.timeline.iter().find(|b| !b.ok) {
        Some(b) => format!("The build failed in {}.", esc(&bar_title(b))),
        None => "The build failed.".to_string(),
    };
    let text = r.error.as_deref().unwrap_or("(no error text was recorded)");
    format!(
        "<div class=\"error\"><p>{place}</p><pre>{}</pre></div>\n",
        esc(text)
    )
}

fn nav() -> String {
    "<nav><a href=\"#timeline\">Timeline</a><a href=\"#disk\">Disk</a>\
     <a href=\"#contents\">Contents</a><a href=\"#inputs\">Inputs and outputs</a></nav>\n"
        .to_string()
}

fn footer() -> String {
    format!(
        "<footer>Made by dib-create {}. This page is self-contained: \
         no scripts, nothing loaded from elsewhere.</footer>\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn section(id: &str, title: &str, lead: &str, body: &str) -> String {
    format!(
        "<section id=\"{id}\">\n<h2>{title}</h2>\n<p class=\"lead\">{lead}</p>\n{body}</section>\n"
    )
}

// ---------------------------------------------------------------- timeline

/// Phase colours, fixed so that the same phase looks the same in every report.
const PHASE_COLOURS: &[(&str, &str)] = &[
    ("root.d", "#4e79a7"),
    ("extra-data.d", "#f28e2b"),
    ("pre-install.d", "#b6992d"),
    ("install.d", "#59a14f"),
    ("post-install.d", "#499894"),
    ("post-root.d", "#86bcb6"),
    ("block-device.d", "#9c755f"),
    ("pre-finalise.d", "#d37295"),
    ("finalise.d", "#b07aa1"),
    ("cleanup.d", "#79a9d9"),
];

/// For phases the table does not know, picked by name so they stay stable.
const SPARE_COLOURS: &[&str] = &["#e5a03a", "#8cc084", "#e88a8a", "#a58fd0", "#6fb7c9"];

const STEP_COLOUR: &str = "#8e959e";
const FAIL_COLOUR: &str = "#d1242f";

fn phase_colour(phase: &str) -> &'static str {
    if let Some((_, c)) = PHASE_COLOURS.iter().find(|(p, _)| *p == phase) {
        return c;
    }
    let sum: usize = phase.bytes().map(usize::from).sum();
    SPARE_COLOURS[sum % SPARE_COLOURS.len()]
}

fn kind_class(kind: BarKind) -> &'static str {
    match kind {
        BarKind::Hook => "hook",
        BarKind::Restored => "restored",
        BarKind::Step => "step",
    }
}

/// `install.d/01-install-packages (package-installs)` or `disk: make the filesystems`.
fn bar_title(b: &Bar) -> String {
    match (&b.kind, &b.element) {
        (BarKind::Step, _) => format!("{}: {}", b.phase, b.label),
        (_, Some(e)) => format!("{}/{} ({e})", b.phase, b.label),
        (_, None) => format!("{}/{}", b.phase, b.label),
    }
}

/// The time axis: where a second lands, and where the ticks go.
struct Axis {
    left: f64,
    width: f64,
    end: f64,
    step: f64,
}

impl Axis {
    /// An axis over at least `span` seconds, ending on a tick so that the
    /// last bar has a labelled line after it.
    fn new(left: f64, width: f64, span: f64) -> Axis {
        let span = span.max(0.001);
        let step = tick_step(span);
        Axis {
            left,
            width,
            end: (span / step - 1e-9).ceil().max(1.0) * step,
            step,
        }
    }

    fn x(&self, t: f64) -> f64 {
        self.left + t.clamp(0.0, self.end) / self.end * self.width
    }

    fn right(&self) -> f64 {
        self.left + self.width
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let n = (self.end / self.step + 1e-9).floor() as usize;
        (0..=n).map(|i| i as f64 * self.step)
    }
}

/// A round step that gives about eight to twelve ticks over `span` seconds.
fn tick_step(span: f64) -> f64 {
    const STEPS: &[f64] = &[
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
        1200.0, 1800.0, 3600.0, 7200.0,
    ];
    let wanted = span / 10.0;
    STEPS
        .iter()
        .copied()
        .find(|s| *s >= wanted)
        .unwrap_or_else(|| (wanted / 3600.0).ceil() * 3600.0)
}

fn tick_label(t: f64, step: f64) -> String {
    if step < 1.0 {
        format!("{t:.1} s")
    } else {
        format!("{t:.0} s")
    }
}

/// Indices of the `n` slowest hooks and steps (restored hooks did not run, so
/// their time says nothing about the build).
fn slowest(bars: &[Bar], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..bars.len())
        .filter(|&i| bars[i].kind != BarKind::Restored)
        .collect();
    idx.sort_by(|&a, &b| bars[b].seconds.total_cmp(&bars[a].seconds).then(a.cmp(&b)));
    idx.truncate(n);
    idx
}

/// Phases in the order they first appear, for the legend and the patterns.
fn phases_in_order(bars: &[Bar], kinds: &[BarKind]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for b in bars.iter().filter(|b| kinds.contains(&b.kind)) {
        if !seen.contains(&b.phase) {
            seen.push(b.phase.clone());
        }
    }
    seen
}

/// The geometry of the timeline.
mod tl {
    pub const WIDTH: f64 = 1150.0;
    pub const GUTTER: f64 = 118.0;
    pub const RIGHT_PAD: f64 = 14.0;
    pub const TOP: f64 = 26.0;
    pub const ROW: f64 = 16.0;
    pub const BAR: f64 = 11.0;
    pub const BOTTOM: f64 = 26.0;
    /// Bars shorter than this on screen are drawn this wide, so none vanish.
    pub const MIN_BAR: f64 = 2.5;
    pub const LABEL_PX: f64 = 11.0;
}

fn timeline_section(r: &Report) -> String {
    let bars = &r.timeline;
    if bars.is_empty() {
        return section(
            "timeline",
            "Timeline",
            "No hook ran and no step was recorded.",
            "",
        );
    }
    let lead = format!(
        "{}; one row per hook or step, in the order they ran. The five slowest are labelled; \
         hover over a bar for its element and time.",
        timeline_counts(bars)
    );
    let body = format!("{}{}", legend(bars), timeline_svg(r));
    section("timeline", "Timeline", &lead, &body)
}

fn timeline_counts(bars: &[Bar]) -> String {
    let count = |k: BarKind| bars.iter().filter(|b| b.kind == k).count();
    let mut parts = vec![counted(count(BarKind::Hook), "hook ran", "hooks ran")];
    let restored = count(BarKind::Restored);
    if restored > 0 {
        parts.push(counted(
            restored,
            "was restored from the phase cache",
            "were restored from the phase cache",
        ));
    }
    let steps = count(BarKind::Step);
    if steps > 0 {
        parts.push(counted(
            steps,
            "step of dib-create itself",
            "steps of dib-create itself",
        ));
    }
    parts.join(", ")
}

fn legend(bars: &[Bar]) -> String {
    let mut items: Vec<String> = phases_in_order(bars, &[BarKind::Hook, BarKind::Restored])
        .iter()
        .map(|p| {
            format!(
                "<li><span class=\"sw\" style=\"background:{}\"></span>{}</li>",
                phase_colour(p),
                esc(p)
            )
        })
        .collect();
    if bars.iter().any(|b| b.kind == BarKind::Step) {
        items.push(format!(
            "<li><span class=\"sw\" style=\"background:{STEP_COLOUR}\"></span>dib-create step (disk, outputs, cache)</li>"
        ));
    }
    if bars.iter().any(|b| b.kind == BarKind::Restored) {
        items.push(
            "<li><span class=\"sw restored\"></span>restored from the phase cache</li>".into(),
        );
    }
    if bars.iter().any(|b| !b.ok) {
        items.push("<li><span class=\"sw failed\"></span>failed</li>".into());
    }
    format!("<ul class=\"legend\">{}</ul>\n", items.concat())
}

/// Rows in the order the bars started; ties keep the report's order.
fn row_order(bars: &[Bar]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bars.len()).collect();
    order.sort_by(|&a, &b| bars[a].start.total_cmp(&bars[b].start).then(a.cmp(&b)));
    order
}

fn timeline_svg(r: &Report) -> String {
    let bars = &r.timeline;
    let span = bars
        .iter()
        .map(|b| b.start + b.seconds)
        .fold(r.seconds, f64::max);
    let axis = Axis::new(tl::GUTTER, tl::WIDTH - tl::GUTTER - tl::RIGHT_PAD, span);
    let order = row_order(bars);
    let height = tl::TOP + order.len() as f64 * tl::ROW + tl::BOTTOM;
    let restored_phases = phases_in_order(bars, &[BarKind::Restored]);
    let slow = slowest(bars, 5);

    let mut svg = format!(
        "<svg class=\"timeline\" viewBox=\"0 0 {} {}\" role=\"img\" \
         aria-label=\"timeline of the build\">\n",
        coord(tl::WIDTH),
        coord(height)
    );
    svg.push_str(&hatch_patterns(&restored_phases));
    svg.push_str(&phase_bands(bars, &order));
    svg.push_str(&time_grid(&axis, height));
    for (row, &i) in order.iter().enumerate() {
        let y = tl::TOP + row as f64 * tl::ROW + (tl::ROW - tl::BAR) / 2.0;
        svg.push_str(&bar_rect(&bars[i], &axis, y, &restored_phases));
        if slow.contains(&i) {
            svg.push_str(&slow_label(&bars[i], &axis, y));
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// One hatch pattern per phase that has restored bars, in that phase's colour.
fn hatch_patterns(restored_phases: &[String]) -> String {
    let mut defs = String::from("<defs>\n");
    for (k, p) in restored_phases.iter().enumerate() {
        let c = phase_colour(p);
        defs.push_str(&format!(
            "<pattern id=\"restored-{k}\" width=\"5\" height=\"5\" patternUnits=\"userSpaceOnUse\" \
             patternTransform=\"rotate(45)\"><rect width=\"5\" height=\"5\" fill=\"{c}\" \
             fill-opacity=\"0.28\"/><rect width=\"2\" height=\"5\" fill=\"{c}\"/></pattern>\n"
        ));
    }
    defs.push_str("</defs>\n");
    defs
}

/// Alternating background bands, one per run of rows of the same phase, with
/// the phase's name in the left gutter.
fn phase_bands(bars: &[Bar], order: &[usize]) -> String {
    let mut out = String::new();
    let mut start = 0;
    let mut band = 0;
    while start < order.len() {
        let phase = &bars[order[start]].phase;
        let end = (start..order.len())
            .find(|&j| bars[order[j]].phase != *phase)
            .unwrap_or(order.len());
        let y = tl::TOP + start as f64 * tl::ROW;
        let h = (end - start) as f64 * tl::ROW;
        if band % 2 == 0 {
            out.push_str(&format!(
                "<rect class=\"band\" x=\"0\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#f3f5f8\"/>\n",
                coord(y),
                coord(tl::WIDTH),
                coord(h)
            ));
        }
        out.push_str(&format!(
            "<text class=\"phase-name\" x=\"{}\" y=\"{}\" text-anchor=\"end\" \
             dominant-baseline=\"central\" font-size=\"11.5\" fill=\"#3d444d\">{}</text>\n",
            coord(tl::GUTTER - 10.0),
            coord(y + h / 2.0),
            esc(&fit(phase, 17))
        ));
        start = end;
        band += 1;
    }
    out
}

/// Vertical grid lines with second labels above and below the rows.
fn time_grid(axis: &Axis, height: f64) -> String {
    let bottom = height - tl::BOTTOM;
    let mut out = String::new();
    for t in axis.ticks() {
        let x = coord(axis.x(t));
        let label = tick_label(t, axis.step);
        out.push_str(&format!(
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#d5dae0\" stroke-width=\"1\"/>\n\
             <text class=\"tick\" x=\"{x}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10.5\" fill=\"#626b75\">{label}</text>\n\
             <text class=\"tick\" x=\"{x}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10.5\" fill=\"#626b75\">{label}</text>\n",
            coord(tl::TOP - 6.0),
            coord(bottom + 4.0),
            coord(tl::TOP - 10.0),
            coord(bottom + 17.0),
        ));
    }
    out
}

fn bar_rect(b: &Bar, axis: &Axis, y: f64, restored_phases: &[String]) -> String {
    let x = axis.x(b.start);
    let exact = axis.x(b.start + b.seconds) - x;
    let w = exact.max(tl::MIN_BAR);
    let fill = match b.kind {
        BarKind::Hook => phase_colour(&b.phase).to_string(),
        BarKind::Step => STEP_COLOUR.to_string(),
        BarKind::Restored => {
            let k = restored_phases.iter().position(|p| *p == b.phase);
            format!("url(#restored-{})", k.unwrap_or(0))
        }
    };
    let stroke = if b.ok {
        String::new()
    } else {
        format!(" stroke=\"{FAIL_COLOUR}\" stroke-width=\"2\"")
    };
    let note = match (b.kind, b.ok) {
        (_, false) => " – FAILED",
        (BarKind::Restored, true) => " – restored from the phase cache",
        _ => "",
    };
    format!(
        "<rect class=\"bar {}\" data-phase=\"{}\" data-label=\"{}\" data-seconds=\"{}\" \
         x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"2\" fill=\"{fill}\"{stroke}>\
         <title>{}: {}{note}</title></rect>\n",
        kind_class(b.kind),
        esc(&b.phase),
        esc(&b.label),
        b.seconds,
        coord(x),
        coord(y),
        coord(w),
        coord(tl::BAR),
        esc(&bar_title(b)),
        bar_seconds(b.seconds),
    )
}

/// The name and time of a slow bar, beside it where there is room: right of
/// its end, else left of its start, else inside it.
fn slow_label(b: &Bar, axis: &Axis, y: f64) -> String {
    let name = fit(&b.label, 48);
    let secs = bar_seconds(b.seconds);
    let width = text_width(
        name.chars().count() + secs.chars().count() + 2,
        tl::LABEL_PX,
    );
    let x0 = axis.x(b.start);
    let x1 = (axis.x(b.start + b.seconds)).max(x0 + tl::MIN_BAR);
    let (x, anchor, fill) = if x1 + 6.0 + width <= axis.right() {
        (x1 + 6.0, "start", "#1f2328")
    } else if x0 - 6.0 - width >= axis.left {
        (x0 - 6.0, "end", "#1f2328")
    } else {
        (x0 + 6.0, "start", "#ffffff")
    };
    format!(
        "<text class=\"slow-label\" x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" \
         dominant-baseline=\"central\" font-size=\"{}\" font-weight=\"600\" fill=\"{fill}\">{} \
         <tspan font-weight=\"400\">{secs}</tspan></text>\n",
        coord(x),
        coord(y + tl::BAR / 2.0),
        coord(tl::LABEL_PX),
        esc(&name),
    )
}

// ---------------------------------------------------------------- disk

/// The geometry of the disk picture: the disk is `WIDTH` units wide whatever
/// its size, so a partition's width is its share of the disk times 1000.
mod dk {
    pub const VIEW: f64 = 1150.0;
    pub const LEFT: f64 = 75.0;
    pub const WIDTH: f64 = 1000.0;
    pub const TOP: f64 = 30.0;
    pub const HEIGHT: f64 = 104.0;
    pub const USAGE: f64 = 12.0;
    /// Partitions narrower than this get their facts in a callout below.
    pub const ROOM_INSIDE: f64 = 180.0;
    /// Partitions narrower than this also get a marker, to be seen at all.
    pub const MARKER_BELOW: f64 = 3.0;
    pub const CALLOUT_W: f64 = 290.0;
    pub const LINE: f64 = 15.0;
    pub const CALLOUT_GAP: f64 = 16.0;
    pub const TEXT_PX: f64 = 11.5;
}

/// Fill and line colours for a partition, by filesystem.
fn fs_colours(fs: Option<&FsPicture>) -> (&'static str, &'static str) {
    match fs.map(|f| f.fstype.as_str()) {
        None => ("#e4e7eb", "#79818b"),
        Some("ext2" | "ext3" | "ext4") => ("#dbe6f3", "#3b6ea8"),
        Some("vfat" | "fat" | "fat16" | "fat32" | "msdos") => ("#fbe3c7", "#c46f12"),
        Some("xfs") => ("#dcefd8", "#3e8a35"),
        Some("btrfs") => ("#e9def3", "#7a52a6"),
        Some("swap") => ("#f6dbe4", "#b0466d"),
        Some(_) => ("#dcefee", "#2f7f7a"),
    }
}

fn disk_section(disk: Option<&DiskPicture>) -> String {
    let Some(d) = disk else {
        return section(
            "disk",
            "Disk",
            "There is nothing to draw here: no disk image was made.",
            "",
        );
    };
    let table = match d.table.as_deref() {
        Some(t) => format!("{} partition table", esc(&t.to_uppercase())),
        None => "no partition table (one filesystem covers the disk)".into(),
    };
    let lead = format!(
        "{} disk, {table}, {}; drawn to scale. Hatched space is not partitioned.",
        human_bytes(d.size),
        counted(d.partitions.len(), "partition", "partitions"),
    );
    let body = format!("{}{}", disk_svg(d), partition_table(d));
    section("disk", "Disk", &lead, &body)
}

/// Where a partition lands on the strip, in exact proportion to the disk.
fn part_span(d: &DiskPicture, p: &PartPicture) -> (f64, f64) {
    let size = d.size.max(1) as f64;
    (
        dk::LEFT + p.start as f64 / size * dk::WIDTH,
        p.size as f64 / size * dk::WIDTH,
    )
}

fn disk_svg(d: &DiskPicture) -> String {
    let narrow: Vec<&PartPicture> = d
        .partitions
        .iter()
        .filter(|p| part_span(d, p).1 < dk::ROOM_INSIDE)
        .collect();
    let callout_room = narrow.iter().map(|p| callout_height(p)).fold(0.0, f64::max);
    let height = if narrow.is_empty() {
        dk::TOP + dk::HEIGHT + 14.0
    } else {
        dk::TOP + dk::HEIGHT + 34.0 + callout_room + 8.0
    };
    let mut svg = format!(
        "<svg class=\"disk\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"the disk to scale\">\n\
         <defs><pattern id=\"unallocated\" width=\"6\" \
         height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">\
         <rect width=\"6\" height=\"6\" fill=\"#f1f3f5\"/><rect width=\"1.5\" height=\"6\" \
         fill=\"#c3c9d0\"/></pattern></defs>\n",
        coord(dk::VIEW),
        coord(height)
    );
    svg.push_str(&disk_scale(d.size));
    svg.push_str(&format!(
        "<rect class=\"disk\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"url(#unallocated)\" \
         stroke=\"#8b939c\"><title>not partitioned</title></rect>\n",
        coord(dk::LEFT),
        coord(dk::TOP),
        coord(dk::WIDTH),
        coord(dk::HEIGHT)
    ));
    for p in &d.partitions {
        svg.push_str(&partition_shape(d, p));
    }
    svg.push_str(&callouts(d, &narrow));
    svg.push_str("</svg>\n");
    svg
}

/// Byte offsets at the quarters of the disk, above the strip.
fn disk_scale(size: u64) -> String {
    let mut out = String::new();
    for q in 0..=4u64 {
        let x = dk::LEFT + q as f64 / 4.0 * dk::WIDTH;
        let anchor = match q {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        out.push_str(&format!(
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#8b939c\"/>\
             <text x=\"{x}\" y=\"{}\" text-anchor=\"{anchor}\" font-size=\"10.5\" fill=\"#626b75\">{}</text>\n",
            coord(dk::TOP - 5.0),
            coord(dk::TOP),
            coord(dk::TOP - 9.0),
            scale_label(size, q),
            x = coord(x),
        ));
    }
    out
}

fn scale_label(size: u64, quarter: u64) -> String {
    match quarter {
        0 => "0".into(),
        4 => human_bytes(size),
        q => human_bytes(size / 4 * q),
    }
}

fn partition_shape(d: &DiskPicture, p: &PartPicture) -> String {
    let (x, w) = part_span(d, p);
    let (fill, line) = fs_colours(p.filesystem.as_ref());
    let mut out = format!(
        "<rect class=\"partition\" data-name=\"{}\" data-number=\"{}\" data-bytes=\"{}\" \
         x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" stroke=\"{line}\">\
         <title>{}</title></rect>\n",
        esc(&p.name),
        p.number,
        p.size,
        coord(x),
        coord(dk::TOP),
        coord(w),
        coord(dk::HEIGHT),
        esc(&part_lines(p).join(" – "))
    );
    if w < dk::MARKER_BELOW {
        out.push_str(&format!(
            "<rect class=\"partition-marker\" data-name=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" \
             height=\"{}\" fill=\"{line}\"/>\n",
            esc(&p.name),
            coord(x + w / 2.0 - dk::MARKER_BELOW / 2.0),
            coord(dk::TOP - 4.0),
            coord(dk::MARKER_BELOW),
            coord(dk::HEIGHT + 8.0)
        ));
    }
    out.push_str(&usage_bar(p, x, w, line));
    if w >= dk::ROOM_INSIDE {
        out.push_str(&part_text(p, x + 8.0, dk::TOP + 17.0, w - 16.0));
    }
    out
}

/// The used part of a filesystem as a bar along the bottom of its partition,
/// `used / total` of the partition's width.
fn usage_bar(p: &PartPicture, x: f64, w: f64, colour: &str) -> String {
    let Some((used, total)) = usage(p) else {
        return String::new();
    };
    let y = dk::TOP + dk::HEIGHT - dk::USAGE;
    let used_w = w * used as f64 / total as f64;
    format!(
        "<rect class=\"free\" data-name=\"{n}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" \
         fill=\"#ffffff\" fill-opacity=\"0.75\"/>\n<rect class=\"used\" data-name=\"{n}\" \
         data-used=\"{used}\" data-total=\"{total}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" \
         fill=\"{colour}\"><title>{} used of {}</title></rect>\n",
        coord(x),
        coord(y),
        coord(w),
        coord(dk::USAGE),
        coord(x),
        coord(y),
        coord(used_w),
        coord(dk::USAGE),
        human_bytes(used),
        human_bytes(total),
        n = esc(&p.name),
    )
}

/// Used and total bytes, when both were measured; used never beyond total.
fn usage(p: &PartPicture) -> Option<(u64, u64)> {
    let fs = p.filesystem.as_ref()?;
    match (fs.used, fs.total) {
        (Some(u), Some(t)) if t > 0 => Some((u.min(t), t)),
        _ => None,
    }
}

/// The facts of a partition, one short line each, unescaped.
fn part_lines(p: &PartPicture) -> Vec<String> {
    let mut title = p.name.clone();
    if p.number > 0 {
        title.push_str(&format!(" #{}", p.number));
    }
    if !p.part_type.is_empty() {
        title.push_str(&format!(" · {}", p.part_type));
    }
    if p.boot {
        title.push_str(" · boot");
    }
    let mut lines = vec![title];
    match &p.filesystem {
        None => lines.push("no filesystem".into()),
        Some(fs) => {
            lines.push(match &fs.label {
                Some(l) => format!("{} · label {l}", fs.fstype),
                None => fs.fstype.clone(),
            });
            lines.push(match &fs.mount_point {
                Some(m) => format!("mounted at {m}"),
                None => "not mounted".into(),
            });
        }
    }
    lines.push(if p.number == 0 {
        format!("{}, the whole disk", human_bytes(p.size))
    } else {
        format!("{} partition", human_bytes(p.size))
    });
    if p.filesystem.is_some() {
        lines.push(match usage(p) {
            Some((u, t)) => format!(
                "{} used, {} free ({} full)",
                human_bytes(u),
                human_bytes(t - u),
                percent(u, t)
            ),
            None => "usage unknown".into(),
        });
    }
    lines
}

/// A partition's facts as SVG text from (`x`, `y`), cut to `width`.
fn part_text(p: &PartPicture, x: f64, y: f64, width: f64) -> String {
    let max = (width / (dk::TEXT_PX * 0.6)).floor().max(4.0) as usize;
    let mut out = String::new();
    for (i, line) in part_lines(p).iter().enumerate() {
        let weight = if i == 0 { " font-weight=\"700\"" } else { "" };
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"{}\" fill=\"#1f2328\"{weight}>{}</text>\n",
            coord(x),
            coord(y + i as f64 * dk::LINE),
            coord(dk::TEXT_PX),
            esc(&fit(line, max))
        ));
    }
    out
}

/// How tall a partition's callout is: its lines, and a usage bar when known.
fn callout_height(p: &PartPicture) -> f64 {
    let bar = if usage(p).is_some() { 14.0 } else { 0.0 };
    14.0 + part_lines(p).len() as f64 * dk::LINE + bar
}

/// Boxes below the strip for partitions too narrow to hold their facts, each
/// with a leader line up to its partition.
fn callouts(d: &DiskPicture, narrow: &[&PartPicture]) -> String {
    let top = dk::TOP + dk::HEIGHT + 34.0;
    let height = narrow.iter().map(|p| callout_height(p)).fold(0.0, f64::max);
    let mut out = String::new();
    let mut next_free = 4.0;
    for (i, p) in narrow.iter().enumerate() {
        let (x, w) = part_span(d, p);
        let centre = x + w / 2.0;
        let bx = (centre - 24.0)
            .max(next_free)
            .min(dk::VIEW - 4.0 - dk::CALLOUT_W);
        next_free = bx + dk::CALLOUT_W + dk::CALLOUT_GAP;
        let (fill, line) = fs_colours(p.filesystem.as_ref());
        // Knees at staggered heights keep neighbouring leaders apart.
        let knee = dk::TOP + dk::HEIGHT + 10.0 + 7.0 * (i % 3) as f64;
        out.push_str(&format!(
            "<polyline class=\"leader\" points=\"{c},{} {c},{k} {l},{k} {l},{}\" fill=\"none\" \
             stroke=\"{line}\" stroke-width=\"1.2\"/>\n<rect class=\"callout\" data-name=\"{}\" \
             x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"6\" fill=\"{fill}\" \
             fill-opacity=\"0.5\" stroke=\"{line}\"/>\n",
            coord(dk::TOP + dk::HEIGHT),
            coord(top),
            esc(&p.name),
            coord(bx),
            coord(top),
            coord(dk::CALLOUT_W),
            coord(height),
            c = coord(centre),
            k = coord(knee),
            l = coord(bx + 24.0),
        ));
        let lines = part_lines(p).len() as f64;
        out.push_str(&part_text(p, bx + 10.0, top + 18.0, dk::CALLOUT_W - 20.0));
        out.push_str(&mini_usage(
            p,
            bx + 10.0,
            top + 10.0 + lines * dk::LINE,
            line,
        ));
    }
    out
}

/// The usage bar of a callout (the one in the partition is too narrow to read).
fn mini_usage(p: &PartPicture, x: f64, y: f64, colour: &str) -> String {
    let Some((used, total)) = usage(p) else {
        return String::new();
    };
    let w = dk::CALLOUT_W - 20.0;
    format!(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"8\" rx=\"2\" fill=\"#ffffff\" \
         stroke=\"{colour}\" stroke-width=\"0.6\"/><rect class=\"used-mini\" x=\"{}\" y=\"{}\" \
         width=\"{}\" height=\"8\" rx=\"2\" fill=\"{colour}\"/>\n",
        coord(x),
        coord(y),
        coord(w),
        coord(x),
        coord(y),
        coord(w * used as f64 / total as f64),
    )
}

fn partition_table(d: &DiskPicture) -> String {
    let mut rows = String::new();
    for p in &d.partitions {
        rows.push_str(&partition_row(p));
    }
    format!(
        "<table class=\"partitions\"><thead><tr><th class=\"num\">#</th><th>name</th>\
         <th class=\"num\">start</th><th class=\"num\">size</th><th>type</th><th>boot</th>\
         <th>filesystem</th><th>label</th><th>mount point</th><th class=\"num\">used</th>\
         <th class=\"num\">free</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n"
    )
}

fn partition_row(p: &PartPicture) -> String {
    let fs = p.filesystem.as_ref();
    let dash = || "–".to_string();
    let (used, free) = match usage(p) {
        Some((u, t)) => (
            format!("{} ({})", human_bytes(u), percent(u, t)),
            human_bytes(t - u),
        ),
        None if fs.is_some() => ("unknown".into(), "unknown".into()),
        None => (dash(), dash()),
    };
    let number = if p.number == 0 {
        "whole disk".into()
    } else {
        p.number.to_string()
    };
    format!(
        "<tr><td class=\"num\">{number}</td><td>{}</td><td class=\"num\" title=\"{} bytes\">{}</td>\
         <td class=\"num\" title=\"{} bytes\">{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td class=\"num\">{used}</td><td class=\"num\">{free}</td></tr>\n",
        esc(&p.name),
        p.start,
        human_bytes(p.start),
        p.size,
        human_bytes(p.size),
        esc(&p.part_type),
        if p.boot { "yes" } else { "" },
        fs.map_or_else(dash, |f| esc(&f.fstype)),
        fs.and_then(|f| f.label.as_deref()).map_or_else(dash, esc),
        fs.and_then(|f| f.mount_point.as_deref())
            .map_or_else(dash, |m| format!("<code>{}</code>", esc(m))),
    )
}

// ---------------------------------------------------------------- contents

/// Packages and directories shown before the rest is folded away.
const SHOWN: usize = 40;

fn contents_section(contents: Option<&Contents>) -> String {
    let Some(c) = contents else {
        return section(
            "contents",
            "Contents",
            "Nothing to show: the build did not get that far (the tree was not measured).",
            "",
        );
    };
    let package_bytes: u64 = c.packages.iter().map(|p| p.bytes).sum();
    let lead = format!(
        "{} files, {} in the tree; {} packages installed, {} by their own count.",
        grouped(c.files),
        human_bytes(c.total_bytes),
        grouped(c.packages.len() as u64),
        human_bytes(package_bytes)
    );
    let mut packages: Vec<(String, String, u64)> = c
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.bytes))
        .collect();
    packages.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let mut dirs: Vec<(String, String, u64)> = c
        .directories
        .iter()
        .map(|d| (d.path.clone(), String::new(), d.bytes))
        .collect();
    dirs.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let body = format!(
        "<div class=\"cols\"><div><h3>Packages, by installed size</h3>\n{}</div>\n\
         <div><h3>Biggest directories (with what is below them)</h3>\n{}</div></div>\n",
        size_bars("pkg", "packages", &packages),
        size_bars("dir", "directories", &dirs)
    );
    section("contents", "Contents", &lead, &body)
}

/// Rows of (name, detail, bytes), biggest first, as bars proportional to the
/// biggest; past the first [`SHOWN`] folded into a `<details>`.
fn size_bars(class: &str, noun: &str, rows: &[(String, String, u64)]) -> String {
    if rows.is_empty() {
        return format!("<p class=\"muted\">No {noun} were recorded.</p>\n");
    }
    let biggest = rows.iter().map(|r| r.2).max().unwrap_or(1).max(1);
    let bar = |(name, detail, bytes): &(String, String, u64)| {
        let ver = if detail.is_empty() {
            String::new()
        } else {
            format!("<span class=\"ver\">{}</span>", esc(detail))
        };
        format!(
            "<div class=\"hbar {class}\" data-bytes=\"{bytes}\"><span class=\"name\" title=\"{n}\">\
             {n}{ver}</span><span class=\"track\"><span class=\"fill\" style=\"width:{:.2}%\">\
             </span></span><span class=\"size\">{}</span></div>\n",
            *bytes as f64 * 100.0 / biggest as f64,
            human_bytes(*bytes),
            n = esc(name),
        )
    };
    let shown: String = rows.iter().take(SHOWN).map(bar).collect();
    if rows.len() <= SHOWN {
        return shown;
    }
    let rest: String = rows.iter().skip(SHOWN).map(bar).collect();
    format!(
        "{shown}<details><summary>{} more {noun}</summary>\n{rest}</details>\n",
        rows.len() - SHOWN
    )
}

// ---------------------------------------------------------------- inputs

fn inputs_section(inputs: &Inputs) -> String {
    let lead = "The elements the build used, what pinned its packages, and the files it wrote.";
    let body = format!(
        "<h3>Elements</h3>\n{}<h3>Reproducibility</h3>\n{}<h3>Outputs</h3>\n{}",
        elements_table(&inputs.elements),
        reproducibility(inputs),
        outputs_table(&inputs.outputs)
    );
    section("inputs", "Inputs and outputs", lead, &body)
}

fn elements_table(elements: &[ElementInput]) -> String {
    if elements.is_empty() {
        return "<p class=\"muted\">No elements were recorded.</p>\n".into();
    }
    let rows: String = elements
        .iter()
        .map(|e| {
            let why = if e.requested {
                "<span class=\"tag\">requested</span>"
            } else {
                "<span class=\"tag dep\">dependency</span>"
            };
            let overrides = if e.overrides.is_empty() {
                "–".to_string()
            } else {
                e.overrides
                    .iter()
                    .map(|o| format!("<code>{}</code>", esc(o)))
                    .collect::<Vec<_>>()
                    .join("<br>")
            };
            format!(
                "<tr><td><strong>{}</strong></td><td>{why}</td><td class=\"path\"><code>{}</code></td>\
                 <td class=\"path\">{overrides}</td></tr>\n",
                esc(&e.name),
                esc(&e.path)
            )
        })
        .collect();
    format!(
        "<table class=\"elements\"><thead><tr><th>element</th><th>why</th><th>taken from</th>\
         <th>overrides</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n"
    )
}

fn reproducibility(inputs: &Inputs) -> String {
    let lock = match &inputs.lockfile {
        Some(l) => format!(
            "<code>{}</code><br><span class=\"mono muted\">sha256 {}</span>",
            esc(&l.path),
            esc(&l.sha256)
        ),
        None => "none".into(),
    };
    let epoch = match inputs.source_date_epoch {
        Some(e) => format!("<code>{e}</code> ({})", utc(e)),
        None => "not set".into(),
    };
    format!(
        "<dl class=\"kv\"><dt>lockfile</dt><dd>{lock}</dd><dt>SOURCE_DATE_EPOCH</dt><dd>{epoch}</dd></dl>\n"
    )
}

fn outputs_table(outputs: &[OutputFile]) -> String {
    if outputs.is_empty() {
        return "<p class=\"muted\">No output was written.</p>\n".into();
    }
    let rows: String = outputs
        .iter()
        .map(|o| {
            format!(
                "<tr><td class=\"path\"><code>{}</code></td><td>{}</td>\
                 <td class=\"num\" title=\"{} bytes\">{}</td><td class=\"hash\">{}</td></tr>\n",
                esc(&o.path),
                esc(&o.kind),
                o.bytes,
                human_bytes(o.bytes),
                esc(&o.sha256)
            )
        })
        .collect();
    format!(
        "<table class=\"outputs\"><thead><tr><th>file</th><th>kind</th><th class=\"num\">size</th>\
         <th>sha256</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample;
    use regex::Regex;

    /// The attribute values of every tag of `class`, as (name, value) lists.
    fn tags(html: &str, class: &str) -> Vec<Vec<(String, String)>> {
        let tag = Regex::new(&format!(r#"<(?:rect|text) class="{class}"([^>]*)>"#)).unwrap();
        let attr = Regex::new(r#"([a-z-]+)="([^"]*)""#).unwrap();
        tag.captures_iter(html)
            .map(|c| {
                attr.captures_iter(&c[1])
                    .map(|a| (a[1].to_string(), a[2].to_string()))
                    .collect()
            })
            .collect()
    }

    fn get<'a>(attrs: &'a [(String, String)], name: &str) -> &'a str {
        attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {attrs:?}"))
    }

    fn num(attrs: &[(String, String)], name: &str) -> f64 {
        get(attrs, name).parse().unwrap()
    }

    fn failed_sample() -> Report {
        let mut r = sample();
        r.ok = false;
        r.error = Some("hook <install.d/50-x> failed & said \"no\"".into());
        r.timeline[10].ok = false;
        r
    }

    #[test]
    fn the_sample_is_the_build_the_tests_describe() {
        let r = sample();
        let hooks = r.timeline.iter().filter(|b| b.kind != BarKind::Step);
        assert!(hooks.count() >= 25);
        assert!(r.timeline.iter().any(|b| b.kind == BarKind::Restored));
        assert!(r.timeline.iter().any(|b| b.kind == BarKind::Step));
        assert_eq!(r.disk.as_ref().unwrap().partitions.len(), 3);
        let c = r.contents.as_ref().unwrap();
        assert_eq!((c.packages.len(), c.directories.len()), (200, 15));
        assert_eq!(r.inputs.elements.len(), 8);
        assert!(r.inputs.elements.iter().any(|e| !e.overrides.is_empty()));
        assert_eq!(r.inputs.outputs.len(), 4);
    }

    #[test]
    fn every_bar_is_one_rect_of_its_kind() {
        let r = sample();
        let html = render(&r);
        let rects = tags(&html, r"bar (?:hook|restored|step)");
        assert_eq!(rects.len(), r.timeline.len());
        let kind = Regex::new(r#"<rect class="bar (\w+)""#).unwrap();
        let kinds: Vec<&str> = kind
            .captures_iter(&html)
            .map(|c| c.get(1).unwrap().as_str())
            .collect();
        for b in &r.timeline {
            let found = rects.iter().zip(&kinds).any(|(a, k)| {
                get(a, "data-phase") == esc(&b.phase)
                    && get(a, "data-label") == esc(&b.label)
                    && num(a, "data-seconds") == b.seconds
                    && *k == kind_class(b.kind)
            });
            assert!(found, "no rect for {b:?}");
        }
    }

    #[test]
    fn bars_stay_visible_however_short() {
        let mut r = sample();
        r.timeline[0].seconds = 0.0;
        let html = render(&r);
        for a in tags(&html, r"bar (?:hook|restored|step)") {
            assert!(num(&a, "width") >= tl::MIN_BAR, "{a:?}");
        }
    }

    #[test]
    fn the_five_slowest_are_labelled() {
        let r = sample();
        let html = render(&r);
        let label =
            Regex::new(r#"<text class="slow-label"[^>]*>([^<]*) <tspan[^>]*>([^<]*)<"#).unwrap();
        let mut labels: Vec<(String, String)> = label
            .captures_iter(&html)
            .map(|c| (c[1].to_string(), c[2].to_string()))
            .collect();
        assert_eq!(labels.len(), 5);
        let mut ran: Vec<&Bar> = r
            .timeline
            .iter()
            .filter(|b| b.kind != BarKind::Restored)
            .collect();
        ran.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        let mut want: Vec<(String, String)> = ran[..5]
            .iter()
            .map(|b| (esc(&b.label), bar_seconds(b.seconds)))
            .collect();
        labels.sort();
        want.sort();
        assert_eq!(labels, want);
    }

    #[test]
    fn restored_bars_are_hatched_and_explained() {
        let html = render(&sample());
        let restored = tags(&html, "bar restored");
        assert!(!restored.is_empty());
        for a in restored {
            let fill = get(&a, "fill");
            let id = fill
                .strip_prefix("url(#")
                .and_then(|f| f.strip_suffix(')'))
                .unwrap();
            assert!(html.contains(&format!("<pattern id=\"{id}\"")), "{fill}");
        }
        assert!(html.contains("restored from the phase cache"));
    }

    #[test]
    fn every_bar_has_a_tooltip() {
        let html = render(&sample());
        let bar = Regex::new(r#"<rect class="bar [^>]*><title>([^<]+)</title></rect>"#).unwrap();
        let titled = bar.captures_iter(&html).count();
        assert_eq!(titled, sample().timeline.len());
        assert!(html.contains("install.d/01-package-installs (package-installs): 96.4 s"));
    }

    #[test]
    fn partitions_are_drawn_to_scale() {
        let r = sample();
        let disk = r.disk.as_ref().unwrap();
        let html = render(&r);
        let rects = tags(&html, "partition");
        assert_eq!(rects.len(), disk.partitions.len());
        for (a, p) in rects.iter().zip(&disk.partitions) {
            assert_eq!(get(a, "data-name"), p.name);
            assert_eq!(num(a, "data-bytes") as u64, p.size);
            let want = p.size as f64 / disk.size as f64 * 1000.0;
            assert!((num(a, "width") - want).abs() < 0.002, "{a:?} vs {want}");
            let x = dk::LEFT + p.start as f64 / disk.size as f64 * 1000.0;
            assert!((num(a, "x") - x).abs() < 0.002, "{a:?} vs {x}");
        }
        // The 1 MiB BIOS boot partition is half a unit wide: it gets a marker.
        let markers = tags(&html, "partition-marker");
        assert_eq!(markers.len(), 1);
        assert_eq!(get(&markers[0], "data-name"), "BSP");
    }

    #[test]
    fn used_space_is_drawn_to_scale() {
        let r = sample();
        let html = render(&r);
        let parts = tags(&html, "partition");
        let used = tags(&html, "used");
        assert_eq!(used.len(), 2);
        for u in &used {
            let part = parts
                .iter()
                .find(|p| get(p, "data-name") == get(u, "data-name"))
                .unwrap();
            let share = num(u, "data-used") / num(u, "data-total");
            let want = num(part, "width") * share;
            assert!((num(u, "width") - want).abs() < 0.002, "{u:?}");
            assert!((num(u, "x") - num(part, "x")).abs() < 1e-9);
        }
        let root = used.iter().find(|u| get(u, "data-name") == "root").unwrap();
        assert_eq!(get(root, "data-used"), "1318658048");
    }

    #[test]
    fn unknown_usage_is_said() {
        let mut r = sample();
        let root = &mut r.disk.as_mut().unwrap().partitions[2];
        root.filesystem.as_mut().unwrap().used = None;
        let html = render(&r);
        assert!(html.contains("usage unknown"));
        assert_eq!(tags(&html, "used").len(), 1);
    }

    #[test]
    fn user_text_is_escaped_everywhere() {
        let nasty = "a<b&\"c";
        let mut r = failed_sample();
        r.image = nasty.into();
        r.error = Some(nasty.into());
        r.inputs.elements[0].name = nasty.into();
        r.inputs.elements[0].path = format!("/x/{nasty}");
        r.inputs.elements[0].overrides = vec![nasty.into()];
        r.timeline[3].label = nasty.into();
        r.timeline[3].phase = nasty.into();
        r.timeline[3].element = Some(nasty.into());
        r.inputs.outputs[0].path = nasty.into();
        r.inputs.lockfile.as_mut().unwrap().path = nasty.into();
        let disk = r.disk.as_mut().unwrap();
        disk.partitions[0].name = nasty.into();
        disk.partitions[1].filesystem.as_mut().unwrap().label = Some(nasty.into());
        let c = r.contents.as_mut().unwrap();
        c.packages[0].name = nasty.into();
        c.directories[0].path = nasty.into();
        let html = render(&r);
        assert!(!html.contains(nasty));
        assert!(!html.contains("a<b"));
        assert!(html.contains("a&lt;b&amp;&quot;c"));
        assert_eq!(esc("<'&\">"), "&lt;&#39;&amp;&quot;&gt;");
    }

    #[test]
    fn a_failed_build_says_so_and_shows_the_error() {
        let html = render(&failed_sample());
        assert!(html.contains("<span class=\"badge failed\">FAILED</span>"));
        assert!(
            html.contains(
                "<pre>hook &lt;install.d/50-x&gt; failed &amp; said &quot;no&quot;</pre>"
            )
        );
        assert!(!html.contains("badge ok"));
        let failed = Regex::new(r##"<rect class="bar [^>]*stroke="#d1242f""##).unwrap();
        assert_eq!(failed.find_iter(&html).count(), 1);
        assert!(html.contains("The build failed in"));
    }

    #[test]
    fn a_good_build_has_no_error_block() {
        let html = render(&sample());
        assert!(html.contains("<span class=\"badge ok\">OK</span>"));
        assert!(!html.contains("class=\"error\""));
        assert!(html.contains("2025-06-02 09:41:07 UTC"));
    }

    #[test]
    fn the_page_needs_nothing_from_elsewhere() {
        let link = Regex::new(r#"(?i)\b(?:src|href)\s*=\s*["']?([^"'\s>]*)"#).unwrap();
        let url = Regex::new(r#"(?i)url\(\s*['"]?([^)'"]*)"#).unwrap();
        for r in [sample(), failed_sample(), Report::default()] {
            let html = render(&r);
            for c in link.captures_iter(&html) {
                assert!(c[1].starts_with('#'), "outside link {}", &c[0]);
            }
            for c in url.captures_iter(&html) {
                assert!(c[1].starts_with('#'), "outside url {}", &c[0]);
            }
            assert!(!html.contains("http://") && !html.contains("https://"));
            assert!(!html.to_lowercase().contains("<script"));
            assert!(!html.contains("@import") && !html.contains("@font-face"));
        }
    }

    #[test]
    fn missing_parts_are_explained() {
        let mut r = sample();
        r.disk = None;
        r.contents = None;
        r.inputs.lockfile = None;
        r.inputs.source_date_epoch = None;
        let html = render(&r);
        assert!(html.contains("no disk image was made"));
        assert!(html.contains("the build did not get that far"));
        assert!(html.contains("<dt>lockfile</dt><dd>none</dd>"));
        assert!(html.contains("<dt>SOURCE_DATE_EPOCH</dt><dd>not set</dd>"));
        // An empty report still makes a whole page.
        let empty = render(&Report::default());
        assert!(empty.ends_with("</html>\n"));
    }

    #[test]
    fn the_long_lists_fold_after_forty() {
        let html = render(&sample());
        assert_eq!(html.matches("class=\"hbar pkg\"").count(), 200);
        assert_eq!(html.matches("class=\"hbar dir\"").count(), 15);
        assert!(html.contains("<summary>160 more packages</summary>"));
        let first = html.find("class=\"hbar pkg\"").unwrap();
        let fold = html.find("<details>").unwrap();
        assert_eq!(html[first..fold].matches("class=\"hbar pkg\"").count(), 40);
        // The biggest package has the full bar.
        assert!(html.contains("linux-image-6.1.0-37-amd64"));
        assert!(html[first..].starts_with("class=\"hbar pkg\" data-bytes=\"417906688\""));
        assert!(html.contains("style=\"width:100.00%\""));
    }

    #[test]
    fn packages_are_sorted_whatever_the_order_given() {
        let mut r = sample();
        r.contents.as_mut().unwrap().packages.reverse();
        let html = render(&r);
        let sizes = Regex::new(r#"class="hbar pkg" data-bytes="(\d+)""#).unwrap();
        let bytes: Vec<u64> = sizes
            .captures_iter(&html)
            .map(|c| c[1].parse().unwrap())
            .collect();
        assert!(bytes.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn inputs_are_listed() {
        let html = render(&sample());
        assert!(html.contains("/home/ada/elements/bootloader"));
        assert!(html.contains("<span class=\"tag\">requested</span>"));
        assert!(html.contains("5d41b6f0c0a8e2b1f3d0e6a97c4b2f18e37d9a0c6b5e4f3a2d1c0b9a8f7e6d5c"));
        assert!(html.contains("1748736000</code> (2025-06-01 00:00:00 UTC)"));
        assert!(html.contains(&format!("<td class=\"hash\">{}</td>", "9f2c".repeat(16))));
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_748_857_267), "2025-06-02 09:41:07 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024 * 1024), "1 MiB");
        assert_eq!(human_bytes(1022 * 1024), "1 MiB");
        assert_eq!(human_bytes(100 * 1024 * 1024), "100 MiB");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(human_bytes(6_340_608), "6 MiB");
        assert_eq!(human_duration(8.44), "8.4 s");
        assert_eq!(human_duration(187.0), "3 min 07 s");
        assert_eq!(human_duration(3725.0), "1 h 02 min");
        assert_eq!(grouped(41_872), "41,872");
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(grouped(999), "999");
    }

    #[test]
    fn ticks_are_round_and_cover_the_build() {
        assert_eq!(tick_step(201.0), 30.0);
        assert_eq!(tick_step(7.0), 1.0);
        assert_eq!(tick_step(4000.0), 600.0);
        let axis = Axis::new(0.0, 100.0, 201.0);
        assert_eq!(axis.end, 210.0);
        assert_eq!(axis.ticks().last(), Some(210.0));
        assert_eq!(axis.ticks().count(), 8);
    }
}
