//! The YAML event walk: saphyr-parser's events build each document's JSON value and its
//! span map in one pass, with the limits checked as it goes.

use std::collections::HashMap;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};

use super::spans::{Entry, Pos, SpanMap};
use super::{Document, Limits, at, escape_segment};
use crate::diag::Diagnostic;
use crate::resource::Origin;

enum Frame {
    Seq {
        items: Vec<Value>,
        ptr: String,
        anchor: usize,
        nodes_at_start: usize,
        order_start: usize,
    },
    Map {
        map: Map<String, Value>,
        ptr: String,
        anchor: usize,
        nodes_at_start: usize,
        order_start: usize,
        key: Option<String>,
    },
}

pub(super) struct Builder<'a> {
    file: Arc<str>,
    path: &'a str,
    limits: &'a Limits,
    stack: Vec<Frame>,
    /// Spans in insertion order (an anchored subtree's spans are a slice); becomes the
    /// document's map at its end.
    entries: Vec<(Box<str>, Entry)>,
    anchors: HashMap<usize, Anchored>,
    nodes: usize,
    aliases: usize,
    alias_nodes: usize,
    /// Position of the key whose value is being parsed.
    key_pos: Pos,
    root: Option<Value>,
    docs: Vec<Document>,
    diags: Vec<Diagnostic>,
    doc_index: usize,
    doc_start: Pos,
}

/// Stops the parse of a file.
struct Abort;

/// An anchored node: its value, its node count, its spans, and where it was defined.
type Anchored = (Value, usize, Vec<(Box<str>, Entry)>, String);

impl<'a> Builder<'a> {
    pub(super) fn new(path: &'a str, limits: &'a Limits) -> Self {
        Self {
            file: Arc::from(path),
            path,
            limits,
            stack: Vec::new(),
            entries: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            aliases: 0,
            alias_nodes: 0,
            key_pos: Pos::default(),
            root: None,
            docs: Vec::new(),
            diags: Vec::new(),
            doc_index: 0,
            doc_start: Pos { line: 1, col: 1 },
        }
    }

    pub(super) fn run(mut self, text: &str) -> Result<Vec<Document>, Vec<Diagnostic>> {
        let mut parser = Parser::new_from_str(text);
        while let Some(ev) = parser.next_event() {
            match ev {
                Ok((event, span)) => {
                    let pos = Pos {
                        line: span.start.line() as u32,
                        col: span.start.col() as u32 + 1,
                    };
                    match self.event(event, pos) {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(Abort) => break,
                    }
                }
                Err(e) => {
                    let m = e.marker();
                    self.diags.push(
                        Diagnostic::error(
                            "yaml-syntax",
                            format!("YAML syntax error: {}", e.info()),
                        )
                        .at(at(
                            self.path,
                            m.line() as u32,
                            m.col() as u32 + 1,
                        )),
                    );
                    break;
                }
            }
        }
        if self.diags.is_empty() {
            Ok(self.docs)
        } else {
            Err(self.diags)
        }
    }

    fn fail(&mut self, code: &str, summary: String, pos: Pos, hint: Option<&str>) -> Abort {
        let mut d = Diagnostic::error(code, summary).at(at(self.path, pos.line, pos.col));
        if let Some(h) = hint {
            d = d.hint(h);
        }
        self.diags.push(d);
        Abort
    }

