//! The JSON Schema pass: every document against schemas/fleet.v1alpha1.json, each error
//! located and explained (a misspelt key gets a "did you mean").

use std::collections::HashSet;
use std::sync::OnceLock;

use serde_json::Value;

use super::suggest::did_you_mean;
use super::{Cx, field_path};
use crate::diag::Diagnostic;
use crate::load::Document;
use crate::load::escape_segment;

/// The schema, as published for editors.
pub const SCHEMA_JSON: &str = include_str!("../../../schemas/fleet.v1alpha1.json");

fn schema() -> &'static (Value, jsonschema::Validator) {
    static S: OnceLock<(Value, jsonschema::Validator)> = OnceLock::new();
    S.get_or_init(|| {
        #[allow(clippy::expect_used)]
        let v: Value = serde_json::from_str(SCHEMA_JSON).expect("embedded schema is JSON (tested)");
        #[allow(clippy::expect_used)]
        let val = jsonschema::draft202012::new(&v).expect("embedded schema compiles (tested)");
        (v, val)
    })
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("`{s}`"),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Null => "null (empty)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl Cx<'_> {
    pub(super) fn schema(&mut self, i: usize, d: &Document, suppressed: &HashSet<(usize, String)>) {
        use jsonschema::error::ValidationErrorKind as K;
        let (schema_json, validator) = schema();
        let mut found: Vec<(Diagnostic, Option<(String, String)>)> = Vec::new();
        let mut misspelt: HashSet<(String, String)> = HashSet::new();
        for e in validator.iter_errors(&d.value) {
            let ptr = e.instance_path().as_str().to_string();
            if suppressed
                .iter()
                .any(|(j, p)| *j == i && (ptr == *p || ptr.starts_with(&format!("{p}/"))))
            {
                continue;
            }
            let diag = self.schema_diag(i, d, &ptr, &e, schema_json);
            let required = match e.kind() {
                K::Required { property } => property.as_str().map(|p| (ptr.clone(), p.to_string())),
                _ => None,
            };
            if let (K::AdditionalProperties { .. }, Some(h)) = (e.kind(), diag.hint.as_deref())
                && let Some(m) = h
                    .strip_prefix("did you mean `")
                    .and_then(|r| r.strip_suffix("`?"))
            {
                misspelt.insert((ptr.clone(), m.to_string()));
            }
            found.push((diag, required));
        }
        // A misspelt required field is one problem, not two: keep the "did you mean".
        for (diag, required) in found {
            if required.as_ref().is_some_and(|r| misspelt.contains(r)) {
                continue;
            }
            self.push(diag);
        }
    }

    fn schema_diag(
        &self,
        i: usize,
        d: &Document,
        ptr: &str,
        e: &jsonschema::ValidationError<'_>,
        schema_json: &Value,
    ) -> Diagnostic {
        use jsonschema::error::ValidationErrorKind as K;
        let value = d.value.pointer(ptr).unwrap_or(&Value::Null);
        let name = field_path(ptr);
        let name = if name.is_empty() {
            "the document".to_string()
        } else {
            format!("`{name}`")
        };
        match e.kind() {
            K::AdditionalProperties { unexpected } => {
                let allowed = allowed_properties(schema_json, e.evaluation_path().as_str());
                let key = unexpected.first().cloned().unwrap_or_default();
                let child = format!("{ptr}/{}", escape_segment(&key));
                let mut diag = self.err_key("schema", i, &child, format!("unknown field `{key}`"));
                if unexpected.len() > 1 {
                    diag.summary = format!(
                        "unknown fields {}",
                        unexpected
                            .iter()
                            .map(|u| format!("`{u}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                if let Some(m) = did_you_mean(&key, allowed.iter().map(String::as_str)) {
                    diag = diag.hint(format!("did you mean `{m}`?"));
                } else if !allowed.is_empty() {
                    diag = diag.hint(format!("allowed here: {}", allowed.join(", ")));
                }
                diag
            }
            K::Required { property } => {
                let p = property.as_str().unwrap_or("?");
                let mut diag = self.err_key(
                    "schema",
                    i,
                    ptr,
                    format!("missing required field `{p}` in {name}"),
                );
                if ptr.is_empty() {
                    diag.span = d.spans.span("");
                }
                diag
            }
            K::Type { kind } => {
                let expected = format!("{kind:?}").to_lowercase();
                let expected = expected
                    .trim_start_matches("single(")
                    .trim_start_matches("multiple(")
                    .trim_end_matches(')')
                    .to_string();
                let mut diag = self.err(
                    "schema",
                    i,
                    ptr,
                    format!("{name} must be {expected}, found {}", type_name(value)),
                );
                if let Some(raw) = d.spans.raw(ptr).filter(|_| !value.is_string()) {
                    if expected.contains("string") {
                        diag = diag.hint(format!(
                            "YAML reads `{raw}` as {}; quote it: \"{raw}\"",
                            type_name(value)
                        ));
                    }
                } else if expected.contains("boolean") {
                    if let Some(s) = value.as_str() {
                        let l = s.to_ascii_lowercase();
                        if ["yes", "no", "on", "off", "y", "n"].contains(&l.as_str()) {
                            diag = diag.hint(format!(
                                "`{s}` is a string in YAML 1.2 (it was a boolean in YAML 1.1); write true or false"
                            ));
                        }
                    }
                } else if value.is_null() {
                    diag = diag
                        .hint("the value is empty; write it after the colon, or remove the key");
                }
                diag
            }
            K::Enum { options } => {
                let opts: Vec<&str> = options
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut diag = self.err(
                    "schema",
                    i,
                    ptr,
                    format!(
                        "{name} is {}, expected one of: {}",
                        short(value),
                        opts.join(", ")
                    ),
                );
                if let Some(s) = value.as_str() {
                    if let Some(m) = did_you_mean(s, opts.iter().copied()) {
                        diag = diag.hint(format!("did you mean `{m}`?"));
                    }
                } else if let Some(raw) = d.spans.raw(ptr) {
                    diag = diag.hint(format!(
                        "YAML reads `{raw}` as {}; quote it",
                        type_name(value)
                    ));
                }
                diag
            }
            K::Constant { expected_value } => {
                let mut diag = self.err(
                    "api-version",
                    i,
                    ptr,
                    format!(
                        "{name} is {}, expected {}",
                        short(value),
                        short(expected_value)
                    ),
                );
                if ptr == "/apiVersion" {
                    diag = diag.hint("this fleetform reads fleetform.dev/v1alpha1 documents");
                }
                diag
            }
            K::OneOfNotValid { .. } | K::OneOfMultipleValid { .. } => {
                let eval = e.evaluation_path().as_str();
                let at = schema_node(schema_json, eval.strip_suffix("/oneOf").unwrap_or(eval));
                let secret_def = schema_json.pointer("/$defs/secretRef");
                if at.is_some()
                    && secret_def.is_some()
                    && at.map(|a| a as *const Value) == secret_def.map(|a| a as *const Value)
                {
                    self.err(
                        "schema",
                        i,
                        ptr,
                        format!("{name} must be a secret reference"),
                    )
                    .hint(
                        "one of `{env: VAR}`, `{file: PATH}` or `{secret: {namespace, name, key}}`",
                    )
                } else if ptr.ends_with("/gpuSharing") {
                    self.err(
                        "schema",
                        i,
                        ptr,
                        format!(
                            "{name} must have exactly one of `mig`, `mps`, `timeSlicing`, `dra`"
                        ),
                    )
                } else if ptr.ends_with("/nodeOs") {
                    self.err(
                        "schema",
                        i,
                        ptr,
                        format!("{name} must be `{{image: URL}}` or `{{byo: true}}`"),
                    )
                } else if ptr.ends_with("/config") {
                    self.err("schema", i, ptr, format!("{name} must be a config name (`all-1g.10gb`), `{{all: {{PROFILE: N}}}}` or `{{perGpu: [...]}}`"))
                } else {
                    self.err(
                        "schema",
                        i,
                        ptr,
                        format!("{name} does not match any allowed form"),
                    )
                }
            }
            K::Minimum { limit } => self.err(
                "schema",
                i,
                ptr,
                format!("{name} must be >= {limit}, found {}", short(value)),
            ),
            K::Maximum { limit } => self.err(
                "schema",
                i,
                ptr,
                format!("{name} must be <= {limit}, found {}", short(value)),
            ),
            _ => self.err("schema", i, ptr, format!("{name}: {}", e.masked())),
        }
    }
}

/// The schema node at an evaluation path (keyword locations, `$ref` followed).
fn schema_node<'s>(schema: &'s Value, eval_path: &str) -> Option<&'s Value> {
    let mut node = schema;
    for seg in eval_path.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg == "$ref" {
            node = schema.pointer(node.get("$ref")?.as_str()?.strip_prefix('#')?)?;
            continue;
        }
        node = match node {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    if let Some(r) = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
    {
        node = schema.pointer(r)?;
    }
    Some(node)
}

/// Property names allowed at the object whose `additionalProperties` failed.
fn allowed_properties(schema: &Value, eval_path: &str) -> Vec<String> {
    let parent = eval_path.rsplit_once('/').map_or("", |(p, _)| p);
    schema_node(schema, parent)
        .and_then(|n| n.get("properties"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schema_compiles() {
        let _ = schema();
    }
}
