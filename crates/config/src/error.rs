//! What went wrong in a config, said so that a person can fix it without reading the code.
//!
//! Every check produces a [`Problem`] that names the file, the line and column, the key path
//! (`forward[0].to`), what is wrong, and what to write instead. Loading collects every problem
//! before giving up, so one `pinhole check` run shows the whole list.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One mistake (or, in [`crate::Loaded::warnings`], one risk) found in a config file.
///
/// It carries its position and a concrete fix because "invalid config" alone makes people guess,
/// and guessing at a tunnel's config is how services end up exposed by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file (or key file) the problem is in, as it was given to us.
    pub file: PathBuf,
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// Where in the config the problem is, e.g. `forward[0].to` or `peer[1].allowed_ips`;
    /// empty for TOML syntax errors, which have no key yet.
    pub key: String,
    /// What is wrong, short and lowercase.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for Problem {
    /// `relay.toml:12:7: forward[0].to: <message>; fix: <fix>`: the `file:line:col:` prefix
    /// is what editors and terminals turn into a link.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Why a config could not be loaded.
///
/// Two cases only, because the caller treats them differently: the file could not be read at
/// all (say so and stop), or it was read and is wrong (print every problem).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file itself could not be read.
    #[error("cannot read config file {}", path.display())]
    Io {
        /// The file we tried to read.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// The file was read but has at least one problem; all of them are listed.
    #[error("{}", ProblemList(.0))]
    Invalid(Vec<Problem>),
}

/// Renders problems one per line (used by [`ConfigError::Invalid`]'s `Display`).
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A byte range in the config text.
pub(crate) type Span = Range<usize>;

/// Collects problems while the config is checked, turning byte spans into line:column once.
pub(crate) struct Report<'t> {
    file: PathBuf,
    text: &'t str,
    line_starts: Vec<usize>,
    pub(crate) errors: Vec<Problem>,
    pub(crate) warnings: Vec<Problem>,
}

impl<'t> Report<'t> {
    /// Starts an empty report for `text`, which came from `file`.
    pub(crate) fn new(file: &Path, text: &'t str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Report {
            file: file.to_path_buf(),
            text,
            line_starts,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records an error at `span`.
    pub(crate) fn error(
        &mut self,
        span: &Span,
        key: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let p = self.problem(span, key, message.into(), fix.into());
        self.errors.push(p);
    }

    /// Records a warning at `span`: loading still succeeds.
    pub(crate) fn warn(
        &mut self,
        span: &Span,
        key: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let p = self.problem(span, key, message.into(), fix.into());
        self.warnings.push(p);
    }

    fn problem(&self, span: &Span, key: &str, message: String, fix: String) -> Problem {
        let (line, column) = self.line_col(span.start);
        Problem {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            message,
            fix,
        }
    }

    /// 1-based line and character column of byte `offset`; never panics, whatever the offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_index = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self
            .line_starts
            .get(line_index)
            .copied()
            .unwrap_or(0)
            .min(offset);
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line_index + 1, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_maps_offsets() {
        let r = Report::new(Path::new("a.toml"), "ab\ncé d\n");
        assert_eq!(r.line_col(0), (1, 1));
        assert_eq!(r.line_col(2), (1, 3));
        assert_eq!(r.line_col(3), (2, 1));
        // 'é' is two bytes: "d" is the 4th character on line 2.
        assert_eq!(r.line_col(7), (2, 4));
        // Inside a multi-byte character and past the end: no panic.
        assert_eq!(r.line_col(5), (2, 2));
        assert_eq!(r.line_col(1000), (3, 1));
    }

    #[test]
    fn problem_display() {
        let p = Problem {
            file: PathBuf::from("relay.toml"),
            line: 12,
            column: 7,
            key: "forward[0].to".into(),
            message: "bad".into(),
            fix: "good".into(),
        };
        assert_eq!(
            p.to_string(),
            "relay.toml:12:7: forward[0].to: bad; fix: good"
        );
        let e = ConfigError::Invalid(vec![p.clone(), p]);
        assert_eq!(e.to_string().lines().count(), 2);
    }
}
