//! Validate: JSON Schema, then the typed model, then the rules a schema cannot say.
//!
//! Every problem is collected, located (file:line:col from the loader's spans) and
//! sorted. Structural problems (schema, types) are reported first and alone: the
//! semantic rules run once every document has its typed form, so a typo in one host
//! does not cascade into "unknown host" errors elsewhere.
//!
//! Rule codes (each has a fixture in fixtures/invalid/ and a line in docs/manifest.md):
//! `schema`, `api-version`, `inline-secret`, `secret-literal`, `fleet-singleton`,
//! `invalid-name`, `duplicate-name`, `unknown-reference`, `pool-members`,
//! `selector-capacity`, `host-pool-conflict`, `spare-misuse`, `dedicated-hosts`,
//! `mixed-gpu-models`, `kubernetes-version`, `mig-unsupported`, `mig-profile`,
//! `mig-layout`, `mig-strategy`, `sharing-replicas`, `nim-tenant`, `nim-capacity`,
//! `nim-mig`, `quota-exceeded`, `quota-capacity`, `cidr-invalid`, `cidr-overlap`,
//! `driver-compat`, `gpu-operator-compat`, `nim-operator-compat`, `network-operator-compat`,
//! `precompiled-driver`, `secure-boot-driver`, `singleton`,
//! `compute-domains`, `autoscaling`, `rail-aligned`, `rollout-budget`,
//! `prune-fraction`, `url`, `endpoint-address`, `duplicate-bmc`, `gpu-count`, `image-ref`,
//! `dra-device-class`, `dra-device-plugin`, `kai-queue-parent`, `kai-queue-quota`,
//! `signed-images`, `karpenter-hosts`; warnings: `yaml11-boolean`.
//!
//! Size: the resolve phase and every rule are still one `impl`; splitting it into `validate/`
//! (resolve, then `rules/*.rs`) is issue 16's next step, not done yet.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::catalog;
use crate::diag::{Diagnostic, Span};
use crate::load::{Document, SourceFile, escape_segment};
use crate::manifest::*;
use crate::sharing;

mod compat;
mod endpoints;
mod nico;

/// The schema, as published for editors.
pub const SCHEMA_JSON: &str = include_str!("../../schemas/fleet.v1alpha1.json");

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

/// Validates loaded documents into a [`Fleet`], or returns every problem found, sorted.
pub fn validate(docs: &[Document]) -> Result<Fleet, Vec<Diagnostic>> {
    let mut cx = Cx {
        docs,
        diags: Vec::new(),
    };
    let suppressed = cx.secrets();
    for (i, d) in docs.iter().enumerate() {
        cx.schema(i, d, &suppressed);
    }
    if !cx.diags.is_empty() {
        return Err(cx.finish());
    }
    let fleet = cx.typed();
    let Some(mut fleet) = fleet else {
        return Err(cx.finish());
    };
    cx.rules(&mut fleet);
    if cx
        .diags
        .iter()
        .any(|d| d.severity == crate::diag::Severity::Error)
    {
        cx.diags.extend(warnings(docs));
    }
    if cx
        .diags
        .iter()
        .any(|d| d.severity == crate::diag::Severity::Error)
    {
        Err(cx.finish())
    } else {
        Ok(fleet)
    }
}

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

struct Cx<'a> {
    docs: &'a [Document],
    diags: Vec<Diagnostic>,
}

/// `/spec/pools/0/hosts` → `spec.pools[0].hosts`.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else if seg.contains(['.', ' ', '[', ']']) || seg.is_empty() {
            out.push_str(&format!("[\"{seg}\"]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
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

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The nearest candidate within a small edit distance.
pub fn did_you_mean<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (name.chars().count() / 3).max(2);
    let prefix = |c: &str| {
        c.chars()
            .zip(name.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    candidates
        .into_iter()
        .map(|c| {
            (
                distance(&name.to_lowercase(), &c.to_lowercase()),
                std::cmp::Reverse(prefix(c)),
                c,
            )
        })
        .filter(|(d, _, _)| *d <= limit)
        .min()
        .map(|(_, _, c)| c)
}

/// Pointer patterns (`*` = any segment) where a secret reference belongs, per kind.
const SECRET_PATHS: &[(&str, &str)] = &[
    ("Fleet", "/spec/managementCluster/kubeconfig"),
    ("Fleet", "/spec/registries/ngc/apiKey"),
    ("Host", "/spec/bmc/credentials/password"),
    ("Tenant", "/spec/kubernetes/kubeconfig"),
    ("Tenant", "/spec/ngc/apiKey"),
];

/// The concrete pointers a pattern (`*` = every array item) names in `v`.
fn expand_pattern(v: &Value, pattern: &str, prefix: String, out: &mut Vec<String>) {
    let pattern = pattern.strip_prefix('/').unwrap_or(pattern);
    if pattern.is_empty() {
        out.push(prefix);
        return;
    }
    let (seg, rest) = pattern.split_once('/').unwrap_or((pattern, ""));
    let rest = if rest.is_empty() {
        String::new()
    } else {
        format!("/{rest}")
    };
    if seg == "*" {
        if let Value::Array(a) = v {
            for (n, item) in a.iter().enumerate() {
                expand_pattern(item, &rest, format!("{prefix}/{n}"), out);
            }
        }
    } else if let Some(child) = v.get(seg) {
        expand_pattern(child, &rest, format!("{prefix}/{seg}"), out);
    }
}

enum Seg<'v> {
    Key(&'v str),
    Index(usize),
}

/// Strings anywhere in `v` that look like credentials, with their pointers
/// (pointers are only built for hits).
fn find_keys<'v>(v: &'v Value, path: &mut Vec<Seg<'v>>, out: &mut Vec<(String, &'static str)>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                path.push(Seg::Key(k));
                find_keys(c, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (n, c) in a.iter().enumerate() {
                path.push(Seg::Index(n));
                find_keys(c, path, out);
                path.pop();
            }
        }
        Value::String(s) => {
            if let Some(what) = looks_like_key(s) {
                let mut ptr = String::new();
                for seg in path.iter() {
                    match seg {
                        Seg::Key(k) => ptr.push_str(&format!("/{}", escape_segment(k))),
                        Seg::Index(n) => ptr.push_str(&format!("/{n}")),
                    }
                }
                out.push((ptr, what));
            }
        }
        _ => {}
    }
}

/// What a literal that looks like a credential looks like.
fn looks_like_key(s: &str) -> Option<&'static str> {
    let s = s.trim();
    if s.starts_with("nvapi-") {
        return Some("an NGC API key (nvapi-…)");
    }
    if s.contains("-----BEGIN") && s.contains("PRIVATE KEY") {
        return Some("a PEM private key");
    }
    if ["ghp_", "github_pat_", "glpat-", "xoxb-", "xoxp-"]
        .iter()
        .any(|p| s.starts_with(p))
    {
        return Some("an access token");
    }
    if s.len() == 20
        && s.starts_with("AKIA")
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Some("an AWS access key id");
    }
    None
}

