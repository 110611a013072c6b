//! `-o yaml`: a small YAML emitter for JSON values, in block style.
//!
//! Maps become `key: value` lines, sequences `- item` lines, nested two spaces deeper; empty
//! ones are `{}` and `[]`. A string is written plain when a YAML reader would read it back as
//! that same string, and double-quoted (with JSON's escapes, which YAML shares) otherwise:
//! empty, spaces at either end, indicators, `: ` or ` #` inside, line breaks and other control
//! characters, and anything that reads as a number, a boolean or null in YAML 1.1 or 1.2
//! (`12`, `1_000`, `0x1f`, `.inf`, `yes`, `off`, `~`, `2025-01-01`).

use serde_json::{Map, Value};

/// `value` as a YAML document (no `---`), ending with a line break.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    if is_block(value) {
        block(&mut out, value, 0, false);
    } else {
        out.push_str(&inline(value));
        out.push('\n');
    }
    out
}

/// A non-empty map or sequence: written over lines of its own.
fn is_block(value: &Value) -> bool {
    match value {
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => false,
    }
}

/// A value that fits on the line it starts: a scalar, `[]` or `{}`.
fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Writes a non-empty map or sequence at `indent`; with `continues`, its first line goes on
/// the line already started (after a sequence's `- `).
fn block(out: &mut String, value: &Value, indent: usize, mut continues: bool) {
    let mut start_line = |out: &mut String| {
        if continues {
            continues = false;
        } else {
            out.push_str(&" ".repeat(indent));
        }
    };
    match value {
        Value::Array(items) => {
            for item in items {
                start_line(out);
                out.push_str("- ");
                if is_block(item) {
                    block(out, item, indent + 2, true);
                } else {
                    out.push_str(&inline(item));
                    out.push('\n');
                }
            }
        }
        Value::Object(map) => map_entries(out, map, indent, &mut start_line),
        _ => {
            start_line(out);
            out.push_str(&inline(value));
            out.push('\n');
        }
    }
}

fn map_entries(
    out: &mut String,
    map: &Map<String, Value>,
    indent: usize,
    start_line: &mut impl FnMut(&mut String),
) {
    for (key, value) in map {
        start_line(out);
        out.push_str(&string(key));
        out.push(':');
        if is_block(value) {
            out.push('\n');
            block(out, value, indent + 2, false);
        } else {
            out.push(' ');
            out.push_str(&inline(value));
            out.push('\n');
        }
    }
}

/// A string as a scalar: plain when that reads back as the same string, else double-quoted.
pub fn string(s: &str) -> String {
    if needs_quotes(s) {
        quoted(s)
    } else {
        s.to_string()
    }
}

/// Line breaks YAML knows besides `\n` and `\r`, and the byte order mark.
fn is_special(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
}

fn needs_quotes(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    first.is_whitespace()
        || s.ends_with(char::is_whitespace)
        // Indicators that start something other than a plain scalar.
        || "-?:,[]{}#&*!|>'\"%@`".contains(first)
        || s.chars().any(|c| c.is_control() || is_special(c))
        || s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
        || reads_as_other_than_string(s)
}

/// Whether a YAML 1.1 or 1.2 reader would take the plain text as null, a boolean, a number or
/// a timestamp.
fn reads_as_other_than_string(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "~" | "null"
            | "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | "<<"
            | "="
            | ".inf"
            | "+.inf"
            | "-.inf"
            | ".nan"
    ) {
        return true;
    }
    let unsigned = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
    let Some(first) = unsigned.chars().next() else {
        return false;
    };
    if !(first.is_ascii_digit() || first == '.') {
        return false;
    }
    // 0x1f, 0o17, 0b101 (and YAML 1.1's underscores in them).
    for prefix in ["0x", "0o", "0b"] {
        if let Some(digits) = unsigned.strip_prefix(prefix) {
            let radix = match prefix {
                "0x" => 16,
                "0o" => 8,
                _ => 2,
            };
            if !digits.is_empty() && digits.chars().all(|c| c == '_' || c.is_digit(radix)) {
                return true;
            }
        }
    }
    // Decimal integers and floats, YAML 1.1's underscores allowed: 12, 1_000, 1.5, 1e3, .5.
    let plain: String = unsigned.chars().filter(|&c| c != '_').collect();
    if plain
        .chars()
        .all(|c| c.is_ascii_digit() || ".e+-".contains(c))
        && plain.chars().any(|c| c.is_ascii_digit())
        && plain.parse::<f64>().is_ok()
    {
        return true;
    }
    // YAML 1.1's base 60: 1:20, 190:20:30.15.
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if whole.contains(':')
        && whole
            .split(':')
            .all(|part| !part.is_empty() && part.chars().all(|c| c == '_' || c.is_ascii_digit()))
        && fraction.chars().all(|c| c == '_' || c.is_ascii_digit())
    {
        return true;
    }
    // Timestamps: 2025-01-01, 2025-01-01T12:00:00Z.
    let bytes = s.as_bytes();
    bytes.len() >= 8
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5].is_ascii_digit()
}

