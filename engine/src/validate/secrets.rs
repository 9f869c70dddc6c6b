//! Secrets where references belong: inline values at the secret fields, and key-looking
//! literals anywhere in a document (checked before the schema, whose errors they explain).

use std::collections::HashSet;

use serde_json::Value;

use super::Cx;
use crate::load::escape_segment;

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
pub(super) fn looks_like_key(s: &str) -> Option<&'static str> {
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
    /// Inline secrets where references belong, and key-looking literals anywhere.
    /// Returns (doc, pointer) pairs whose schema errors are already explained.
    pub(super) fn secrets(&mut self) -> HashSet<(usize, String)> {
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
}