impl Cx<'_> {
    fn finish(&mut self) -> Vec<Diagnostic> {
        let mut d = std::mem::take(&mut self.diags);
        crate::diag::sort(&mut d);
        d
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// An error at `ptr` of document `i` (value span, else nearest written ancestor).
    fn err(&self, code: &str, i: usize, ptr: &str, summary: impl Into<String>) -> Diagnostic {
        let spans = &self.docs[i].spans;
        let span = spans.span(ptr).or_else(|| spans.nearest(ptr));
        let mut d = Diagnostic::error(code, summary).at(span);
        if !ptr.is_empty() {
            d = d.field(field_path(ptr));
        }
        d
    }

    /// An error at the key of `ptr` (for whole-entry problems).
    fn err_key(&self, code: &str, i: usize, ptr: &str, summary: impl Into<String>) -> Diagnostic {
        let spans = &self.docs[i].spans;
        let span = spans.key_span(ptr).or_else(|| spans.nearest(ptr));
        let mut d = Diagnostic::error(code, summary).at(span);
        if !ptr.is_empty() {
            d = d.field(field_path(ptr));
        }
        d
    }

    // ------------------------------------------------------------ secrets

    /// Inline secrets where references belong, and key-looking literals anywhere.
    /// Returns (doc, pointer) pairs whose schema errors are already explained.
    fn secrets(&mut self) -> HashSet<(usize, String)> {
        let mut suppressed = HashSet::new();
        for (i, d) in self.docs.iter().enumerate() {
            let kind = d.kind().unwrap_or("");
            let mut at_refs = Vec::new();
            for (k, pattern) in SECRET_PATHS {
                if *k == kind {
                    expand_pattern(&d.value, pattern, String::new(), &mut at_refs);
                }
            }
            for ptr in at_refs {
                let Some(Value::String(s)) = d.value.pointer(&ptr) else {
                    continue;
                };
                let what = looks_like_key(s).unwrap_or("a literal value");
                let e = self
                    .err("inline-secret", i, &ptr, format!("a secret is written inline ({what}) where a secret reference is expected"))
                    .secret()
                    .hint("write `{file: ../secrets/NAME}`, `{env: VAR}` or `{secret: {namespace, name, key}}`, and remove the value from git history");
                self.diags.push(e);
                suppressed.insert((i, ptr));
            }
            let mut hits = Vec::new();
            find_keys(&d.value, &mut Vec::new(), &mut hits);
            for (ptr, what) in hits {
                if suppressed.contains(&(i, ptr.clone())) {
                    continue;
                }
                let e = self
                    .err("secret-literal", i, &ptr, format!("this value looks like {what}; secrets must not be in the manifest"))
                    .secret()
                    .hint("move it to a file or environment variable and reference it; rotate the key, it is in git history");
                self.diags.push(e);
                suppressed.insert((i, ptr));
            }
        }
        suppressed
    }

    // ------------------------------------------------------------ schema

    fn schema(&mut self, i: usize, d: &Document, suppressed: &HashSet<(usize, String)>) {
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

    // ------------------------------------------------------------ typed model

    fn spec<T: DeserializeOwned>(&mut self, i: usize) -> Option<T> {
        let d = &self.docs[i];
        let spec = d.value.get("spec").unwrap_or(&Value::Null);
        match serde_path_to_error::deserialize::<_, T>(spec) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut ptr = String::from("/spec");
                for seg in e.path().iter() {
                    use serde_path_to_error::Segment;
                    match seg {
                        Segment::Seq { index } => ptr.push_str(&format!("/{index}")),
                        Segment::Map { key } => ptr.push_str(&format!("/{}", escape_segment(key))),
                        Segment::Enum { variant } => {
                            ptr.push_str(&format!("/{}", escape_segment(variant)))
                        }
                        Segment::Unknown => {}
                    }
                }
                let msg = e.inner().to_string();
                let diag = self.err("schema", i, &ptr, format!("`{}`: {msg}", field_path(&ptr)));
                self.push(diag);
                None
            }
        }
    }

    fn typed(&mut self) -> Option<Fleet> {
        let mut fleet_docs = Vec::new();
        let mut racks = Vec::new();
        let mut hosts = Vec::new();
        let mut tenants = Vec::new();
        let mut pools = Vec::new();
        let mut nims = Vec::new();
        for (i, d) in self.docs.iter().enumerate() {
            let meta: Metadata = match serde_json::from_value(
                d.value.get("metadata").cloned().unwrap_or(Value::Null),
            ) {
                Ok(m) => m,
                Err(e) => {
                    let diag = self.err("schema", i, "/metadata", format!("`metadata`: {e}"));
                    self.push(diag);
                    continue;
                }
            };
            let origin = d.origin.clone();
            let doc = DocId(i);
            macro_rules! push {
                ($list:ident, $t:ty) => {
                    if let Some(spec) = self.spec::<$t>(i) {
                        $list.push(Doc {
                            metadata: meta,
                            spec,
                            origin,
                            doc,
                        });
                    }
                };
            }
            match Kind::parse(d.kind().unwrap_or("")) {
                Some(Kind::Fleet) => push!(fleet_docs, FleetSpec),
                Some(Kind::Rack) => push!(racks, RackSpec),
                Some(Kind::Host) => push!(hosts, HostSpec),
                Some(Kind::Tenant) => push!(tenants, TenantSpec),
                Some(Kind::NodePool) => push!(pools, NodePoolSpec),
                Some(Kind::NimService) => push!(nims, NimServiceSpec),
                None => {}
            }
        }
        if fleet_docs.len() != 1 {
            if fleet_docs.is_empty() {
                let mut d = Diagnostic::error("fleet-singleton", "no `kind: Fleet` document")
                    .hint("a fleet needs exactly one Fleet document with registries, operators and the management cluster");
                if let Some(first) = self.docs.first() {
                    d = d.at(Some(Span {
                        file: first.file.clone(),
                        line: 1,
                        column: 1,
                    }));
                }
                self.push(d);
            } else {
                for f in &fleet_docs[1..] {
                    let first = &fleet_docs[0].origin;
                    let d = self
                        .err_key(
                            "fleet-singleton",
                            f.doc.0,
                            "/kind",
                            format!("a second `kind: Fleet` document (the first is at {first})"),
                        )
                        .hint("keep exactly one Fleet document");
                    self.push(d);
                }
            }
        }
        if !self.diags.is_empty() {
            return None;
        }
        let fleet = fleet_docs.pop()?;
        {
            let list = &mut racks;
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        hosts.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        tenants.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        nims.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Some(Fleet {
            fleet,
            racks,
            hosts,
            tenants,
            pools,
            nims,
            pool_members: BTreeMap::new(),
            tenant_operators: BTreeMap::new(),
            spans: self
                .docs
                .iter()
                .map(|d| d.spans.clone())
                .collect::<Vec<Arc<_>>>(),
        })
    }

    // ------------------------------------------------------------ rules

    fn rules(&mut self, f: &mut Fleet) {
        self.names(f);
        self.fleet_settings(f);
        self.hosts(f);
        self.nico(f);
        self.endpoints(f);
        self.operators(f);
        self.tenants(f);
        self.pools(f);
        self.nims(f);
        self.quotas(f);
        self.addons(f);
    }

    fn names(&mut self, f: &Fleet) {
        fn check<S>(cx: &mut Cx<'_>, kind: Kind, list: &[Doc<S>]) {
            let mut prev: Option<&Doc<S>> = None;
            for d in list {
                let n = &d.metadata.name;
                let valid = !n.is_empty()
                    && n.len() <= 63
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !n.starts_with('-')
                    && !n.ends_with('-');
                if !valid {
                    let e = cx
                        .err("invalid-name", d.doc.0, "/metadata/name", format!("{kind} name `{n}` is not a DNS label"))
                        .hint("use lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit");
                    cx.push(e);
                }
                if let Some(p) = prev
                    && p.metadata.name == *n
                {
                    let e = cx
                        .err(
                            "duplicate-name",
                            d.doc.0,
                            "/metadata/name",
                            format!("{kind} `{n}` is defined twice (also at {})", p.origin),
                        )
                        .hint("names are unique per kind; rename one");
                    cx.push(e);
                }
                prev = Some(d);
            }
        }
        check(self, Kind::Fleet, std::slice::from_ref(&f.fleet));
        check(self, Kind::Rack, &f.racks);
        check(self, Kind::Host, &f.hosts);
        check(self, Kind::Tenant, &f.tenants);
        check(self, Kind::NodePool, &f.pools);
        check(self, Kind::NimService, &f.nims);
    }

    fn url(&mut self, i: usize, ptr: &str, url: &str) {
        let ok = ["http://", "https://"].iter().any(|p| {
            url.strip_prefix(p)
                .is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        });
        if !ok {
            let e = self
                .err("url", i, ptr, format!("`{}` is not an http(s) URL", url))
                .hint("write it as https://HOST[:PORT]");
            self.push(e);
        }
    }

    fn fleet_settings(&mut self, f: &Fleet) {
        let i = f.fleet.doc.0;
        let s = &f.fleet.spec;
        self.url(
            i,
            "/spec/registries/ngc/endpoint",
            &s.registries.ngc.endpoint.clone(),
        );
        if let Some(p) = &s.observability.otel {
            self.url(i, "/spec/observability/otel/endpoint", &p.endpoint);
        }
        if s.rollout.max_unavailable == 0 || s.rollout.max_unavailable_per_fault_domain == 0 {
            let which = if s.rollout.max_unavailable == 0 {
                "maxUnavailable"
            } else {
                "maxUnavailablePerFaultDomain"
            };
            let e = self
                .err(
                    "rollout-budget",
                    i,
                    &format!("/spec/rollout/{which}"),
                    "a disruption budget of 0 blocks every disruptive change forever",
                )
                .hint("use at least 1; to pause changes, stop applying instead");
            self.push(e);
        }
        let frac = s.prune.max_delete_fraction;
        if !(frac > 0.0 && frac <= 1.0) {
            let e = self
                .err(
                    "prune-fraction",
                    i,
                    "/spec/prune/maxDeleteFraction",
                    format!("maxDeleteFraction {frac} is outside (0, 1]"),
                )
                .hint("0.3 refuses plans that delete more than 30% of managed resources");
            self.push(e);
        }
    }

    fn hosts(&mut self, f: &Fleet) {
        let racks: Vec<&str> = f.racks.iter().map(|r| r.name()).collect();
        let mut bmcs: HashMap<(String, Option<String>), &Host> = HashMap::new();
        for h in &f.hosts {
            let i = h.doc.0;
            if f.rack(&h.spec.rack).is_none() {
                let mut e = self.err(
                    "unknown-reference",
                    i,
                    "/spec/rack",
                    format!(
                        "host `{}` is in rack `{}`, which is not defined",
                        h.name(),
                        h.spec.rack
                    ),
                );
                if let Some(m) = did_you_mean(&h.spec.rack, racks.iter().copied()) {
                    e = e.hint(format!("did you mean `{m}`?"));
                }
                self.push(e);
            }
            // A host with no GPU (`count: 0`: a CPU or service node) is fine on its own; a
            // node pool is GPU capacity, so its members need GPUs (checked in `pools`).
            let model = h.spec.gpu.model;
            let max = catalog::max_gpus_per_host(model);
            if h.spec.gpu.count > max {
                let e = self
                    .err(
                        "gpu-count",
                        i,
                        "/spec/gpu/count",
                        format!(
                            "host `{}` has {} {model} GPUs; {model} ships on {}",
                            h.name(),
                            h.spec.gpu.count,
                            catalog::form_factor(model)
                        ),
                    )
                    .hint(format!("a {model} host has at most {max} GPUs"));
                self.push(e);
            }
            // A NICo-managed host has no BMC (checked in validate/nico.rs).
            let Some(bmc) = &h.spec.bmc else { continue };
            self.url(i, "/spec/bmc/endpoint", &bmc.endpoint);
            let key = (
                bmc.endpoint.trim_end_matches('/').to_string(),
                bmc.system_id.clone(),
            );
            if let Some(other) = bmcs.get(&key) {
                let e = self
                    .err(
                        "duplicate-bmc",
                        i,
                        "/spec/bmc/endpoint",
                        format!(
                            "host `{}` has the same BMC as host `{}`",
                            h.name(),
                            other.name()
                        ),
                    )
                    .hint("two hosts on one Redfish service need different `systemId`s");
                self.push(e);
            } else {
                bmcs.insert(key, h);
            }
        }
    }

    fn operators(&mut self, f: &mut Fleet) {
        let fleet_raw = self.docs[f.fleet.doc.0]
            .value
            .pointer("/spec/operators")
            .cloned()
            .unwrap_or(Value::Null);
        let mut out = BTreeMap::new();
        for t in &f.tenants {
            let ops = match &t.spec.operators {
                None => f.fleet.spec.operators.clone(),
                Some(patch) => {
                    let mut merged = fleet_raw.clone();
                    merge_patch(&mut merged, patch);
                    match serde_path_to_error::deserialize::<_, Operators>(&merged) {
                        Ok(o) => o,
                        Err(e) => {
                            let p = e.path().to_string();
                            let d = self.err(
                                "schema",
                                t.doc.0,
                                "/spec/operators",
                                format!(
                                    "operator overrides do not merge into valid operators: {p}: {}",
                                    e.inner()
                                ),
                            );
                            self.push(d);
                            continue;
                        }
                    }
                }
            };
            out.insert(t.name().to_string(), ops);
        }
        f.tenant_operators = out;
        // Singletons: checked on every effective set (fleet and each tenant).
        let mut sets: Vec<(usize, &str, Operators)> =
            vec![(f.fleet.doc.0, "", f.fleet.spec.operators.clone())];
        for t in &f.tenants {
            if t.spec.operators.is_some()
                && let Some(o) = f.tenant_operators.get(t.name())
            {
                sets.push((t.doc.0, "", o.clone()));
            }
        }
        for (i, _, ops) in sets {
            if let Some(n) = &ops.network_operator {
                if n.policy_name != "nic-cluster-policy" {
                    let e = self
                        .err("singleton", i, "/spec/operators/networkOperator/policyName", format!("NicClusterPolicy `{}` would be ignored by the Network Operator", n.policy_name))
                        .hint("the operator reconciles only the policy named `nic-cluster-policy` (network-operator pkg/consts)");
                    self.push(e);
                }
                // The chart `values` escape hatch wins over the field (compile merges it last),
                // so the owner is whichever of the two says so last.
                let owner = |field: bool, values: &Option<Value>, base: &str| -> (bool, String) {
                    match values
                        .as_ref()
                        .and_then(|v| v.pointer("/nfd/enabled"))
                        .and_then(Value::as_bool)
                    {
                        Some(b) => (b, format!("{base}/values/nfd/enabled")),
                        None => (field, format!("{base}/nfd")),
                    }
                };
                let (gpu_nfd, gpu_at) = owner(
                    ops.gpu_operator.nfd,
                    &ops.gpu_operator.values,
                    "/spec/operators/gpuOperator",
                );
                let (net_nfd, net_at) = owner(n.nfd, &n.values, "/spec/operators/networkOperator");
                if gpu_nfd && net_nfd {
                    let e = self
                        .err("singleton", i, &net_at, format!("Node Feature Discovery has two owners: the GPU Operator (`{}`) and the Network Operator (`{}`)", field_path(&gpu_at), field_path(&net_at)))
                        .hint(format!("one NFD per cluster: turn one off (`networkOperator.nfd: false` is the default); {}", crate::compat::ONE_NFD));
                    self.push(e);
                }
            }
        }
    }

    fn tenants(&mut self, f: &Fleet) {
        let mut cidrs: Vec<(String, u32, u128, u8, usize, &'static str)> = Vec::new();
        for t in &f.tenants {
            let i = t.doc.0;
            let v = &t.spec.kubernetes.version;
            match catalog::kubernetes_minor(v) {
                None => {
                    let e = self
                        .err(
                            "kubernetes-version",
                            i,
                            "/spec/kubernetes/version",
                            format!("`{v}` is not a Kubernetes version"),
                        )
                        .hint("write MAJOR.MINOR or MAJOR.MINOR.PATCH in quotes, e.g. \"1.34\"");
                    self.push(e);
                }
                Some(m) if m < catalog::MIN_KUBERNETES => {
                    let e = self
                        .err("kubernetes-version", i, "/spec/kubernetes/version", format!("Kubernetes {v} is older than 1.34"))
                        .hint("fleetform needs 1.34 or newer (Dynamic Resource Allocation, resource.k8s.io/v1, is GA in 1.34)");
                    self.push(e);
                }
                _ => {}
            }
            if t.spec.node_os.byo == Some(false) {
                let e = self
                    .err("schema", i, "/spec/nodeOs/byo", "`byo: false` says nothing")
                    .hint("give `{image: URL}` or `{byo: true}`");
                self.push(e);
            }
            if let Some(url) = t.spec.node_os.image() {
                self.url(i, "/spec/nodeOs/image", url);
            }
            for (ptr, text, what) in [
                (
                    "/spec/kubernetes/podCidr",
                    &t.spec.kubernetes.pod_cidr,
                    "pod",
                ),
                (
                    "/spec/kubernetes/serviceCidr",
                    &t.spec.kubernetes.service_cidr,
                    "service",
                ),
            ] {
                match parse_cidr(text) {
                    Some((fam, net, len)) => {
                        cidrs.push((t.name().to_string(), fam, net, len, i, what))
                    }
                    None => {
                        let e = self
                            .err("cidr-invalid", i, ptr, format!("`{text}` is not a CIDR"))
                            .hint("e.g. 10.64.0.0/16 or fd00:10::/56, with no host bits set");
                        self.push(e);
                    }
                }
            }
        }
        // Sweep by start address: a range overlaps an earlier one iff it starts before
        // the furthest end seen so far (n log n, not n²).
        let width = |fam: u32| if fam == 4 { 32u32 } else { 128 };
        let mut ranges: Vec<(u32, u128, u128, usize)> = cidrs
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let host = width(c.1) - u32::from(c.3);
                let end = if host >= 128 {
                    u128::MAX
                } else {
                    c.2 | ((1u128 << host) - 1)
                };
                (c.1, c.2, end, k)
            })
            .collect();
        ranges.sort();
        let mut best: Option<(u32, u128, usize)> = None; // (family, end, index) with the furthest end
        for &(fam, start, end, k) in &ranges {
            if let Some((bf, bend, bk)) = best
                && bf == fam
                && start <= bend
            {
                // Report on the later one in file order, naming the other.
                let (x, y) = if (cidrs[k].4, k) > (cidrs[bk].4, bk) {
                    (&cidrs[k], &cidrs[bk])
                } else {
                    (&cidrs[bk], &cidrs[k])
                };
                let ptr = if x.5 == "pod" {
                    "/spec/kubernetes/podCidr"
                } else {
                    "/spec/kubernetes/serviceCidr"
                };
                let other = if y.0 == x.0 {
                    "its own".to_string()
                } else {
                    format!("tenant `{}`'s", y.0)
                };
                let e = self
                    .err(
                        "cidr-overlap",
                        x.4,
                        ptr,
                        format!(
                            "tenant `{}`'s {} CIDR overlaps {other} {} CIDR",
                            x.0, x.5, y.5
                        ),
                    )
                    .hint("give every tenant cluster its own pod and service ranges");
                self.push(e);
            }
            if best.is_none_or(|(bf, bend, _)| bf != fam || end > bend) {
                best = Some((fam, end, k));
            }
        }
    }

    fn pools(&mut self, f: &mut Fleet) {
        let tenants: Vec<&str> = f.tenants.iter().map(|t| t.name()).collect();
        let host_names: Vec<&str> = f.hosts.iter().map(|h| h.name()).collect();
        let racks: Vec<&str> = f.racks.iter().map(|r| r.name()).collect();
        let mut owner: HashMap<String, (String, usize)> = HashMap::new(); // host -> (pool, doc)
        let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut diags = Vec::new();
        // Explicit members first, then selectors in pool-name order.
        for p in &f.pools {
            let i = p.doc.0;
            if f.tenant(&p.spec.tenant).is_none() {
                let mut e = self.err(
                    "unknown-reference",
                    i,
                    "/spec/tenant",
                    format!(
                        "pool `{}` names tenant `{}`, which is not defined",
                        p.name(),
                        p.spec.tenant
                    ),
                );
                if let Some(m) = did_you_mean(&p.spec.tenant, tenants.iter().copied()) {
                    e = e.hint(format!("did you mean `{m}`?"));
                }
                diags.push(e);
            }
            match (p.spec.hosts.is_empty(), &p.spec.selector) {
                (true, None) => diags.push(
                    self.err_key(
                        "pool-members",
                        i,
                        "/spec",
                        format!("pool `{}` has neither `hosts` nor `selector`", p.name()),
                    )
                    .hint("list its hosts, or give `selector: {count: N}`"),
                ),
                (false, Some(_)) => diags.push(
                    self.err_key(
                        "pool-members",
                        i,
                        "/spec/selector",
                        format!("pool `{}` has both `hosts` and `selector`", p.name()),
                    )
                    .hint("use one of them"),
                ),
                _ => {}
            }
            let mut list = Vec::new();
            for (n, h) in p.spec.hosts.iter().enumerate() {
                let ptr = format!("/spec/hosts/{n}");
                let Some(host) = f.host(h) else {
                    let mut e = self.err(
                        "unknown-reference",
                        i,
                        &ptr,
                        format!("pool `{}` lists host `{h}`, which is not defined", p.name()),
                    );
                    if let Some(m) = did_you_mean(h, host_names.iter().copied()) {
                        e = e.hint(format!("did you mean `{m}`?"));
                    }
                    diags.push(e);
                    continue;
                };
                if host.spec.spare {
                    diags.push(
                        self.err(
                            "spare-misuse",
                            i,
                            &ptr,
                            format!(
                                "host `{h}` is a spare and cannot be a member of pool `{}`",
                                p.name()
                            ),
                        )
                        .hint("list it under `spares`, or set `spare: false` on the host"),
                    );
                    continue;
                }
                if let Some((other, _)) = owner.get(h.as_str()) {
                    diags.push(
                        self.err(
                            "host-pool-conflict",
                            i,
                            &ptr,
                            format!("host `{h}` is already in pool `{other}`"),
                        )
                        .hint("a host belongs to at most one pool"),
                    );
                    continue;
                }
                owner.insert(h.clone(), (p.name().to_string(), i));
                list.push(h.clone());
            }
            members.insert(p.name().to_string(), list);
        }
        for p in &f.pools {
            let Some(sel) = &p.spec.selector else {
                continue;
            };
            let i = p.doc.0;
            if let Some(r) = &sel.rack
                && f.rack(r).is_none()
            {
                let mut e = self.err(
                    "unknown-reference",
                    i,
                    "/spec/selector/rack",
                    format!(
                        "pool `{}` selects rack `{r}`, which is not defined",
                        p.name()
                    ),
                );
                if let Some(m) = did_you_mean(r, racks.iter().copied()) {
                    e = e.hint(format!("did you mean `{m}`?"));
                }
                diags.push(e);
                continue;
            }
            let picked: Vec<String> = f
                .hosts
                .iter()
                .filter(|h| !h.spec.spare && !owner.contains_key(h.name()))
                .filter(|h| sel.rack.as_ref().is_none_or(|r| &h.spec.rack == r))
                .filter(|h| sel.gpu_model.is_none_or(|m| h.spec.gpu.model == m))
                .take(sel.count as usize)
                .map(|h| h.name().to_string())
                .collect();
            if picked.len() < sel.count as usize {
                diags.push(
                    self.err(
                        "selector-capacity",
                        i,
                        "/spec/selector/count",
                        format!(
                            "pool `{}` selects {} hosts but only {} free ones match",
                            p.name(),
                            sel.count,
                            picked.len()
                        ),
                    )
                    .hint("lower `count`, widen the selector, or add hosts"),
                );
            }
            for h in &picked {
                owner.insert(h.clone(), (p.name().to_string(), i));
            }
            members.insert(p.name().to_string(), picked);
        }
        // Spares, tenants per host, models, sharing, topology.
        let mut users: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for p in &f.pools {
            for h in members.get(p.name()).into_iter().flatten() {
                if let Some(host) = f.host(h) {
                    users
                        .entry(host.name())
                        .or_default()
                        .insert(p.spec.tenant.as_str());
                }
            }
        }
        for p in &f.pools {
            let i = p.doc.0;
            for (n, s) in p.spec.spares.iter().enumerate() {
                let ptr = format!("/spec/spares/{n}");
                match f.host(s) {
                    None => {
                        let mut e = self.err(
                            "unknown-reference",
                            i,
                            &ptr,
                            format!(
                                "pool `{}` lists spare `{s}`, which is not defined",
                                p.name()
                            ),
                        );
                        if let Some(m) = did_you_mean(s, host_names.iter().copied()) {
                            e = e.hint(format!("did you mean `{m}`?"));
                        }
                        diags.push(e);
                    }
                    Some(h) if !h.spec.spare => {
                        diags.push(self.err("spare-misuse", i, &ptr, format!("pool `{}` lists `{s}` as a spare, but the host is not `spare: true`", p.name())).hint("set `spare: true` on the host so no pool counts it as capacity"));
                    }
                    Some(h) => {
                        users
                            .entry(h.name())
                            .or_default()
                            .insert(p.spec.tenant.as_str());
                    }
                }
            }
        }
        for p in &f.pools {
            let i = p.doc.0;
            let Some(t) = f.tenant(&p.spec.tenant) else {
                continue;
            };
            if t.spec.isolation != Isolation::DedicatedHosts {
                continue;
            }
            for h in p
                .spec
                .spares
                .iter()
                .chain(members.get(p.name()).into_iter().flatten())
            {
                if let Some(u) = users.get(h.as_str())
                    && let Some(other) = u.iter().find(|o| **o != t.name())
                {
                    let ptr = p
                        .spec
                        .spares
                        .iter()
                        .position(|s| s == h)
                        .map_or("/spec".to_string(), |n| format!("/spec/spares/{n}"));
                    diags.push(self.err("dedicated-hosts", i, &ptr, format!("tenant `{}` has dedicated hosts, but host `{h}` also serves tenant `{other}`", t.name())).hint("give the dedicated tenant its own hosts and spares"));
                }
            }
        }
        f.pool_members = members
            .iter()
            .map(|(k, v)| {
                let mut v = v.clone();
                v.sort();
                (k.clone(), v)
            })
            .collect();
        for p in &f.pools {
            for h in members.get(p.name()).into_iter().flatten() {
                if let Some(h) = f.host(h).filter(|h| h.spec.gpu.count == 0) {
                    diags.push(
                        self.err(
                            "gpu-count",
                            h.doc.0,
                            "/spec/gpu/count",
                            format!("host `{}` has 0 GPUs but is a member of node pool `{}`", h.name(), p.name()),
                        )
                        .hint("a node pool's hosts have at least one GPU; a host with no GPU stays out of pools"),
                    );
                }
            }
        }
        for p in &f.pools {
            let i = p.doc.0;
            let ms = members.get(p.name()).cloned().unwrap_or_default();
            let hosts: Vec<&Host> = ms.iter().filter_map(|h| f.host(h)).collect();
            let models: BTreeSet<GpuModel> = hosts.iter().map(|h| h.spec.gpu.model).collect();
            if models.len() > 1 {
                let list: Vec<String> = models.iter().map(|m| m.to_string()).collect();
                diags.push(self.err_key("mixed-gpu-models", i, if p.spec.hosts.is_empty() { "/spec/selector" } else { "/spec/hosts" }, format!("pool `{}` mixes GPU models: {}", p.name(), list.join(", "))).hint("split it into one pool per GPU model (drivers, MIG profiles and NIM profiles are per model)"));
            }
            let model = models.iter().next().copied();
            let min_count = hosts.iter().map(|h| h.spec.gpu.count).min().unwrap_or(0);
            if let (Some(model), Some(sharing)) = (model, &p.spec.gpu_sharing) {
                diags.extend(self.sharing(f, p, model, min_count, sharing));
            }
            if let Some(a) = &p.spec.autoscaling
                && a.min > a.max
            {
                diags.push(self.err(
                    "autoscaling",
                    i,
                    "/spec/autoscaling/min",
                    format!("autoscaling min {} is above max {}", a.min, a.max),
                ));
            }
            if let Some(r) = &p.spec.rollout {
                for (v, k) in [
                    (r.max_unavailable, "maxUnavailable"),
                    (
                        r.max_unavailable_per_fault_domain,
                        "maxUnavailablePerFaultDomain",
                    ),
                ] {
                    if v == Some(0) {
                        diags.push(
                            self.err(
                                "rollout-budget",
                                i,
                                &format!("/spec/rollout/{k}"),
                                "a disruption budget of 0 blocks every disruptive change forever",
                            )
                            .hint("use at least 1; to pause changes, stop applying instead"),
                        );
                    }
                }
            }
            if p.spec.topology.rail_aligned {
                let rails: BTreeSet<Vec<(String, NicType, String)>> = hosts
                    .iter()
                    .map(|h| {
                        h.spec
                            .nics
                            .iter()
                            .map(|n| (n.name.clone(), n.kind, n.speed.clone()))
                            .collect()
                    })
                    .collect();
                if rails.len() > 1 || hosts.iter().any(|h| h.spec.nics.is_empty()) {
                    diags.push(self.err("rail-aligned", i, "/spec/topology/railAligned", format!("pool `{}` is rail-aligned but its hosts do not all have the same NIC rails", p.name())).hint("give every member the same `nics` (name, type, speed), or drop railAligned"));
                }
            }
        }
        self.diags.extend(diags);
    }

    fn sharing(
        &self,
        f: &Fleet,
        p: &NodePool,
        model: GpuModel,
        gpus: u32,
        s: &GpuSharing,
    ) -> Vec<Diagnostic> {
        let i = p.doc.0;
        let mut out = Vec::new();
        // Labels the sharing mode sets on the pool's nodes must not be overridden.
        for (k, v) in sharing::node_labels(Some(s)) {
            if let Some(given) = p.spec.labels.get(k)
                && given != v
            {
                out.push(
                    self.err(
                        "dra-device-plugin",
                        i,
                        &format!("/spec/labels/{}", escape_segment(k)),
                        format!(
                            "pool `{}` uses DRA, but its label `{k}: {given}` would run the device plugin too; both would hand out the same GPUs",
                            p.name()
                        ),
                    )
                    .hint(format!("remove the label: fleetform sets `{k}: \"{v}\"` on DRA pools")),
                );
            }
        }
        match s {
            GpuSharing::Mps(r) | GpuSharing::TimeSlicing(r) => {
                if r.replicas < 2 {
                    let k = if matches!(s, GpuSharing::Mps(_)) {
                        "mps"
                    } else {
                        "timeSlicing"
                    };
                    out.push(
                        self.err(
                            "sharing-replicas",
                            i,
                            &format!("/spec/gpuSharing/{k}/replicas"),
                            format!("{} replicas per GPU shares nothing", r.replicas),
                        )
                        .hint("use 2 or more, or drop gpuSharing for whole GPUs"),
                    );
                }
            }
            GpuSharing::Dra(d) => {
                for (n, c) in d.device_classes.iter().enumerate() {
                    if sharing::DraClass::parse(c).is_none() {
                        let names: Vec<&str> =
                            sharing::DraClass::ALL.iter().map(|c| c.name()).collect();
                        let mut e = self.err(
                            "dra-device-class",
                            i,
                            &format!("/spec/gpuSharing/dra/deviceClasses/{n}"),
                            format!("`{c}` is not a DeviceClass of the NVIDIA DRA driver"),
                        );
                        e = match did_you_mean(c, names.iter().copied()) {
                            Some(m) => e.hint(format!("did you mean `{m}`?")),
                            None => e.hint(format!("one of: {}", names.join(", "))),
                        };
                        out.push(e);
                    }
                }
                if d.compute_domains {
                    let non_nvl: Vec<&str> = f
                        .members_from(p)
                        .filter_map(|h| f.rack(&h.spec.rack))
                        .filter(|r| r.spec.fault_domain != FaultDomainKind::Nvl72)
                        .map(|r| r.name())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    if !non_nvl.is_empty() {
                        out.push(self.err("compute-domains", i, "/spec/gpuSharing/dra/computeDomains", format!("ComputeDomains need multi-node NVLink, but rack(s) {} are not nvl72", non_nvl.join(", "))).hint("use computeDomains only on pools in `faultDomain: nvl72` racks (GB200/GB300 NVL72)"));
                    }
                }
            }
            GpuSharing::Mig(m) => {
                let Some(geo) = catalog::mig(model) else {
                    out.push(
                        self.err(
                            "mig-unsupported",
                            i,
                            "/spec/gpuSharing/mig",
                            format!("{model} has no MIG"),
                        )
                        .hint("use time-slicing or MPS on this model"),
                    );
                    return out;
                };
                let strategy = f.operators_for(&p.spec.tenant).gpu_operator.mig_strategy;
                let base = "/spec/gpuSharing/mig/config";
                let layouts: Vec<(String, Vec<(String, u32)>)> = match &m.config {
                    MigConfig::Named(n) => match catalog::named_layout(&geo, n) {
                        Some(l) => vec![(
                            base.to_string(),
                            l.into_iter().map(|(a, b)| (a.to_string(), b)).collect(),
                        )],
                        None => {
                            let names: Vec<String> = geo
                                .profiles
                                .iter()
                                .map(|p| format!("all-{}", p.name))
                                .chain(["all-disabled".into(), "all-balanced".into()])
                                .collect();
                            let mut e = self.err(
                                "mig-profile",
                                i,
                                base,
                                format!("`{n}` is not a MIG config for {model}"),
                            );
                            e = match did_you_mean(n, names.iter().map(String::as_str)) {
                                Some(s) => e.hint(format!(
                                    "did you mean `{s}`? {model} profiles: {}",
                                    geo.names().join(", ")
                                )),
                                None => {
                                    e.hint(format!("{model} profiles: {}", geo.names().join(", ")))
                                }
                            };
                            out.push(e);
                            vec![]
                        }
                    },
                    MigConfig::Layout(MigLayout::All(l)) => vec![(
                        format!("{base}/all"),
                        l.iter().map(|(a, b)| (a.clone(), *b)).collect(),
                    )],
                    MigConfig::Layout(MigLayout::PerGpu(v)) => {
                        if v.len() as u64 > u64::from(gpus) {
                            out.push(
                                self.err(
                                    "mig-layout",
                                    i,
                                    &format!("{base}/perGpu"),
                                    format!(
                                        "{} per-GPU layouts for hosts with {gpus} GPUs",
                                        v.len()
                                    ),
                                )
                                .hint("one entry per GPU index, at most the GPU count"),
                            );
                        }
                        v.iter()
                            .enumerate()
                            .map(|(n, l)| {
                                (
                                    format!("{base}/perGpu/{n}"),
                                    l.iter().map(|(a, b)| (a.clone(), *b)).collect(),
                                )
                            })
                            .collect()
                    }
                };
                let mut all_profiles = BTreeSet::new();
                for (ptr, layout) in &layouts {
                    for (name, count) in layout {
                        if *count > 0 {
                            all_profiles.insert(name.clone());
                        }
                    }
                    match catalog::check_layout(&geo, layout.iter().map(|(a, b)| (a.as_str(), *b)))
                    {
                        Ok(()) => {}
                        Err(catalog::LayoutError::UnknownProfile(pn)) => {
                            let at = format!("{ptr}/{}", escape_segment(&pn));
                            let mut e = self.err_key(
                                "mig-profile",
                                i,
                                &at,
                                format!("MIG profile `{pn}` does not exist on {model}"),
                            );
                            e = match did_you_mean(&pn, geo.names()) {
                                Some(s) => e.hint(format!(
                                    "did you mean `{s}`? {model} profiles: {}",
                                    geo.names().join(", ")
                                )),
                                None => {
                                    e.hint(format!("{model} profiles: {}", geo.names().join(", ")))
                                }
                            };
                            out.push(e);
                        }
                        Err(err) => {
                            out.push(self.err("mig-layout", i, ptr, format!("MIG layout does not fit one {model}: {err}")).hint("see the profile table in docs/manifest.md (compute and memory slices per profile)"));
                        }
                    }
                }
                if strategy == MigStrategy::Single && all_profiles.len() > 1 {
                    out.push(self.err("mig-strategy", i, base, format!("layout mixes profiles {} but the tenant's migStrategy is `single`", all_profiles.into_iter().collect::<Vec<_>>().join(", "))).hint("set `operators.gpuOperator.migStrategy: mixed` for this tenant, or use one profile"));
                }
            }
        }
        out
    }

    fn nims(&mut self, f: &Fleet) {
        let tenants: Vec<&str> = f.tenants.iter().map(|t| t.name()).collect();
        let pools: Vec<&str> = f.pools.iter().map(|p| p.name()).collect();
        // pool -> (whole GPUs, MIG devices per profile); u64 and saturating: replicas
        // and gpusPerReplica are u32s from the manifest.
        let mut demand: HashMap<&str, (u64, BTreeMap<String, u64>)> = HashMap::new();
        for n in &f.nims {
            let i = n.doc.0;
            // The same parser and registry rule compile uses, so plan never meets an
            // image validate let through.
            let image = crate::compile::ImageRef::parse(&n.spec.image)
                .map_err(|e| e.to_string())
                .and_then(|r| crate::compile::fleet_image(&r, &f.fleet.spec.registries.ngc));
            if let Err(why) = image {
                let e = self
                    .err(
                        "image-ref",
                        i,
                        "/spec/image",
                        format!("NIM `{}`: {why}", n.name()),
                    )
                    .hint("write [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8; without a registry the fleet's registries.ngc.endpoint applies");
                self.push(e);
            }
            if f.tenant(&n.spec.tenant).is_none() {
                let mut e = self.err(
                    "unknown-reference",
                    i,
                    "/spec/tenant",
                    format!(
                        "NIM `{}` names tenant `{}`, which is not defined",
                        n.name(),
                        n.spec.tenant
                    ),
                );
                if let Some(m) = did_you_mean(&n.spec.tenant, tenants.iter().copied()) {
                    e = e.hint(format!("did you mean `{m}`?"));
                }
                self.push(e);
            }
            let Some(p) = f.pool(&n.spec.pool) else {
                let mut e = self.err(
                    "unknown-reference",
                    i,
                    "/spec/pool",
                    format!(
                        "NIM `{}` runs on pool `{}`, which is not defined",
                        n.name(),
                        n.spec.pool
                    ),
                );
                if let Some(m) = did_you_mean(&n.spec.pool, pools.iter().copied()) {
                    e = e.hint(format!("did you mean `{m}`?"));
                }
                self.push(e);
                continue;
            };
            if p.spec.tenant != n.spec.tenant {
                let e = self
                    .err(
                        "nim-tenant",
                        i,
                        "/spec/pool",
                        format!(
                            "NIM `{}` of tenant `{}` runs on pool `{}` of tenant `{}`",
                            n.name(),
                            n.spec.tenant,
                            p.name(),
                            p.spec.tenant
                        ),
                    )
                    .hint("a NIM runs on a pool of its own tenant");
                self.push(e);
            }
            let mig = matches!(p.spec.gpu_sharing, Some(GpuSharing::Mig(_)));
            match (&n.spec.mig_profile, mig) {
                (Some(prof), false) => {
                    let e = self
                        .err(
                            "nim-mig",
                            i,
                            "/spec/migProfile",
                            format!(
                                "NIM `{}` asks for MIG profile `{prof}` but pool `{}` has no MIG",
                                n.name(),
                                p.name()
                            ),
                        )
                        .hint("drop migProfile to use whole GPUs, or run it on a MIG pool");
                    self.push(e);
                }
                (None, true) => {
                    let e = self.err("nim-mig", i, "/spec/pool", format!("NIM `{}` needs whole GPUs but pool `{}` partitions its GPUs with MIG", n.name(), p.name())).hint("set `migProfile` to one of the pool's profiles, or use a pool without MIG");
                    self.push(e);
                }
                (Some(prof), true) => {
                    let model = f
                        .members(p.name())
                        .first()
                        .and_then(|h| f.host(h))
                        .map(|h| h.spec.gpu.model);
                    if let Some(geo) = model.and_then(catalog::mig)
                        && geo.profile(prof).is_none()
                    {
                        let e = self
                            .err(
                                "mig-profile",
                                i,
                                "/spec/migProfile",
                                format!(
                                    "MIG profile `{prof}` does not exist on {}",
                                    model.map(|m| m.to_string()).unwrap_or_default()
                                ),
                            )
                            .hint(format!("profiles: {}", geo.names().join(", ")));
                        self.push(e);
                    } else if let Some(GpuSharing::Mig(m)) = &p.spec.gpu_sharing
                        && model.is_some()
                    {
                        let offered = mig_capacity(f, p);
                        if !offered.contains_key(prof.as_str()) {
                            let have: Vec<&str> = offered.keys().map(String::as_str).collect();
                            let layout = match &m.config {
                                MigConfig::Named(c) => format!("`{c}`"),
                                MigConfig::Layout(_) => "layout".to_string(),
                            };
                            let e = self
                                .err(
                                    "nim-mig",
                                    i,
                                    "/spec/migProfile",
                                    format!(
                                        "NIM `{}` asks for MIG profile `{prof}`, but pool `{}`'s MIG {layout} makes no `{prof}` devices",
                                        n.name(),
                                        p.name()
                                    ),
                                )
                                .hint(if have.is_empty() {
                                    "the pool's layout makes no MIG devices; give it a layout with this profile".to_string()
                                } else {
                                    format!("the pool offers: {}", have.join(", "))
                                });
                            self.push(e);
                        }
                    }
                    let per = demand.entry(p.name()).or_default();
                    let c = per.1.entry(prof.clone()).or_default();
                    *c = c.saturating_add(u64::from(n.spec.replicas));
                }
                (None, false) => {
                    if let Some(GpuSharing::Dra(d)) = &p.spec.gpu_sharing
                        && let sharing::Request::Dra { class, .. } = sharing::request(
                            p.spec.gpu_sharing.as_ref(),
                            MigStrategy::Single,
                            None,
                            n.spec.gpus_per_replica,
                        )
                        && !d.device_classes.iter().any(|c| c == class.name())
                    {
                        let e = self
                            .err(
                                "dra-device-class",
                                i,
                                "/spec/pool",
                                format!(
                                    "NIM `{}` needs whole GPUs, but DRA pool `{}` offers no `{}` DeviceClass",
                                    n.name(),
                                    p.name(),
                                    class.name()
                                ),
                            )
                            .hint(format!("add `{}` to the pool's dra.deviceClasses", class.name()));
                        self.push(e);
                    }
                    let need = u64::from(n.spec.replicas)
                        .saturating_mul(u64::from(n.spec.gpus_per_replica));
                    let per_host = f
                        .members(p.name())
                        .iter()
                        .filter_map(|h| f.host(h))
                        .map(|h| h.spec.gpu.count)
                        .max()
                        .unwrap_or(0);
                    if n.spec.gpus_per_replica > per_host {
                        let e = self.err("nim-capacity", i, "/spec/gpusPerReplica", format!("NIM `{}` needs {} GPUs per replica; hosts of pool `{}` have {per_host}", n.name(), n.spec.gpus_per_replica, p.name())).hint("a replica runs on one host; multi-node NIMs are not modelled yet");
                        self.push(e);
                    } else {
                        let per = demand.entry(p.name()).or_default();
                        per.0 = per.0.saturating_add(need);
                    }
                }
            }
        }
        let mut last_nim: HashMap<&str, &NimService> = HashMap::new();
        for n in &f.nims {
            last_nim.insert(n.spec.pool.as_str(), n);
        }
        let mut demand: Vec<_> = demand.into_iter().collect();
        demand.sort_by(|a, b| a.0.cmp(b.0));
        for (pool, (gpus, mig_devices)) in demand {
            let Some(p) = f.pool(pool) else { continue };
            let cap = gpu_capacity(f, pool);
            let mig_cap = mig_capacity(f, p);
            let last = last_nim.get(pool).copied();
            if let Some(n) = last {
                if gpus > cap {
                    let e = self.err("nim-capacity", n.doc.0, "/spec/replicas", format!("NIMs on pool `{pool}` need {gpus} GPUs (replicas × gpusPerReplica); the pool has {cap}")).hint("lower replicas or add hosts to the pool");
                    self.push(e);
                }
                for (profile, need) in mig_devices {
                    // A profile the layout lacks is reported on the NIM (`nim-mig`).
                    let Some(&have) = mig_cap.get(&profile) else {
                        continue;
                    };
                    if need > have {
                        let e = self.err("nim-capacity", n.doc.0, "/spec/replicas", format!("NIMs on pool `{pool}` need {need} MIG devices of profile {profile}; the pool's layout has {have}")).hint("lower replicas or add hosts to the pool");
                        self.push(e);
                    }
                }
            }
        }
    }

    fn quotas(&mut self, f: &Fleet) {
        let mut total_quota: u64 = 0;
        let capacity: u64 = f
            .hosts
            .iter()
            .filter(|h| !h.spec.spare)
            .fold(0u64, |a, h| a.saturating_add(u64::from(h.spec.gpu.count)));
        let mut last_quota: Option<&Tenant> = None;
        let mut pools_of: HashMap<&str, Vec<&NodePool>> = HashMap::new();
        for p in &f.pools {
            pools_of.entry(p.spec.tenant.as_str()).or_default().push(p);
        }
        let mut nims_of: HashMap<&str, u32> = HashMap::new();
        for n in &f.nims {
            *nims_of.entry(n.spec.tenant.as_str()).or_default() += 1;
        }
        for t in &f.tenants {
            let i = t.doc.0;
            let pools: Vec<&NodePool> = pools_of.get(t.name()).cloned().unwrap_or_default();
            let hosts: Vec<&Host> = pools
                .iter()
                .flat_map(|p| f.members(p.name()))
                .filter_map(|h| f.host(h))
                .collect();
            let gpus: u64 = hosts
                .iter()
                .fold(0u64, |a, h| a.saturating_add(u64::from(h.spec.gpu.count)));
            if let Some(q) = t.spec.quotas.gpus {
                total_quota = total_quota.saturating_add(u64::from(q));
                last_quota = Some(t);
                if gpus > u64::from(q) {
                    let e = self
                        .err(
                            "quota-exceeded",
                            i,
                            "/spec/quotas/gpus",
                            format!(
                                "tenant `{}` has {gpus} GPUs in its pools, over its quota of {q}",
                                t.name()
                            ),
                        )
                        .hint("raise the quota or shrink the tenant's pools");
                    self.push(e);
                }
            }
            if let Some(q) = t.spec.quotas.hosts
                && hosts.len() as u64 > u64::from(q)
            {
                let e = self
                    .err(
                        "quota-exceeded",
                        i,
                        "/spec/quotas/hosts",
                        format!(
                            "tenant `{}` has {} hosts in its pools, over its quota of {q}",
                            t.name(),
                            hosts.len()
                        ),
                    )
                    .hint("raise the quota or shrink the tenant's pools");
                self.push(e);
            }
            if let Some(q) = t.spec.quotas.nims {
                let n = nims_of.get(t.name()).copied().unwrap_or(0);
                if n > q {
                    let e = self
                        .err(
                            "quota-exceeded",
                            i,
                            "/spec/quotas/nims",
                            format!("tenant `{}` runs {n} NIMs, over its quota of {q}", t.name()),
                        )
                        .hint("raise the quota or remove NIMs");
                    self.push(e);
                }
            }
            // Versions, precompiled drivers and Secure Boot against cited rows (validate/compat.rs).
            self.compat(f, t, &hosts);
        }
        if total_quota > capacity
            && let Some(t) = last_quota
        {
            let e = self.err("quota-capacity", t.doc.0, "/spec/quotas/gpus", format!("tenant GPU quotas add up to {total_quota}, more than the fleet's {capacity} non-spare GPUs")).hint("quotas are promises: keep their sum within capacity");
            self.push(e);
        }
    }
}

