//! A small reader and writer for deb822 paragraphs (Debian control files,
//! `Packages` indices, dpkg's `status`, and our lockfiles).
//!
//! A paragraph is a list of `Field: value` lines; a line that starts with a
//! space or tab continues the previous field; blank lines separate paragraphs;
//! lines starting with `#` are comments. Field order is kept, names compare
//! case-insensitively, as Debian policy says.

use std::fmt::Write as _;

/// One paragraph, fields in file order. Values keep their continuation
/// lines joined with `\n` (each continuation line without its first blank).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Paragraph {
    pub fields: Vec<(String, String)>,
    /// 1-based line of the paragraph's first field, for error messages.
    pub line: usize,
}

impl Paragraph {
    /// The value of `name` (case-insensitive), trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name`, replacing an existing value in place or appending.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .fields
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some((_, v)) => *v = value,
            None => self.fields.push((name.to_string(), value)),
        }
    }

    /// Renders the paragraph (no trailing blank line).
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.fields {
            let mut lines = v.split('\n');
            let first = lines.next().unwrap_or("");
            if first.is_empty() {
                let _ = writeln!(s, "{k}:");
            } else {
                let _ = writeln!(s, "{k}: {first}");
            }
            for l in lines {
                // An empty continuation line is written as " ." (policy 5.6.13).
                let l = if l.is_empty() { "." } else { l };
                let _ = writeln!(s, " {l}");
            }
        }
        s
    }
}

/// A syntax error, with its line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {msg}")]
pub struct SyntaxError {
    pub line: usize,
    pub msg: String,
}

/// Parses every paragraph of `text`.
pub fn parse(text: &str) -> Result<Vec<Paragraph>, SyntaxError> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        if raw.starts_with('#') {
            continue;
        }
        if raw.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if raw.starts_with(' ') || raw.starts_with('\t') {
            let Some((_, v)) = cur.fields.last_mut() else {
                return Err(SyntaxError {
                    line: lineno,
                    msg: "continuation line without a field".into(),
                });
            };
            let cont = &raw[1..];
            v.push('\n');
            v.push_str(if cont.trim() == "." { "" } else { cont });
            continue;
        }
        let Some((k, v)) = raw.split_once(':') else {
            return Err(SyntaxError {
                line: lineno,
                msg: format!("expected `Field: value`, found {raw:?}"),
            });
        };
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(SyntaxError {
                line: lineno,
                msg: format!("bad field name {k:?}"),
            });
        }
        if cur.fields.is_empty() {
            cur.line = lineno;
        }
        cur.fields.push((k.to_string(), v.trim().to_string()));
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Calls `f` with the wanted fields of each paragraph, without building
/// paragraphs: fast enough for a 60 MB `Packages` list. Continuation lines
/// are skipped (none of the fields we read from indices have them).
pub fn scan<const N: usize>(text: &str, wanted: [&str; N], mut f: impl FnMut(&[Option<&str>; N])) {
    let mut vals: [Option<&str>; N] = [None; N];
    let mut any = false;
    for line in text.lines() {
        if line.is_empty() {
            if any {
                f(&vals);
                vals = [None; N];
                any = false;
            }
            continue;
        }
        if line.starts_with([' ', '\t', '#']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':')
            && let Some(i) = wanted.iter().position(|w| w.eq_ignore_ascii_case(k))
        {
            vals[i] = Some(v.trim());
            any = true;
        }
    }
    if any {
        f(&vals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# a comment
Package: apt
Version: 2.6.1
Description: commandline package manager
 This package provides commandline tools.
 .
 Second paragraph.

Package: zlib1g
Version: 1:1.2.13.dfsg-1
";

    #[test]
    fn parses_fields_and_continuations() {
        let p = parse(SAMPLE).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].get("package"), Some("apt"));
        assert_eq!(p[0].line, 2);
        assert_eq!(
            p[0].get("Description"),
            Some(
                "commandline package manager\nThis package provides commandline tools.\n\nSecond paragraph."
            )
        );
        assert_eq!(p[1].get("Version"), Some("1:1.2.13.dfsg-1"));
    }

    #[test]
    fn render_round_trips() {
        let p = parse(SAMPLE).unwrap();
        let text: Vec<String> = p.iter().map(Paragraph::render).collect();
        let again = parse(&text.join("\n")).unwrap();
        assert_eq!(p.len(), again.len());
        for (a, b) in p.iter().zip(&again) {
            assert_eq!(a.fields, b.fields);
        }
    }

    #[test]
    fn rejects_garbage() {
        let e = parse("Package: a\nno colon here\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse(" leading continuation\n").is_err());
    }

    #[test]
    fn scan_reads_wanted_fields() {
        let mut got = Vec::new();
        scan(SAMPLE, ["Package", "Version"], |v| {
            got.push((v[0].unwrap().to_string(), v[1].unwrap().to_string()))
        });
        assert_eq!(
            got[1],
            ("zlib1g".to_string(), "1:1.2.13.dfsg-1".to_string())
        );
    }
}
