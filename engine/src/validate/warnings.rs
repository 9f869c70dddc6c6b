//! Warnings: input that is valid but read differently by other YAML tools.

use serde_json::Value;

use super::field_path;
use crate::diag::Diagnostic;
use crate::load::{Document, escape_segment};

/// Warnings about input that is valid but read differently elsewhere: a plain
/// `On`/`Off`/`yes`/`no`/`y`/`n` where a string is expected is the string fleetform
/// (YAML 1.2) reads, but a boolean to YAML 1.1 readers (PyYAML, go-yaml v2, older
/// Helm and yq) that may process the same files. [`validate`] adds them to its errors;
/// callers show them with a valid fleet too.
pub fn warnings(docs: &[Document]) -> Vec<Diagnostic> {
    fn walk(v: &Value, ptr: &mut String, d: &Document, out: &mut Vec<Diagnostic>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let len = ptr.len();
                    ptr.push('/');
                    ptr.push_str(&escape_segment(k));
                    walk(x, ptr, d, out);
                    ptr.truncate(len);
                }
            }
            Value::Array(a) => {
                for (n, x) in a.iter().enumerate() {
                    let len = ptr.len();
                    ptr.push_str(&format!("/{n}"));
                    walk(x, ptr, d, out);
                    ptr.truncate(len);
                }
            }
            Value::String(s) if d.spans.raw(ptr).is_some() => {
                let mut w = Diagnostic::warning(
                    "yaml11-boolean",
                    format!("`{s}` is read as the string \"{s}\" here, but as a boolean by YAML 1.1 tools"),
                )
                .at(d.spans.span(ptr))
                .hint(format!("quote it: \"{s}\""));
                if !ptr.is_empty() {
                    w = w.field(field_path(ptr));
                }
                out.push(w);
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for d in docs {
        walk(&d.value, &mut String::new(), d, &mut out);
    }
    out
}
