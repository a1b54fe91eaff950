//! A YAML value tree that remembers the line of every node.
//!
//! The block-device config is dynamic (a module key decides what the map under
//! it means, and modules nest), so we read it into this generic tree first and
//! interpret it afterwards. Each value keeps its line so that errors can point
//! at the config, and each scalar keeps its source text: DIB reads its YAML with
//! PyYAML, where `type: 0x83` and `type: 8300` are read back as text by the
//! plugins, so we must see what was written, not what a YAML 1.2 resolver
//! made of it.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One YAML value with the line it starts on (1-based; 0 when unknown).
#[derive(Clone, Debug, PartialEq)]
pub struct YNode {
    pub value: YValue,
    pub line: u32,
}

/// The shapes a YAML value can take.
#[derive(Clone, Debug, PartialEq)]
pub enum YValue {
    Null,
    /// A scalar as text. Booleans and numbers are kept as they were written.
    Scalar(String),
    Seq(Vec<YNode>),
    /// Keys in document order.
    Map(Vec<(String, YNode)>),
}

impl YNode {
    /// The scalar's text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            YValue::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// A short description of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            YValue::Null => "nothing",
            YValue::Scalar(_) => "a scalar",
            YValue::Seq(_) => "a list",
            YValue::Map(_) => "a map",
        }
    }
}

/// Parses YAML text into a located value tree. On a syntax error, returns
/// the message and the line (when known).
pub fn parse(text: &str) -> Result<YNode, (String, u32)> {
    let spanned: Spanned<RawValue> = serde_saphyr::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line() as u32).unwrap_or(0);
        (first_line(&e.to_string()), line)
    })?;
    Ok(resolve(spanned, text))
}

/// The deserializer's error rendering includes a snippet; keep the headline.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

/// What the deserializer gives us before we recover the scalars' source text.
#[derive(Debug)]
enum RawValue {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Seq(Vec<Spanned<RawValue>>),
    /// Key text, key line, value.
    Map(Vec<(String, u32, Spanned<RawValue>)>),
}

fn resolve(node: Spanned<RawValue>, text: &str) -> YNode {
    let line = node.referenced.line() as u32;
    let value = match node.value {
        RawValue::Null => YValue::Null,
        RawValue::Str(s) => YValue::Scalar(s),
        RawValue::Bool(b) => YValue::Scalar(source_text(&node.referenced, text, b.to_string())),
        RawValue::Number(n) => YValue::Scalar(source_text(&node.referenced, text, n)),
        RawValue::Seq(items) => YValue::Seq(items.into_iter().map(|i| resolve(i, text)).collect()),
        // A map value is placed at its key's line: for `mkfs:` followed by
        // an indented block, errors should point at `mkfs:`.
        RawValue::Map(entries) => YValue::Map(
            entries
                .into_iter()
                .map(|(k, key_line, v)| {
                    let mut node = resolve(v, text);
                    if key_line > 0 {
                        node.line = key_line;
                    }
                    (k, node)
                })
                .collect(),
        ),
    };
    YNode { value, line }
}

/// The text a plain scalar was written as (`0x83` rather than `131`), or the
/// fallback when the span is unusable.
fn source_text(loc: &serde_saphyr::Location, text: &str, fallback: String) -> String {
    let span = loc.span();
    let (Some(off), Some(len)) = (span.byte_offset(), span.byte_len()) else {
        return fallback;
    };
    let (off, len) = (off as usize, len as usize);
    match text.get(off..off.saturating_add(len)) {
        Some(s) if !s.trim().is_empty() && !s.contains('\n') => s.trim().to_string(),
        _ => fallback,
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_none<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        RawValue::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Number(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
        Ok(RawValue::Number(v.to_string()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<RawValue, E> {
        Ok(RawValue::Number(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<RawValue, E> {
        Ok(RawValue::Number(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Number(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries: Vec<(String, u32, Spanned<RawValue>)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let value = map.next_value::<Spanned<RawValue>>()?;
            let name = key.value.0;
            if entries.iter().any(|(k, _, _)| *k == name) {
                return Err(de::Error::custom(format!("duplicate key `{name}`")));
            }
            entries.push((name, key.referenced.line() as u32, value));
        }
        Ok(RawValue::Map(entries))
    }
}

/// A map key as text, whatever scalar type it was written as.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawValue::deserialize(d)? {
            RawValue::Str(s) | RawValue::Number(s) => Ok(KeyText(s)),
            RawValue::Bool(b) => Ok(KeyText(b.to_string())),
            RawValue::Null => Ok(KeyText("null".into())),
            _ => Err(de::Error::custom("a map key must be a scalar")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: &YNode) -> &Vec<(String, YNode)> {
        match &n.value {
            YValue::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn keeps_lines_and_source_text() {
        let y =
            parse("- a:\n    type: 0x83\n    size: 100%\n    n: 8300\n    q: 'EF00'\n").unwrap();
        let YValue::Seq(items) = &y.value else {
            panic!()
        };
        let inner = &map(&items[0])[0].1;
        assert_eq!(inner.line, 1);
        let m = map(inner);
        assert_eq!(m[0].1.as_str(), Some("0x83"));
        assert_eq!(m[0].1.line, 2);
        assert_eq!(m[1].1.as_str(), Some("100%"));
        assert_eq!(m[1].1.line, 3);
        assert_eq!(m[2].1.as_str(), Some("8300"));
        assert_eq!(m[3].1.as_str(), Some("EF00"));
    }

    #[test]
    fn syntax_error_has_line() {
        let (msg, line) = parse("- a:\n  b: [1, 2\n").unwrap_err();
        assert!(!msg.is_empty());
        assert!(line >= 2, "{line}");
    }

    #[test]
    fn duplicate_keys_rejected() {
        assert!(parse("a: 1\na: 2\n").is_err());
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("").unwrap().value, YValue::Null);
    }
}