/// Rules of the add-ons compile/addons.rs emits (KAI queues, Kyverno policies, Karpenter).
impl Cx<'_> {
    fn addons(&mut self, f: &Fleet) {
        self.kai_queues(f);
        self.signed_images(f);
        self.karpenter_hosts(f);
    }

    /// Every queue's parent exists and is not its own ancestor; children's GPU quotas fit
    /// in their parent's (KAI gives a parent's quota out to its children).
    fn kai_queues(&mut self, f: &Fleet) {
        let Some(kai) = &f.fleet.spec.schedulers.kai else {
            return;
        };
        let i = f.fleet.doc.0;
        let by_name: HashMap<&str, (usize, &KaiQueue)> = kai
            .queues
            .iter()
            .enumerate()
            .map(|(n, q)| (q.name.as_str(), (n, q)))
            .collect();
        for (n, q) in kai.queues.iter().enumerate() {
            let Some(parent) = &q.parent else { continue };
            let ptr = format!("/spec/schedulers/kai/queues/{n}/parent");
            if !by_name.contains_key(parent.as_str()) {
                let names: Vec<&str> = kai.queues.iter().map(|q| q.name.as_str()).collect();
                let mut e = self.err(
                    "kai-queue-parent",
                    i,
                    &ptr,
                    format!(
                        "queue `{}` names parent `{parent}`, which is not a queue",
                        q.name
                    ),
                );
                e = match did_you_mean(parent, names.iter().copied()) {
                    Some(s) => e.hint(format!("did you mean `{s}`?")),
                    None => e.hint(
                        "add the parent queue, or drop `parent` to make this a top-level queue",
                    ),
                };
                self.push(e);
                continue;
            }
            // Walk up: a queue met twice is a cycle.
            let mut seen = vec![q.name.as_str()];
            let mut at = parent.as_str();
            while let Some((_, up)) = by_name.get(at) {
                if seen.contains(&at) {
                    if at == q.name {
                        let e = self
                            .err(
                                "kai-queue-parent",
                                i,
                                &ptr,
                                format!(
                                    "queue `{}` is its own ancestor ({} -> {at})",
                                    q.name,
                                    seen.join(" -> ")
                                ),
                            )
                            .hint("queues form a tree: one queue of the loop must be top-level");
                        self.push(e);
                    }
                    break;
                }
                seen.push(at);
                match &up.parent {
                    Some(p) => at = p.as_str(),
                    None => break,
                }
            }
        }
        // Children's quotas against their parent's (unlimited parents take anything).
        for parent in &kai.queues {
            let Some(limit) = parent.gpu_quota.filter(|q| *q >= 0.0) else {
                continue;
            };
            let mut sum = 0.0;
            for (n, q) in kai.queues.iter().enumerate() {
                if q.parent.as_deref() != Some(parent.name.as_str()) {
                    continue;
                }
                let quota = q.gpu_quota.unwrap_or(0.0);
                if quota < 0.0 || sum + quota > limit {
                    let what = if quota < 0.0 {
                        "an unlimited GPU quota (-1)".to_string()
                    } else {
                        format!("GPU quota {quota} (siblings before it: {sum})")
                    };
                    let e = self
                        .err(
                            "kai-queue-quota",
                            i,
                            &format!("/spec/schedulers/kai/queues/{n}/gpuQuota"),
                            format!(
                                "queue `{}` asks for {what}, past parent `{}`'s GPU quota {limit}",
                                q.name, parent.name
                            ),
                        )
                        .hint("children share their parent's quota: lower theirs, or raise the parent's (-1 = unlimited)");
                    self.push(e);
                    break;
                }
                sum += quota;
            }
        }
    }

    /// A signed-images policy has keys to verify with, and Kyverno to enforce it.
    fn signed_images(&mut self, f: &Fleet) {
        let p = &f.fleet.spec.policies;
        let Some(s) = &p.signed_images else { return };
        let i = f.fleet.doc.0;
        if s.keys.is_empty() {
            let e = self
                .err_key(
                    "signed-images",
                    i,
                    "/spec/policies/signedImages",
                    "signedImages lists no keys, so no image could ever pass verification",
                )
                .hint("add `keys: [path/to/cosign.pub]` (paths relative to the fleet directory)");
            self.push(e);
        } else if p.kyverno.is_none() {
            let e = self
                .err_key(
                    "signed-images",
                    i,
                    "/spec/policies/signedImages",
                    "signedImages is enforced by Kyverno, but `policies.kyverno` is not set",
                )
                .hint("add `policies.kyverno: {version: ...}`");
            self.push(e);
        }
    }

    /// Karpenter picks a pool's hosts, so the pool must not list them.
    fn karpenter_hosts(&mut self, f: &Fleet) {
        for p in &f.pools {
            if p.spec.autoscaling.as_ref().is_some_and(|a| a.karpenter) && !p.spec.hosts.is_empty()
            {
                let e = self
                    .err(
                        "karpenter-hosts",
                        p.doc.0,
                        "/spec/autoscaling/karpenter",
                        format!(
                            "pool {} is scaled by Karpenter but lists its hosts; a fixed list cannot grow or shrink",
                            p.name()
                        ),
                    )
                    .hint("replace `hosts` with `selector: {rack: ..., gpuModel: ..., count: N}`, or drop `karpenter`");
                self.push(e);
            }
        }
    }
}

