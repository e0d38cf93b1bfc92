//! Reading the keys of one TOML table: unknown keys reported (with where they belong or a near
//! name), then each known key read as the TOML type we expect, a wrong type reported with an
//! example of the right one.

use toml_edit::{Item, TableLike, Value};

use crate::error::{Report, Span};
use crate::raw::{Field, RawDuration, Sp};
use crate::schema::suggest;

/// The keys of one table, after unknown ones were reported.
pub(crate) struct Fields<'a> {
    table: &'a dyn TableLike,
    path: String,
    allowed: &'a [&'a str],
    fallback: Span,
}

impl<'a> Fields<'a> {
    /// Reports every key not in `allowed`; `misplaced` says where keys that belong to another
    /// table go, instead of guessing a near name.
    pub(crate) fn new(
        table: &'a dyn TableLike,
        path: &str,
        shown: &str,
        allowed: &'a [&'a str],
        misplaced: &[(&str, &str)],
        fallback: &Span,
        report: &mut Report<'_>,
    ) -> Self {
        for (name, _) in table.iter() {
            if allowed.contains(&name) {
                continue;
            }
            let span = span_of(table.key(name).and_then(|k| k.span()), fallback);
            let hint = match misplaced.iter().find(|(k, _)| *k == name) {
                Some((_, place)) => format!("{place}; "),
                None => suggest(name, allowed)
                    .map_or(String::new(), |s| format!("did you mean `{s}`? ")),
            };
            report.error(
                &span,
                &format!("{path}.{name}"),
                format!("unknown key `{name}` in {shown}"),
                format!("{hint}valid keys in {shown} are: {}", allowed.join(", ")),
            );
        }
        Fields {
            table,
            path: path.to_string(),
            allowed,
            fallback: fallback.clone(),
        }
    }

    /// The item at `key` and its span. A key not allowed here (one of the other kind of
    /// service) was reported as unknown, so it reads as absent.
    fn value(&self, key: &str) -> Option<(&'a Item, Span)> {
        if !self.allowed.contains(&key) {
            return None;
        }
        let item = self.table.get(key)?;
        let key_span = span_of(self.table.key(key).and_then(|k| k.span()), &self.fallback);
        Some((item, span_of(item.span(), &key_span)))
    }

    /// `key` converted by `convert`; when it gives `None` the value has the wrong TOML type,
    /// reported as "expected `want`" with `key = example` as the fix.
    fn typed<T>(
        &self,
        key: &str,
        report: &mut Report<'_>,
        want: &str,
        example: &str,
        convert: impl FnOnce(&Value, &Span) -> Option<T>,
    ) -> Field<T> {
        let Some((item, span)) = self.value(key) else {
            return Field::Missing;
        };
        match item.as_value().and_then(|v| convert(v, &span)) {
            Some(value) => Field::Ok(Sp { value, span }),
            None => {
                report.error(
                    &span,
                    &format!("{}.{key}", self.path),
                    format!("expected {want}, found {}", item_kind(item)),
                    format!("write {key} = {example}"),
                );
                Field::Bad
            }
        }
    }

    pub(crate) fn string(&self, key: &str, report: &mut Report<'_>) -> Field<String> {
        self.typed(
            key,
            report,
            "a string",
            "\"...\" (in double quotes)",
            |v, _| v.as_str().map(str::to_string),
        )
    }

    pub(crate) fn integer(&self, key: &str, report: &mut Report<'_>) -> Field<i64> {
        self.typed(
            key,
            report,
            "an integer",
            "a number without quotes",
            |v, _| v.as_integer(),
        )
    }

    pub(crate) fn boolean(&self, key: &str, report: &mut Report<'_>) -> Field<bool> {
        self.typed(
            key,
            report,
            "a boolean",
            "true or false (without quotes)",
            |v, _| v.as_bool(),
        )
    }

    pub(crate) fn duration(&self, key: &str, report: &mut Report<'_>) -> Field<RawDuration> {
        self.typed(
            key,
            report,
            "a duration",
            "\"10s\" (or \"500ms\", \"5m\", \"1h\")",
            |v, _| match v {
                Value::Integer(n) => Some(RawDuration::Secs(*n.value())),
                Value::String(s) => Some(RawDuration::Text(s.value().clone())),
                _ => None,
            },
        )
    }

    /// An array of strings; a single string is taken as a one-element list.
    pub(crate) fn string_list(&self, key: &str, report: &mut Report<'_>) -> Field<Vec<Sp<String>>> {
        if let Some((Item::Value(Value::Array(arr)), span)) = self.value(key) {
            return self.strings(arr, span, key, report);
        }
        self.typed(
            key,
            report,
            "an array of strings",
            "[\"...\", \"...\"]",
            |v, span| {
                v.as_str().map(|s| {
                    vec![Sp {
                        value: s.to_string(),
                        span: span.clone(),
                    }]
                })
            },
        )
    }

    /// The entries of an array that must hold only strings; each other entry is reported.
    fn strings(
        &self,
        arr: &toml_edit::Array,
        span: Span,
        key: &str,
        report: &mut Report<'_>,
    ) -> Field<Vec<Sp<String>>> {
        let mut out = Vec::new();
        let mut bad = false;
        for v in arr.iter() {
            let vspan = span_of(v.span(), &span);
            match v {
                Value::String(s) => out.push(Sp {
                    value: s.value().clone(),
                    span: vspan,
                }),
                _ => {
                    bad = true;
                    report.error(
                        &vspan,
                        &format!("{}.{key}", self.path),
                        format!("expected a string, found {}", value_kind(v)),
                        format!(
                            "write {key} = [\"...\", \"...\"] with each entry in double quotes"
                        ),
                    );
                }
            }
        }
        if bad {
            Field::Bad
        } else {
            Field::Ok(Sp { value: out, span })
        }
    }
}

/// `span`, or `fallback` where the parser kept none.
pub(crate) fn span_of(span: Option<Span>, fallback: &Span) -> Span {
    span.unwrap_or_else(|| fallback.clone())
}

/// "a table", "an integer"…: what was found, for messages.
pub(crate) fn item_kind(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => value_kind(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

/// What a value is, for messages.
pub(crate) fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}