/// Double-quoted, with the escapes JSON and YAML share.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_special(c) => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scalars() {
        assert_eq!(to_string(&json!(null)), "null\n");
        assert_eq!(to_string(&json!(true)), "true\n");
        assert_eq!(to_string(&json!(42)), "42\n");
        assert_eq!(to_string(&json!(-1.5)), "-1.5\n");
        assert_eq!(to_string(&json!("lab")), "lab\n");
        assert_eq!(to_string(&json!([])), "[]\n");
        assert_eq!(to_string(&json!({})), "{}\n");
    }

    #[test]
    fn maps_and_sequences_nest_two_spaces_deeper() {
        let value = json!({
            "cluster": "lab",
            "voters": ["a", "b"],
            "learners": [],
            "labels": {},
            "leader": null,
            "quorum": true,
            "revision": 17,
            "node": {"id": "n1", "labels": {"rack": "r1"}, "tags": ["x"]},
        });
        assert_eq!(
            to_string(&value),
            "\
cluster: lab
labels: {}
leader: null
learners: []
node:
  id: n1
  labels:
    rack: r1
  tags:
    - x
quorum: true
revision: 17
voters:
  - a
  - b
"
        );
    }

    #[test]
    fn sequence_items_start_on_the_dash_line() {
        let value = json!([
            {"id": "a", "labels": {"k": "v"}},
            {"id": "b", "labels": {}},
            [1, [2, 3]],
            [],
            "text",
        ]);
        assert_eq!(
            to_string(&value),
            "\
- id: a
  labels:
    k: v
- id: b
  labels: {}
- - 1
  - - 2
    - 3
- []
- text
"
        );
    }

    #[test]
    fn strings_that_would_read_as_something_else_are_quoted() {
        let quoted_ones = [
            "",
            " lead",
            "trail ",
            "true",
            "False",
            "yes",
            "NO",
            "on",
            "Off",
            "y",
            "n",
            "null",
            "Null",
            "~",
            "12",
            "-3",
            "+7",
            "1.5",
            ".5",
            "1e3",
            "1_000",
            "0x1F",
            "0o17",
            "0b101",
            ".inf",
            "-.Inf",
            ".NaN",
            "1:20",
            "190:20:30.15",
            "2025-01-01",
            "2025-01-01T12:00:00Z",
            "0000000000000123",
            "- item",
            "-",
            "?",
            "key: value",
            "a #comment",
            "ends:",
            "[list]",
            "{map}",
            "[::1]:7443",
            "#hash",
            "&anchor",
            "*alias",
            "!tag",
            "|",
            ">",
            "'single'",
            "\"double\"",
            "%directive",
            "@at",
            "`tick",
            ",comma",
            "two\nlines",
            "tab\there",
            "nul\0",
            "line\u{2028}separator",
            "<<",
        ];
        for s in quoted_ones {
            let out = string(s);
            assert!(out.starts_with('"') && out.ends_with('"'), "{s:?} -> {out}");
            // What is inside is the string, with JSON's escapes.
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn ordinary_strings_stay_plain() {
        for s in [
            "lab",
            "node-1",
            "10.0.0.5:7443",
            "0a1b2c3d4e5f6789",
            "ed25519:00ff",
            "a:b",
            "a#b",
            "hello world",
            "v0.1.0",
            "1.2.3",
            "n1",
            "yes please",
            "inf",
            "x-y",
            "über",
            "a, b",
            "leader",
        ] {
            assert_eq!(string(s), s, "{s:?}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(string("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(string("\u{1b}[0m"), r#""\u001b[0m""#);
        assert_eq!(string("\u{feff}x"), r#""\ufeffx""#);
        assert_eq!(
            to_string(&json!({"": "", "a b": " "})),
            "\"\": \"\"\na b: \" \"\n"
        );
    }
}
