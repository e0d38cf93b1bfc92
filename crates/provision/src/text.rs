//! Small text helpers shared by the generators: TOML quoting, one-line TOML values, names.

use std::fmt::Write as _;

use toml_edit::Value;

/// `s` as a TOML basic string, quotes included.
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of strings on one line: `["a", "b"]`.
pub(crate) fn toml_str_array<T: ToString>(items: &[T]) -> String {
    let inner: Vec<String> = items.iter().map(|i| toml_str(&i.to_string())).collect();
    format!("[{}]", inner.join(", "))
}

/// A TOML value written on one line, without its comments or layout, so it can sit inside a
/// `#` comment (a newline there would end the comment and break stock parsers).
pub(crate) fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => toml_str(s.value()),
        Value::Integer(i) => i.value().to_string(),
        Value::Float(f) => f.value().to_string(),
        Value::Boolean(b) => b.value().to_string(),
        Value::Datetime(d) => d.value().to_string(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(compact).collect();
            format!("[{}]", items.join(", "))
        }
        Value::InlineTable(t) => format!("{{ {} }}", compact_pairs(t.iter())),
    }
}

/// `k = v, k = v` for the key-values of a table, each value [`compact`].
pub(crate) fn compact_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a Value)>) -> String {
    let items: Vec<String> = pairs
        .map(|(k, v)| format!("{} = {}", toml_key(k), compact(v)))
        .collect();
    items.join(", ")
}

/// A key, bare when it can be, quoted otherwise.
pub(crate) fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        toml_str(k)
    }
}

/// True for a valid peer/forward name: 1 to 32 letters, digits, `.`, `_` or `-`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_compacts() {
        assert_eq!(toml_str("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        let doc: toml_edit::DocumentMut = "x = [ \"a\", # note\n  2,\n  { k = true } ]\n"
            .parse()
            .unwrap();
        let v = doc["x"].as_value().unwrap();
        assert_eq!(compact(v), r#"["a", 2, { k = true }]"#);
        assert_eq!(toml_key("a b"), "\"a b\"");
        assert!(is_valid_name("phone-1.x_y") && !is_valid_name("") && !is_valid_name("a b"));
    }
}
