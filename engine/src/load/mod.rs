//! Load: takes YAML files (from a directory or git), gives JSON values with a span for
//! every node; hostile input is refused.
//!
//! One pass over saphyr-parser's events builds each document's `serde_json::Value`
//! and a [`SpanMap`] (JSON pointer → line/column of the key and of the value).
//! Scalars resolve by the YAML 1.2 core schema (`yes`/`on` stay strings; `1.30`
//! is a number, which `validate` explains where a string was expected).
//!
//! Limits ([`Limits`]) are checked while parsing, so an alias bomb, a deep
//! nesting or a huge file fails in bounded time and memory with a located error.
//!
//! Files: dir.rs reads a fleet directory, parse.rs is the span-keeping YAML event walk (one
//! state machine), spans.rs the span map it fills.

use std::sync::Arc;

use serde_json::Value;

use crate::diag::{Diagnostic, Span};
use crate::resource::Origin;

mod dir;
mod parse;
mod spans;

pub use dir::{read_dir, read_dir_with};
pub use parse::is_yaml11_bool;
pub use spans::SpanMap;

use dir::too_large;
use parse::Builder;

/// One manifest file as read from disk or git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the fleet directory, `/`-separated.
    pub path: String,
    /// Raw contents.
    pub bytes: Vec<u8>,
}

/// Bounds on what the loader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file, in bytes, checked before parsing.
    pub max_file_bytes: usize,
    /// Deepest nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most nodes one file may produce, counting every alias expansion.
    pub max_nodes: usize,
    /// Most alias uses in one file.
    pub max_aliases: usize,
    /// Most nodes all alias expansions of one file may add (alias bombs).
    pub max_alias_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 16 << 20,
            max_depth: 128,
            max_nodes: 4_000_000,
            max_aliases: 10_000,
            max_alias_nodes: 100_000,
        }
    }
}

/// One YAML document of a fleet.
#[derive(Debug, Clone)]
pub struct Document {
    /// File path relative to the fleet directory.
    pub file: String,
    /// 0-based index of the document in its file.
    pub index: usize,
    /// The document as JSON.
    pub value: Value,
    /// Spans of every node.
    pub spans: Arc<SpanMap>,
    /// The document's `kind:` line.
    pub origin: Origin,
}

impl Document {
    /// `kind`, when it is a string.
    pub fn kind(&self) -> Option<&str> {
        self.value.get("kind").and_then(Value::as_str)
    }

    /// `metadata.name`, when it is a string.
    pub fn name(&self) -> Option<&str> {
        self.value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn escape_segment(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['~', '/']) {
        std::borrow::Cow::Owned(s.replace('~', "~0").replace('/', "~1"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Parses every file into documents. Files with any error contribute no documents;
/// every problem found is returned (not only the first).
pub fn load(files: &[SourceFile]) -> (Vec<Document>, Vec<Diagnostic>) {
    load_with(files, &Limits::default())
}

/// [`load`] with explicit limits.
pub fn load_with(files: &[SourceFile], limits: &Limits) -> (Vec<Document>, Vec<Diagnostic>) {
    // Files are independent: parse them on every core, keep file order.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    let results: Vec<Result<Vec<Document>, Vec<Diagnostic>>> = if threads <= 1 || files.len() < 4 {
        files.iter().map(|f| load_file(f, limits)).collect()
    } else {
        let chunk = files.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|c| {
                    s.spawn(move || c.iter().map(|f| load_file(f, limits)).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(r) => r,
                    Err(_) => vec![Err(vec![Diagnostic::error(
                        "internal",
                        "a loader thread panicked",
                    )])],
                })
                .collect()
        })
    };
    let mut docs = Vec::new();
    let mut diags = Vec::new();
    for r in results {
        match r {
            Ok(mut d) => docs.append(&mut d),
            Err(mut e) => diags.append(&mut e),
        }
    }
    crate::diag::sort(&mut diags);
    (docs, diags)
}

fn at(file: &str, line: u32, col: u32) -> Option<Span> {
    Some(Span {
        file: file.to_string(),
        line,
        column: col,
    })
}

fn load_file(f: &SourceFile, limits: &Limits) -> Result<Vec<Document>, Vec<Diagnostic>> {
    if f.bytes.len() > limits.max_file_bytes {
        return Err(vec![too_large(&f.path, f.bytes.len() as u64, limits)]);
    }
    let text = match std::str::from_utf8(&f.bytes) {
        Ok(t) => t,
        Err(e) => {
            let off = e.valid_up_to();
            let before = &f.bytes[..off];
            let line = before.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
            let col = (off
                - before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1)) as u32
                + 1;
            return Err(vec![
                Diagnostic::error(
                    "not-utf8",
                    format!("{} is not UTF-8: invalid byte at offset {off}", f.path),
                )
                .at(at(&f.path, line, col))
                .hint("save the file as UTF-8"),
            ]);
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Builder::new(&f.path, limits).run(text)
}
