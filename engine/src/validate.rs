//! Validate: JSON Schema, then the typed model, then the rules a schema cannot say.

use crate::diag::Diagnostic;
use crate::load::{Document, SourceFile};
use crate::manifest::Fleet;

/// Validates loaded documents into a [`Fleet`], or returns every problem found, sorted.
pub fn validate(docs: &[Document]) -> Result<Fleet, Vec<Diagnostic>> {
    let _ = docs;
    Err(vec![Diagnostic::error("unimplemented", "validation is not written yet")])
}

/// Renders diagnostics as plain text with a source snippet and a caret.
pub fn render_text(diags: &[Diagnostic], files: &[SourceFile]) -> String {
    let _ = files;
    diags.iter().map(|d| format!("{d}\n")).collect()
}
