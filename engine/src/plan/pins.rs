//! Digest pinning (`registries.pinDigests`): before the objects that name an
//! image are observed and diffed, each [`Pin`] of their desired spec gets the
//! digest its `ngc:image/...` resource resolved to appended (`1.3.3` becomes
//! `1.3.3@sha256:...`). The pinned spec is what is observed (a Kubernetes
//! dry-run), diffed, shown in the plan, applied and recorded, so a tag that
//! moves upstream reaches a cluster only as a planned update of that field.
//! Pure: values in, values out.

use std::collections::{BTreeMap, BTreeSet};

use crate::observe::Observations;
use crate::provider::ProviderError;
use crate::resource::{Desired, Pin, ResourceId};

/// The digests a plan pinned, per resource and field, so that apply pins the
/// specs it is handed exactly as the plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pinned {
    digests: BTreeMap<ResourceId, Vec<(String, String)>>,
}

impl Pinned {
    /// True when nothing was pinned.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// `plan_digest` folded with every pinned digest, so that a saved plan is refused once
    /// a tag moved even where the field diff does not show it (a create shows its spec,
    /// which the plan digest does not cover). Unchanged when nothing was pinned.
    pub fn seal(&self, plan_digest: &str) -> String {
        if self.is_empty() {
            return plan_digest.to_string();
        }
        let bytes = serde_json::to_vec(&(plan_digest, self)).unwrap_or_default();
        crate::sensitive::digest_bytes(&bytes)
    }

    /// The digest pinned into `path` of `id`, if any.
    pub fn digest(&self, id: &ResourceId, path: &str) -> Option<&str> {
        self.digests
            .get(id)?
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, d)| d.as_str())
    }

    /// A copy of `d` with the recorded digests substituted, or `None` when
    /// nothing of `d` was pinned. A field that is missing or not a string is
    /// left alone (resolve already refused it).
    pub fn apply(&self, d: &Desired) -> Option<Desired> {
        let fields = self.digests.get(&d.id)?;
        let mut out = d.clone();
        for (path, digest) in fields {
            let _ = substitute(&mut out.spec, path, digest);
        }
        Some(out)
    }
}

/// The images the pins of `desired` need observed first, deduplicated.
pub fn images<'a>(desired: &[&'a Desired]) -> BTreeSet<&'a ResourceId> {
    desired
        .iter()
        .flat_map(|d| d.pins.iter().map(|p| &p.image))
        .collect()
}

/// Resolves every pin of `desired` against the images' observations. A
/// resource with a pin that cannot be resolved is returned as an error for
/// that resource (naming the image and the manifest line) and is left out of
/// [`Pinned`]: it must never be applied unpinned.
pub fn resolve(
    desired: &[&Desired],
    observations: &Observations,
) -> (Pinned, Vec<(ResourceId, ProviderError)>) {
    let mut pinned = Pinned::default();
    let mut failed = Vec::new();
    for d in desired.iter().filter(|d| !d.pins.is_empty()) {
        let mut spec = d.spec.clone();
        let mut fields = Vec::new();
        let mut error = None;
        for pin in &d.pins {
            let result = digest_of(pin, observations)
                .and_then(|digest| substitute(&mut spec, &pin.path, &digest).map(|()| digest));
            match result {
                Ok(digest) => fields.push((pin.path.clone(), digest)),
                Err((why, transient)) => {
                    let at = pin
                        .origin
                        .as_ref()
                        .map(|o| format!(" (named at {o})"))
                        .unwrap_or_default();
                    let message = format!(
                        "cannot pin {} to the digest of {}{at}: {why}",
                        pin.path, pin.image
                    );
                    error = Some(if transient {
                        ProviderError::transient(&d.id, message)
                    } else {
                        ProviderError::permanent(&d.id, message)
                    });
                    break;
                }
            }
        }
        match error {
            Some(e) => failed.push((d.id.clone(), e)),
            None => {
                pinned.digests.insert(d.id.clone(), fields);
            }
        }
    }
    (pinned, failed)
}

