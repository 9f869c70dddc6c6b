//! Kyverno `ClusterPolicy`s (`kyverno.io/v1`, cluster-scoped; CRD in `fixtures/crds/kyverno`)
//! in every tenant cluster. The Kyverno chart is a chart release (compile/charts.rs).
//!
//! - `policies.kyverno` → `fleetform-least-privilege`: the Pod Security Standards
//!   `baseline` level (no privileged containers, host namespaces, host ports, hostPath
//!   volumes or added capabilities) for Pods in every namespace but the operators' own
//!   (their pods need host access), with `failureAction` from the manifest.
//! - `policies.signedImages` → `fleetform-signed-images`: a `verifyImages` rule for the
//!   image patterns, passing when the image carries a cosign signature by any of the keys.
//!   The keys' PEM contents are read through the secret resolver (`{file: ...}` relative to
//!   the fleet directory), like every other file compile reads. validate.rs refuses a policy
//!   without keys or without `policies.kyverno`.

use serde_json::{Value, json};

use super::Cx;
use crate::diag::Diagnostic;
use crate::manifest::{FailureAction, Policies, Tenant};
use crate::secret::SecretRef;

/// `apiVersion` of Kyverno's `ClusterPolicy`.
pub const KYVERNO_API: &str = "kyverno.io/v1";

/// Namespaces whose pods legitimately need host access: the operators fleetform installs.
pub const EXEMPT_NAMESPACES: [&str; 7] = [
    "kube-system",
    "gpu-operator",
    "nvidia-network-operator",
    "dpf-operator-system",
    "nvidia-dra-driver-gpu",
    "kai-scheduler",
    "kyverno",
];

fn action(a: FailureAction) -> &'static str {
    match a {
        FailureAction::Audit => "Audit",
        FailureAction::Enforce => "Enforce",
    }
}

/// The least-privilege policy.
pub fn least_privilege(failure_action: FailureAction) -> Value {
    json!({
        "apiVersion": KYVERNO_API, "kind": "ClusterPolicy",
        "metadata": { "name": "fleetform-least-privilege" },
        "spec": {
            "background": true,
            "rules": [{
                "name": "baseline-pod-security",
                "match": { "any": [ { "resources": { "kinds": ["Pod"] } } ] },
                "exclude": { "any": [ { "resources": { "namespaces": EXEMPT_NAMESPACES } } ] },
                "validate": {
                    "failureAction": action(failure_action),
                    "podSecurity": { "level": "baseline", "version": "latest" },
                },
            }],
        },
    })
}

/// The signed-images policy for `images`, verified with the PEM public keys `keys`.
pub fn signed_images(images: &[String], keys: &[String], failure_action: FailureAction) -> Value {
    let entries: Vec<Value> = keys
        .iter()
        .map(|k| json!({ "keys": { "publicKeys": k } }))
        .collect();
    json!({
        "apiVersion": KYVERNO_API, "kind": "ClusterPolicy",
        "metadata": { "name": "fleetform-signed-images" },
        "spec": {
            "background": false,
            "webhookConfiguration": { "timeoutSeconds": 30 },
            "rules": [{
                "name": "verify-image-signatures",
                "match": { "any": [ { "resources": { "kinds": ["Pod"] } } ] },
                "verifyImages": [{
                    "imageReferences": images,
                    "failureAction": action(failure_action),
                    "attestors": [ { "count": 1, "entries": entries } ],
                }],
            }],
        },
    })
}

impl Cx<'_> {
    /// Emits the policies of `policies` into tenant cluster `tenant`.
    pub(super) fn kyverno(&mut self, tenant: &Tenant, policies: &Policies) {
        let t = tenant.name();
        let fleet = &self.fleet.fleet;
        let failure_action = policies
            .kyverno
            .as_ref()
            .map_or(FailureAction::Enforce, |k| k.failure_action);
        if policies.kyverno.is_some() {
            let o = self.origin(fleet.doc, "/spec/policies/kyverno", &fleet.origin);
            self.kube(t, least_privilege(failure_action), o);
        }
        let Some(signed) = &policies.signed_images else {
            return;
        };
        let mut keys = Vec::new();
        for (i, key) in signed.keys.iter().enumerate() {
            let pointer = format!("/spec/policies/signedImages/keys/{i}");
            match self.secrets.resolve(&SecretRef::File(key.into())) {
                Ok(pem) => keys.push(pem.expose().to_string()),
                Err(e) => {
                    // Read once per tenant, reported once.
                    let summary = format!("signed-images key: {e}");
                    if self.diags.iter().any(|d| d.summary == summary) {
                        continue;
                    }
                    let span = self.fleet.nearest_span(fleet.doc, &pointer);
                    self.diags.push(
                        Diagnostic::error("secret-unreadable", summary)
                            .at(span)
                            .field(crate::validate::field_path(&pointer))
                            .hint("the path is relative to the fleet directory and names a PEM public key (cosign.pub)"),
                    );
                }
            }
        }
        let o = self.origin(fleet.doc, "/spec/policies/signedImages", &fleet.origin);
        self.kube(t, signed_images(&signed.images, &keys, failure_action), o);
    }
}
