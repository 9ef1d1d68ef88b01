//! Errors that point into the files a user wrote.
//!
//! Cedar reports problems as `miette` diagnostics with byte offsets; users need
//! `file:line:column`, the message, and a help line. This module does that conversion once,
//! for parse, schema, validation and entity errors alike.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a policy directory, located as precisely as the source allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// The file, relative to the policy directory when it is inside it.
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a location.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub help: Option<String>,
}

impl SourceError {
    pub fn in_file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn at_offset(mut self, src: &str, offset: usize) -> Self {
        let (line, column) = line_col(src, offset);
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// Converts a Cedar diagnostic (whose labels are offsets into `src`).
    pub fn from_diagnostic(file: &Path, src: &str, diag: &dyn miette::Diagnostic) -> Self {
        let mut message = diag.to_string();
        // Cedar nests the useful detail in `related` or `source` for some errors.
        let mut cause = std::error::Error::source(diag);
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            cause = c.source();
        }
        let mut err = Self::in_file(file, message);
        if let Some(offset) = diag
            .labels()
            .and_then(|mut labels| labels.next())
            .map(|l| l.offset())
        {
            err = err.at_offset(src, offset);
        }
        if let Some(help) = diag.help() {
            err = err.with_help(help.to_string());
        }
        err
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": error: {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Errors found while loading a policy directory; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<SourceError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let mut end = offset;
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = &src[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "ab\ncdé\nf";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 3), (2, 1));
        assert_eq!(line_col(src, 7), (2, 4));
        assert_eq!(line_col(src, 100), (3, 2));
    }
}