/// The digest the pin's image was observed at, or why there is none (and
/// whether retrying may help).
fn digest_of(pin: &Pin, observations: &Observations) -> Result<String, (String, bool)> {
    let observed = match observations.get(&pin.image) {
        Some(Ok(Some(o))) => o,
        Some(Ok(None)) => return Err(("the image was not found".into(), false)),
        Some(Err(e)) => {
            return Err((
                format!("it did not resolve: {}", crate::plan::error_chain(e)),
                e.is_transient(),
            ));
        }
        None => return Err(("the image was not observed".into(), false)),
    };
    let digest = observed
        .state
        .get("digest")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    if !is_digest(digest) {
        return Err((
            format!("its observed state has no digest (`algorithm:hex`), got {digest:?}"),
            false,
        ));
    }
    Ok(digest.to_string())
}

/// `sha256:<hex>` and the like (OCI `algorithm:encoded`).
fn is_digest(s: &str) -> bool {
    s.split_once(':').is_some_and(|(alg, hex)| {
        !alg.is_empty()
            && alg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
            && hex.len() >= 32
            && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// Appends `@digest` to the string at `path`, replacing a digest already there
/// (so pinning twice is the same as pinning once).
fn substitute(
    spec: &mut serde_json::Value,
    path: &str,
    digest: &str,
) -> Result<(), (String, bool)> {
    let Some(serde_json::Value::String(s)) = spec.pointer_mut(path) else {
        return Err((format!("the spec has no string at {path}"), false));
    };
    let base = s.split_once('@').map_or(s.as_str(), |(b, _)| b);
    *s = format!("{base}@{digest}");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::provider::Observed;
    use crate::resource::Origin;
    use serde_json::json;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn image() -> ResourceId {
        ResourceId::new("ngc", "image/acme/nvcr.io/nim/llama:1.3.3")
    }

    fn nim() -> Desired {
        let mut d = Desired::new(
            ResourceId::new("kube", "acme/apps.nvidia.com/v1alpha1/NIMService/nim/llama"),
            json!({"object": {"spec": {"image": {"repository": "nvcr.io/nim/llama", "tag": "1.3.3"}}}}),
        );
        d.pins.push(Pin {
            path: "/object/spec/image/tag".into(),
            image: image(),
            origin: Some(Origin {
                file: "nims.yaml".into(),
                line: 7,
                column: 10,
            }),
        });
        d
    }

    fn seen(state: serde_json::Value) -> Observations {
        let mut o = Observations::new();
        o.insert(
            image(),
            Ok(Some(Observed {
                id: image(),
                state,
                private: None,
            })),
        );
        o
    }

    #[test]
    fn a_pinned_tag_gets_the_observed_digest_appended() {
        let d = nim();
        let (pinned, failed) = resolve(&[&d], &seen(json!({ "digest": DIGEST })));
        assert!(failed.is_empty(), "{failed:?}");
        let out = pinned.apply(&d).expect("present");
        assert_eq!(
            out.spec.pointer("/object/spec/image/tag").expect("present"),
            &json!(format!("1.3.3@{DIGEST}"))
        );
        // Pinning an already pinned spec replaces the digest instead of stacking a second one.
        assert_eq!(pinned.apply(&out).expect("present"), out);
    }

    #[test]
    fn an_image_that_did_not_resolve_fails_the_pinned_resource_naming_image_and_line() {
        let d = nim();
        let mut o = Observations::new();
        o.insert(
            image(),
            Err(ProviderError::transient(
                &image(),
                "registry answered HTTP 503",
            )),
        );
        let (pinned, failed) = resolve(&[&d], &o);
        assert!(pinned.is_empty());
        let (id, e) = &failed[0];
        assert_eq!(id, &d.id);
        let msg = e.to_string();
        assert!(msg.contains(image().as_str()), "{msg}");
        assert!(msg.contains("nims.yaml:7:10"), "{msg}");
        assert!(msg.contains("HTTP 503"), "{msg}");
        assert!(e.is_transient());
    }

    #[test]
    fn an_observed_state_without_a_digest_is_refused_not_pinned_with_garbage() {
        let d = nim();
        let (pinned, failed) = resolve(&[&d], &seen(json!({ "digest": "latest" })));
        assert!(pinned.is_empty());
        assert!(failed[0].1.to_string().contains("no digest"));
        let (_, failed) = resolve(&[&d], &Observations::new());
        assert!(failed[0].1.to_string().contains("not observed"));
    }
}
