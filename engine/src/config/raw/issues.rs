//! Where config problems are collected: each `ConfigIssue` with its file,
//! line and field, from a byte offset in the text; plus the span types the
//! raw values carry and `truncate` for quoting user text back.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use crate::config::ConfigIssue;

/// A byte range in the config text.
pub(in crate::config) type Span = Range<usize>;

/// A value with the span it was read from.
pub(in crate::config) type S<T> = Spanned<T>;

/// Collects issues; turns byte offsets into lines.
pub(in crate::config) struct Issues<'a> {
    file: &'a Path,
    /// Byte offset of the start of every line.
    line_starts: Vec<usize>,
    pub(in crate::config) list: Vec<ConfigIssue>,
}

impl<'a> Issues<'a> {
    pub(in crate::config) fn new(file: &'a Path, text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            line_starts,
            list: Vec::new(),
        }
    }

    /// 1-based line of a byte offset.
    pub(in crate::config) fn line_of(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|start| *start <= offset)
            .max(1)
    }

    /// Records a problem at `span` (its first line).
    pub(in crate::config) fn push(
        &mut self,
        span: Option<Span>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(s.start));
        self.list.push(ConfigIssue {
            file: self.file.to_owned(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Shortens user text quoted back in a message.
pub(in crate::config) fn truncate(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