    /// The pointer the next value gets, and the key position for it.
    fn next_ptr(&mut self, pos: Pos) -> (String, Pos) {
        match self.stack.last() {
            None => (String::new(), pos),
            Some(Frame::Seq { items, ptr, .. }) => (format!("{ptr}/{}", items.len()), pos),
            Some(Frame::Map {
                ptr, key: Some(k), ..
            }) => (format!("{ptr}/{}", escape_segment(k)), self.key_pos),
            Some(Frame::Map { ptr, .. }) => (ptr.clone(), pos),
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), Abort> {
        self.nodes += n;
        if self.nodes > self.limits.max_nodes {
            return Err(self.fail(
                "too-many-nodes",
                format!(
                    "{} expands to more than {} nodes",
                    self.path, self.limits.max_nodes
                ),
                pos,
                Some("an alias bomb, or a fleet too big for one file: split it"),
            ));
        }
        Ok(())
    }

    /// Returns Ok(true) at stream end.
    fn event(&mut self, event: Event<'_>, pos: Pos) -> Result<bool, Abort> {
        match event {
            Event::StreamStart | Event::Nothing => {}
            Event::StreamEnd => return Ok(true),
            Event::DocumentStart(_) => {
                self.entries = Vec::new();
                self.anchors.clear();
                self.root = None;
                self.doc_start = pos;
            }
            Event::DocumentEnd => self.finish_document()?,
            Event::Alias(id) => {
                self.aliases += 1;
                if self.aliases > self.limits.max_aliases {
                    return Err(self.fail(
                        "too-many-aliases",
                        format!(
                            "{} uses more than {} aliases",
                            self.path, self.limits.max_aliases
                        ),
                        pos,
                        None,
                    ));
                }
                let Some(n) = self.anchors.get(&id).map(|a| a.1) else {
                    return Err(self.fail(
                        "yaml-syntax",
                        "alias to an unknown anchor".into(),
                        pos,
                        None,
                    ));
                };
                self.alias_nodes = self.alias_nodes.saturating_add(n);
                if self.alias_nodes > self.limits.max_alias_nodes {
                    return Err(self.fail(
                        "alias-expansion",
                        format!(
                            "aliases in {} expand to more than {} nodes",
                            self.path, self.limits.max_alias_nodes
                        ),
                        pos,
                        Some("an alias bomb (\"billion laughs\"): refused; write the values out"),
                    ));
                }
                let Some((value, _, sub, src_ptr)) = self.anchors.get(&id) else {
                    return Ok(false);
                };
                let value = value.clone();
                // Re-root the anchored node's spans under the alias, pointing at the anchor's lines.
                let sub: Vec<(Box<str>, Entry)> =
                    sub.iter().map(|(k, e)| (k.clone(), e.clone())).collect();
                let src_ptr = src_ptr.clone();
                self.count(n, pos)?;
                let (ptr, key) = self.next_ptr(pos);
                for (k, e) in sub {
                    if let Some(rest) = k.strip_prefix(src_ptr.as_str())
                        && rest.starts_with('/')
                    {
                        self.record(format!("{ptr}{rest}"), e);
                    }
                }
                self.record(
                    ptr,
                    Entry {
                        value: pos,
                        key,
                        raw: None,
                    },
                );
                self.push_value(value, pos)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
                    return self.map_key(text.into_owned(), pos).map(|_| false);
                }
                self.count(1, pos)?;
                let forced_str = tag
                    .as_ref()
                    .is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str");
                let (value, raw) = if style == ScalarStyle::Plain && !forced_str {
                    match resolve_plain(&text) {
                        Some(Ok(v)) => (v, Some(Box::<str>::from(text.as_ref()))),
                        Some(Err(())) => {
                            return Err(self.fail(
                                "yaml-number",
                                format!("`{text}` is a number JSON cannot hold"),
                                pos,
                                Some("quote it if it is meant as text"),
                            ));
                        }
                        // A YAML 1.1 boolean (`On`, `yes`, `n`) is a string in YAML 1.2: keep
                        // the text as written so validate can warn about 1.1 readers.
                        None if is_yaml11_bool(&text) => {
                            let raw = Some(Box::<str>::from(text.as_ref()));
                            (Value::String(text.into_owned()), raw)
                        }
                        None => (Value::String(text.into_owned()), None),
                    }
                } else {
                    (Value::String(text.into_owned()), None)
                };
                let (ptr, key) = self.next_ptr(pos);
                if anchor > 0 {
                    let sub = vec![(
                        Box::<str>::from(ptr.as_str()),
                        Entry {
                            value: pos,
                            key: pos,
                            raw: raw.clone(),
                        },
                    )];
                    self.anchors
                        .insert(anchor, (value.clone(), 1, sub, ptr.clone()));
                }
                self.record(
                    ptr,
                    Entry {
                        value: pos,
                        key,
                        raw,
                    },
                );
                self.push_value(value, pos)?;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
                    return Err(self.fail(
                        "yaml-complex-key",
                        "a mapping key must be a plain string, not a list or mapping".into(),
                        pos,
                        None,
                    ));
                }
                if self.stack.len() >= self.limits.max_depth {
                    return Err(self.fail(
                        "too-deep",
                        format!("nesting deeper than {} levels", self.limits.max_depth),
                        pos,
                        None,
                    ));
                }
                self.count(1, pos)?;
                let (ptr, key) = self.next_ptr(pos);
                let order_start = self.entries.len();
                self.record(
                    ptr.clone(),
                    Entry {
                        value: pos,
                        key,
                        raw: None,
                    },
                );
                let nodes_at_start = self.nodes;
                self.stack
                    .push(if matches!(event, Event::SequenceStart(..)) {
                        Frame::Seq {
                            items: Vec::new(),
                            ptr,
                            anchor,
                            nodes_at_start,
                            order_start,
                        }
                    } else {
                        Frame::Map {
                            map: Map::new(),
                            ptr,
                            anchor,
                            nodes_at_start,
                            order_start,
                            key: None,
                        }
                    });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Ok(false);
                };
                let (value, ptr, anchor, start, order_start) = match frame {
                    Frame::Seq {
                        items,
                        ptr,
                        anchor,
                        nodes_at_start,
                        order_start,
                    } => (
                        Value::Array(items),
                        ptr,
                        anchor,
                        nodes_at_start,
                        order_start,
                    ),
                    Frame::Map {
                        map,
                        ptr,
                        anchor,
                        nodes_at_start,
                        order_start,
                        ..
                    } => (Value::Object(map), ptr, anchor, nodes_at_start, order_start),
                };
                if anchor > 0 {
                    let n = self.nodes - start + 1;
                    let sub: Vec<(Box<str>, Entry)> = self.entries[order_start..].to_vec();
                    self.anchors.insert(anchor, (value.clone(), n, sub, ptr));
                }
                self.push_value(value, pos)?;
            }
        }
        Ok(false)
    }

    fn record(&mut self, ptr: String, e: Entry) {
        self.entries.push((ptr.into(), e));
    }

    fn map_key(&mut self, key: String, pos: Pos) -> Result<(), Abort> {
        if key == "<<" {
            return Err(self.fail(
                "yaml-merge-key",
                "merge keys (`<<`) are YAML 1.1 and not supported".into(),
                pos,
                Some("write the fields out, or anchor and alias the whole value"),
            ));
        }
        let Some(Frame::Map {
            map,
            ptr,
            key: slot,
            ..
        }) = self.stack.last_mut()
        else {
            return Ok(());
        };
        if map.contains_key(&key) {
            let first = format!("{ptr}/{}", escape_segment(&key));
            let first_line = self
                .entries
                .iter()
                .rev()
                .find(|(k, _)| **k == *first)
                .map_or(0, |(_, e)| e.key.line);
            return Err(self.fail(
                "duplicate-key",
                format!("duplicate key `{key}` (first at line {first_line})"),
                pos,
                Some("YAML keeps only one of them; remove or merge the other"),
            ));
        }
        *slot = Some(key);
        self.key_pos = pos;
        Ok(())
    }

    fn push_value(&mut self, value: Value, pos: Pos) -> Result<(), Abort> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                let _ = pos;
            }
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, key, .. }) => {
                if let Some(k) = key.take() {
                    map.insert(k, value);
                }
            }
        }
        Ok(())
    }

    fn finish_document(&mut self) -> Result<(), Abort> {
        let index = self.doc_index;
        self.doc_index += 1;
        let entries: HashMap<Box<str>, Entry> =
            std::mem::take(&mut self.entries).into_iter().collect();
        let Some(root) = self.root.take() else {
            return Ok(());
        };
        let start = self.doc_start;
        let obj = match root {
            Value::Null => return Ok(()), // empty document (e.g. a trailing `---`)
            Value::Object(o) => o,
            _ => {
                self.diags.push(
                    Diagnostic::error(
                        "not-a-mapping",
                        format!("document {} is not a mapping", index + 1),
                    )
                    .at(at(self.path, start.line, start.col))
                    .hint("each document is `apiVersion`, `kind`, `metadata`, `spec`"),
                );
                return Ok(());
            }
        };
        let spans = SpanMap {
            file: self.file.clone(),
            entries,
        };
        let kind_ok = obj.get("kind").is_some_and(Value::is_string);
        let api_ok = obj.get("apiVersion").is_some_and(Value::is_string);
        let first = spans
            .span("")
            .map_or((start.line, start.col), |s| (s.line, s.column));
        if !kind_ok || !api_ok {
            let missing = match (api_ok, kind_ok) {
                (false, false) => "`apiVersion` and `kind`",
                (false, true) => "`apiVersion`",
                _ => "`kind`",
            };
            self.diags.push(
                Diagnostic::error("missing-kind", format!("document {} has no {missing} string", index + 1))
                    .at(at(self.path, first.0, first.1))
                    .hint("start each document with `apiVersion: fleetform.dev/v1alpha1` and `kind: Fleet|Rack|Host|Tenant|NodePool|NIMService`"),
            );
            return Ok(());
        }
        let k = spans
            .key_span("/kind")
            .map_or(first, |s| (s.line, s.column));
        self.docs.push(Document {
            file: self.path.to_string(),
            index,
            value: Value::Object(obj),
            spans: Arc::new(spans),
            origin: Origin {
                file: self.path.to_string(),
                line: k.0,
                column: k.1,
            },
        });
        Ok(())
    }
}

