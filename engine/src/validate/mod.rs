//! Validate: takes the loaded documents, gives a typed, resolved [`Fleet`] or every
//! problem found, located (file:line:col from the loader's spans) and sorted.
//!
//! The pipeline, in order: secrets (secrets.rs) and the JSON Schema (schema.rs); the typed
//! model (typed.rs); resolve (resolve.rs: merged operators and pool membership, stored in
//! the fleet); then the rules (rules/*.rs), which only read. Structural problems (secrets,
//! schema, types) are reported first and alone: the semantic rules run once every document
//! has its typed form, so a typo in one host does not cascade into "unknown host" errors
//! elsewhere.
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

use crate::diag::Diagnostic;
use crate::load::Document;
use crate::manifest::Fleet;

mod render;
mod resolve;
mod rules;
mod schema;
mod secrets;
mod suggest;
mod typed;
mod warnings;

pub use render::{MASK, field_path, mask_line, render_text};
pub use rules::parse_cidr;
pub use schema::SCHEMA_JSON;
pub use suggest::did_you_mean;
pub use warnings::warnings;

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
    // Resolve before any rule, so every rule reads the same effective operators and
    // membership and none depends on running after another.
    let resolved = cx.resolve(&fleet);
    fleet.tenant_operators = resolved.tenant_operators;
    fleet.pool_members = resolved.pool_members;
    cx.rules(&fleet);
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

/// The validation context: the documents, and the diagnostics found so far.
struct Cx<'a> {
    docs: &'a [Document],
    diags: Vec<Diagnostic>,
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
}
