//! The span map: where each node of a document is written, by JSON pointer.

use std::collections::HashMap;
use std::sync::Arc;

use crate::diag::Span;

/// A position: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Pos {
    pub(super) line: u32,
    pub(super) col: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Entry {
    pub(super) value: Pos,
    /// The mapping key for this pointer (equal to `value` for sequence items and the root).
    pub(super) key: Pos,
    /// For plain scalars that resolved to a number, bool or null: the text as written.
    pub(super) raw: Option<Box<str>>,
}

/// Where each node of one document is written, by JSON pointer (`""` is the document).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpanMap {
    pub(super) file: Arc<str>,
    pub(super) entries: HashMap<Box<str>, Entry>,
}

impl SpanMap {
    /// The file the document is in.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Where the value at `pointer` starts.
    pub fn span(&self, pointer: &str) -> Option<Span> {
        self.entries.get(pointer).map(|e| self.mk(e.value))
    }

    /// Where the key of the mapping entry at `pointer` is (the value for sequence items).
    pub fn key_span(&self, pointer: &str) -> Option<Span> {
        self.entries.get(pointer).map(|e| self.mk(e.key))
    }

    /// The key span of `pointer`, else of its closest ancestor that is written down.
    pub fn nearest(&self, pointer: &str) -> Option<Span> {
        let mut p = pointer;
        loop {
            if let Some(e) = self.entries.get(p) {
                return Some(self.mk(e.key));
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }

    /// The text of a plain scalar that YAML read as a number, boolean or null
    /// (e.g. `1.30` read as 1.3), or of a plain YAML 1.1 boolean (`On`, `no`) that
    /// YAML 1.2 reads as a string, for hints.
    pub fn raw(&self, pointer: &str) -> Option<&str> {
        self.entries.get(pointer).and_then(|e| e.raw.as_deref())
    }

    /// Number of nodes recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn mk(&self, p: Pos) -> Span {
        Span {
            file: self.file.to_string(),
            line: p.line,
            column: p.col,
        }
    }
}