/// Plain scalars YAML 1.1 reads as booleans and YAML 1.2 as strings
/// (yaml.org/type/bool.html, YAML 1.1).
pub fn is_yaml11_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// YAML 1.2 core schema for plain scalars: `None` = a string,
/// `Some(Err)` = a number JSON cannot hold (inf/nan).
fn resolve_plain(s: &str) -> Option<Result<Value, ()>> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Ok(Value::Null)),
        "true" | "True" | "TRUE" => return Some(Ok(Value::Bool(true))),
        "false" | "False" | "FALSE" => return Some(Ok(Value::Bool(false))),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Some(Err(())),
        _ => {}
    }
    let b = s.as_bytes();
    let first = *b.first()?;
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return None;
    }
    if let Some(h) = s.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).ok().map(|n| Ok(Value::from(n)));
    }
    if let Some(o) = s.strip_prefix("0o") {
        return u64::from_str_radix(o, 8).ok().map(|n| Ok(Value::from(n)));
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
        if let Ok(n) = s.parse::<i64>() {
            return Some(Ok(Value::from(n)));
        }
        if let Ok(n) = digits.parse::<u64>()
            && !s.starts_with('-')
        {
            return Some(Ok(Value::from(n)));
        }
        return s
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(|n| Ok(Value::Number(n)));
    }
    if is_core_float(digits) {
        return match s.parse::<f64>() {
            Ok(f) if f.is_finite() => Number::from_f64(f).map(|n| Ok(Value::Number(n))),
            _ => Some(Err(())),
        };
    }
    None
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without the sign.
fn is_core_float(s: &str) -> bool {
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let ok_mant = match mant.split_once('.') {
        Some((a, b)) => {
            (a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()))
                && (!a.is_empty() || !b.is_empty())
        }
        None => !mant.is_empty() && mant.bytes().all(|c| c.is_ascii_digit()),
    };
    let ok_exp = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
    });
    ok_mant && ok_exp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::load::{SourceFile, load};

    fn one(src: &str) -> (Vec<Document>, Vec<Diagnostic>) {
        load(&[SourceFile {
            path: "f.yaml".into(),
            bytes: src.as_bytes().to_vec(),
        }])
    }

    #[test]
    fn values_and_spans_come_from_one_pass() {
        let (docs, diags) = one(
            "apiVersion: fleetform.dev/v1alpha1\nkind: Host\nmetadata:\n  name: a\nspec:\n  list:\n    - x: 1.30\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let d = &docs[0];
        assert_eq!(d.origin.line, 2);
        assert_eq!(
            d.value.pointer("/spec/list/0/x"),
            Some(&serde_json::json!(1.3))
        );
        let s = d.spans.span("/spec/list/0/x").unwrap();
        assert_eq!((s.line, s.column), (7, 10));
        assert_eq!(d.spans.key_span("/spec/list/0/x").unwrap().column, 7);
        assert_eq!(d.spans.raw("/spec/list/0/x"), Some("1.30"));
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let (docs, _) = one("apiVersion: v\nkind: Host\na: yes\nb: on\nc: 'true'\nd: true\n");
        let v = &docs[0].value;
        assert_eq!(v["a"], "yes");
        assert_eq!(v["b"], "on");
        assert_eq!(v["c"], "true");
        assert_eq!(v["d"], true);
    }

    #[test]
    fn duplicate_key_names_both_lines() {
        let (_, diags) = one("apiVersion: v\nkind: Host\nkind: Rack\n");
        assert_eq!(diags[0].code, "duplicate-key");
        assert!(diags[0].summary.contains("line 2"), "{}", diags[0].summary);
        assert_eq!(diags[0].span.as_ref().unwrap().line, 3);
    }

    #[test]
    fn multi_document_files_index_documents() {
        let (docs, diags) = one("apiVersion: v\nkind: A\n---\napiVersion: v\nkind: B\n---\n");
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].index, 1);
        assert_eq!(docs[1].origin.line, 5);
    }

    #[test]
    fn alias_spans_point_at_the_anchor() {
        let (docs, diags) = one("apiVersion: v\nkind: A\na: &x {p: 1}\nb: *x\n");
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(docs[0].value["b"]["p"], 1);
        assert_eq!(docs[0].spans.span("/b/p").unwrap().line, 3);
    }
}