impl Fleet {
    fn members_from<'a>(&'a self, p: &'a NodePool) -> impl Iterator<Item = &'a Host> + 'a {
        self.members(p.name()).iter().filter_map(|h| self.host(h))
    }
}

/// Whole GPUs of a pool's members (saturating).
fn gpu_capacity(f: &Fleet, pool: &str) -> u64 {
    f.members(pool)
        .iter()
        .filter_map(|h| f.host(h))
        .fold(0u64, |a, h| a.saturating_add(u64::from(h.spec.gpu.count)))
}

/// MIG devices per profile a pool offers (sum over its hosts of
/// [`sharing::mig_devices`]); empty when the pool has no MIG.
fn mig_capacity(f: &Fleet, p: &NodePool) -> BTreeMap<String, u64> {
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    let Some(GpuSharing::Mig(m)) = &p.spec.gpu_sharing else {
        return total;
    };
    for h in f.members_from(p) {
        let Some(geo) = catalog::mig(h.spec.gpu.model) else {
            continue;
        };
        for (profile, n) in sharing::mig_devices(&geo, &m.config, h.spec.gpu.count) {
            let e = total.entry(profile).or_default();
            *e = e.saturating_add(n);
        }
    }
    total
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(serde_json::Map::new());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// Parses `a.b.c.d/n` or an IPv6 CIDR into (family 4|6, network bits as u128, prefix).
/// Host bits must be zero.
pub fn parse_cidr(s: &str) -> Option<(u32, u128, u8)> {
    let (addr, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    let (fam, bits, width) = if let Ok(a) = addr.parse::<std::net::Ipv4Addr>() {
        (4, u128::from(u32::from(a)), 32u8)
    } else if let Ok(a) = addr.parse::<std::net::Ipv6Addr>() {
        (6, u128::from(a), 128u8)
    } else {
        return None;
    };
    if len > width {
        return None;
    }
    let host_bits = width - len;
    let mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    if bits & mask != 0 {
        return None;
    }
    Some((fam, bits, len))
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

// ---------------------------------------------------------------- rendering

/// Renders diagnostics as plain text with a source snippet and a caret:
///
/// ```text
/// error[unknown-reference]: pool `train` names tenant `acme-corp`, which is not defined
///   --> pools.yaml:7:11
///    |
///  7 |   tenant: acme-corp
///    |           ^
///    = field: spec.tenant
///    = hint: did you mean `acme`?
/// ```
pub fn render_text(diags: &[Diagnostic], files: &[SourceFile]) -> String {
    let by_path: HashMap<&str, &SourceFile> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut out = String::new();
    for d in diags {
        let sev = match d.severity {
            crate::diag::Severity::Error => "error",
            crate::diag::Severity::Warning => "warning",
        };
        out.push_str(&format!("{sev}[{}]: {}\n", d.code, d.summary));
        let mut gutter = 2;
        if let Some(s) = &d.span {
            let line_text = by_path
                .get(s.file.as_str())
                .and_then(|f| std::str::from_utf8(&f.bytes).ok())
                .and_then(|t| t.lines().nth(s.line.saturating_sub(1) as usize));
            let num = s.line.to_string();
            gutter = num.len() + 1;
            let pad = " ".repeat(gutter);
            out.push_str(&format!("{pad}--> {s}\n"));
            if let Some(text) = line_text {
                let text = text.trim_end_matches('\r');
                let text = mask_line(text, d.secret.then_some(s.column));
                let shown: String = text.chars().take(200).collect();
                out.push_str(&format!("{pad}|\n"));
                out.push_str(&format!("{num:>width$} | {shown}\n", width = gutter - 1));
                let caret_col = (s.column.saturating_sub(1) as usize).min(shown.chars().count());
                let lead: String = shown
                    .chars()
                    .take(caret_col)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!("{pad}| {lead}^\n"));
            }
        }
        let pad = " ".repeat(gutter);
        if let Some(f) = &d.field {
            out.push_str(&format!("{pad}= field: {f}\n"));
        }
        if let Some(h) = &d.hint {
            out.push_str(&format!("{pad}= hint: {h}\n"));
        }
        out.push('\n');
    }
    out
}

/// What a masked value is shown as.
pub const MASK: &str = "********";

/// A source line as an excerpt may show it: the scalar starting at `secret_column`
/// (1-based, when the diagnostic is about a secret) and every token that looks like
/// a credential are replaced by [`MASK`]. Text before the column is unchanged, so
/// the caret still points at the (masked) value.
pub fn mask_line(line: &str, secret_column: Option<u32>) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut k = 0;
    let start = secret_column.map(|c| (c.saturating_sub(1) as usize).min(chars.len()));
    while k < chars.len() {
        if Some(k) == start {
            // The scalar: quoted to its closing quote, plain to a flow indicator,
            // a comment or the end of the line.
            let end = match chars[k] {
                q @ ('"' | '\'') => chars[k + 1..]
                    .iter()
                    .position(|c| *c == q)
                    .map_or(chars.len(), |e| k + e + 2),
                _ => {
                    let mut e = k;
                    while e < chars.len()
                        && !matches!(chars[e], ',' | '}' | ']')
                        && !(chars[e] == '#' && e > k && chars[e - 1] == ' ')
                    {
                        e += 1;
                    }
                    while e > k && chars[e - 1] == ' ' {
                        e -= 1;
                    }
                    e
                }
            };
            out.push_str(MASK);
            k = end.max(k + 1);
            continue;
        }
        let delim =
            |c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}' | '[' | ']' | '"' | '\'');
        if delim(chars[k]) {
            out.push(chars[k]);
            k += 1;
            continue;
        }
        let mut e = k;
        while e < chars.len() && !delim(chars[e]) && Some(e) != start {
            e += 1;
        }
        let token: String = chars[k..e].iter().collect();
        if looks_like_key(&token).is_some() {
            out.push_str(MASK);
        } else {
            out.push_str(&token);
        }
        k = e;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn masked_lines_keep_the_text_before_the_value_and_hide_the_value() {
        let key = "nvapi-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        for (line, col) in [
            (format!("    apiKey: {key}"), 13),
            (format!("    apiKey: \"{key}\" # inline"), 13),
            (format!("  ngc: {{apiKey: {key}, org: x}}"), 17),
            ("      password: hunter2".to_string(), 17),
        ] {
            let m = mask_line(&line, Some(col));
            assert!(!m.contains(key) && !m.contains("hunter2"), "{m}");
            let c = col as usize - 1;
            assert_eq!(m[..c], line[..c], "{m}");
            assert!(m[c..].starts_with(MASK), "{m}");
        }
        // A key-like token is masked even where the diagnostic is about something else.
        let m = mask_line(&format!("  note: {key} # x"), None);
        assert_eq!(m, format!("  note: {MASK} # x"));
        assert_eq!(mask_line("  tenant: acme", None), "  tenant: acme");
    }

    #[test]
    fn embedded_schema_compiles() {
        let _ = schema();
    }

    #[test]
    fn cidrs_parse() {
        assert!(parse_cidr("10.0.128.0/17").is_some());
        assert!(parse_cidr("10.0.0.1/16").is_none());
        assert!(parse_cidr("fd00::/8").is_some());
        assert!(parse_cidr("0.0.0.0/0").is_some());
    }

    #[test]
    fn did_you_mean_finds_near_names() {
        assert_eq!(
            did_you_mean("acme-corp", ["acme", "acme-crop", "zeta"]),
            Some("acme-crop")
        );
        assert_eq!(did_you_mean("zzzzzz", ["acme"]), None);
    }

    #[test]
    fn field_paths_read_like_yaml() {
        assert_eq!(
            field_path("/spec/pools/0/hosts/2"),
            "spec.pools[0].hosts[2]"
        );
    }
}
