//! Diagnostics: located, accumulated problems with the input, rendered at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The fleet is invalid.
    Error,
    /// Suspicious but allowed.
    Warning,
}

/// A location in a manifest file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Span {
    /// File path relative to the fleet directory.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem found in the input. Validation collects all of them before failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable, greppable code, e.g. `schema`, `unknown-reference`, `mig-layout`.
    pub code: String,
    /// One line saying what is wrong.
    pub summary: String,
    /// Where, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<Span>,
    /// The field path inside the document, e.g. `spec.pools[0].hosts[2]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// How to fix it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The value at the span is a secret: renderers show the source line with the
    /// value masked (the caret and location stay).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

impl Diagnostic {
    /// An error with a code and summary.
    pub fn error(code: &str, summary: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code: code.into(),
            summary: summary.into(),
            span: None,
            field: None,
            hint: None,
            secret: false,
        }
    }

    /// A warning with a code and summary.
    pub fn warning(code: &str, summary: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, summary)
        }
    }

    /// Marks the value at the span as a secret, so no rendering prints it.
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Sets the location.
    pub fn at(mut self, span: Option<Span>) -> Self {
        self.span = span;
        self
    }

    /// Sets the field path.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Sets the fix.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sort key: file, line, column, then code, so output is stable.
    pub fn sort_key(&self) -> (Option<&Span>, &str, &str) {
        (self.span.as_ref(), &self.code, &self.summary)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if let Some(span) = &self.span {
            write!(f, "{span}: ")?;
        }
        write!(f, "{sev}[{}]: {}", self.code, self.summary)?;
        if let Some(field) = &self.field {
            write!(f, " (field {field})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Sorts diagnostics by file and line, and drops exact duplicates.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    diags.dedup();
}
