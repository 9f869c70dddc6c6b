//! Mapping Kubernetes API failures to transient and permanent provider errors, with messages
//! that name the cluster, the object and, when RBAC refuses, who was refused.

use std::time::Duration;

use fleetform_contract::provider::ProviderError;
use fleetform_contract::resource::ResourceId;
use kube::core::Status;

use crate::spec::ObjectRef;

/// What a failing call was about, for its message.
pub struct Context<'a> {
    /// The resource.
    pub id: &'a ResourceId,
    /// The cluster name.
    pub cluster: &'a str,
    /// The object.
    pub object: &'a ObjectRef,
    /// The verb, as RBAC names it: get, create, patch, delete.
    pub verb: &'a str,
    /// The impersonated user, when the cluster config sets one.
    pub impersonate: Option<&'a str>,
}

/// Who the cluster refused: the impersonated identity, else the user the server names.
fn who(cx: &Context<'_>, status: &Status) -> String {
    if let Some(user) = cx.impersonate {
        return match user.strip_prefix("system:serviceaccount:") {
            Some(sa) => format!("service account system:serviceaccount:{sa} (impersonated)"),
            None => format!("user {user} (impersonated)"),
        };
    }
    // The apiserver says: User "tenant-acme" cannot create resource ...
    status
        .message
        .split_once("User \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(
            || "fleetform's credentials".to_string(),
            |(user, _)| format!("user {user}"),
        )
}

/// The field managers and fields a 409 apply conflict names.
pub fn conflict_details(status: &Status) -> (Vec<String>, Vec<String>) {
    let mut managers = Vec::new();
    let mut fields = Vec::new();
    for cause in status.details.iter().flat_map(|d| &d.causes) {
        if cause.reason != "FieldManagerConflict" {
            continue;
        }
        // message: conflict with "kubectl-edit" using v1
        if let Some((_, rest)) = cause.message.split_once('"')
            && let Some((manager, _)) = rest.split_once('"')
            && !managers.iter().any(|m| m == manager)
        {
            managers.push(manager.to_string());
        }
        if !cause.field.is_empty() {
            fields.push(cause.field.clone());
        }
    }
    (managers, fields)
}

/// True when the server refused a change of an immutable field.
pub fn is_immutable(status: &Status) -> bool {
    (status.code == 422 || status.code == 400)
        && ["immutable", "may not change once set", "cannot be changed"]
            .iter()
            .any(|p| status.message.contains(p))
}

/// The fields a 422 names, as JSON pointers (`spec.selector` → `/spec/selector`).
pub fn invalid_fields(status: &Status) -> Vec<String> {
    let mut out: Vec<String> = status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .filter(|c| !c.field.is_empty())
        .map(|c| {
            let f = c.field.trim_start_matches('.');
            // Drop list indexes written as [0] into pointer segments.
            let f = f.replace('[', ".").replace(']', "");
            format!("/{}", f.replace('.', "/"))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Maps a kube client error to a provider error.
pub fn map(cx: &Context<'_>, err: kube::Error) -> ProviderError {
    let obj = cx.object.describe();
    let c = cx.cluster;
    match err {
        kube::Error::Api(status) => {
            let msg = status.message.clone();
            match status.code {
                401 => ProviderError::permanent(
                    cx.id,
                    format!(
                        "cluster {c} rejected fleetform's credentials (401 Unauthorized) while trying to {} {obj}",
                        cx.verb
                    ),
                ),
                403 => ProviderError::permanent(
                    cx.id,
                    format!(
                        "{} may not {} {} {} in cluster {c} (RBAC forbidden): {msg}",
                        who(cx, &status),
                        cx.verb,
                        cx.object.kind,
                        cx.object.name
                    ),
                ),
                404 => ProviderError::permanent(
                    cx.id,
                    format!("{obj} not found in cluster {c}: {msg}"),
                ),
                409 => {
                    let (managers, fields) = conflict_details(&status);
                    if managers.is_empty() {
                        ProviderError::transient(
                            cx.id,
                            format!(
                                "cluster {c}: {obj} changed while fleetform wrote it (409): {msg}"
                            ),
                        )
                    } else {
                        ProviderError::permanent(
                            cx.id,
                            format!(
                                "cluster {c}: {obj}: field manager(s) {} own(s) {} with other values; fleetform does not take \
                                 fields from other managers unless the manifest sets force: true (or drop the fields from the manifest)",
                                managers.join(", "),
                                fields.join(", ")
                            ),
                        )
                    }
                }
                400 | 422 => {
                    ProviderError::permanent(cx.id, format!("cluster {c} rejected {obj}: {msg}"))
                }
                // Server-side apply answers a value of the wrong type (against the CRD or built-in
                // schema) with a 500 "failed to create typed patch object": the object is invalid
                // and retrying cannot help.
                500 if msg.contains("failed to create typed patch object") => {
                    ProviderError::permanent(cx.id, format!("cluster {c} rejected {obj}: {msg}"))
                }
                429 => {
                    let e = ProviderError::transient(
                        cx.id,
                        format!("cluster {c} is throttling requests (429): {msg}"),
                    );
                    match status
                        .details
                        .as_ref()
                        .map(|d| d.retry_after_seconds)
                        .filter(|s| *s > 0)
                    {
                        Some(s) => e.with_retry_after(Duration::from_secs(u64::from(s))),
                        None => e,
                    }
                }
                code if code >= 500 => {
                    let e = ProviderError::transient(
                        cx.id,
                        format!("cluster {c} failed to {} {obj} ({code}): {msg}", cx.verb),
                    );
                    match status
                        .details
                        .as_ref()
                        .map(|d| d.retry_after_seconds)
                        .filter(|s| *s > 0)
                    {
                        Some(s) => e.with_retry_after(Duration::from_secs(u64::from(s))),
                        None => e,
                    }
                }
                code => ProviderError::permanent(
                    cx.id,
                    format!("cluster {c} refused to {} {obj} ({code}): {msg}", cx.verb),
                ),
            }
        }
        e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => ProviderError::transient(
            cx.id,
            format!("cannot reach cluster {c} to {} {obj}", cx.verb),
        )
        .with_source(e),
        e => ProviderError::permanent(cx.id, format!("talking to cluster {c} about {obj} failed"))
            .with_source(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str, causes: serde_json::Value) -> Status {
        serde_json::from_value(serde_json::json!({
            "code": code, "message": message, "details": {"causes": causes, "retryAfterSeconds": 3}
        }))
        .unwrap()
    }

    #[test]
    fn conflicts_name_the_other_managers_and_fields() {
        let s = status(
            409,
            "Apply failed with 1 conflict",
            serde_json::json!([
                {"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-edit\" using v1", "field": ".data.k"}
            ]),
        );
        assert_eq!(
            conflict_details(&s),
            (
                vec!["kubectl-edit".to_string()],
                vec![".data.k".to_string()]
            )
        );
    }

    #[test]
    fn throttling_is_transient_with_the_servers_delay() {
        let id = ResourceId::new("kube", "a/v1/ConfigMap/n/c");
        let object = ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("n".into()),
            name: "c".into(),
        };
        let cx = Context {
            id: &id,
            cluster: "a",
            object: &object,
            verb: "get",
            impersonate: None,
        };
        let e = map(
            &cx,
            kube::Error::Api(Box::new(status(429, "slow down", serde_json::json!([])))),
        );
        assert!(e.is_transient());
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        let e = map(
            &cx,
            kube::Error::Api(Box::new(status(
                403,
                "User \"tenant-acme\" cannot get",
                serde_json::json!([]),
            ))),
        );
        assert!(!e.is_transient());
        assert!(
            e.message
                .contains("user tenant-acme may not get ConfigMap c in cluster a (RBAC forbidden)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn immutable_field_paths_become_pointers() {
        let s = status(
            422,
            "Deployment.apps \"x\" is invalid: spec.selector: Invalid value: field is immutable",
            serde_json::json!([{"reason": "FieldValueInvalid", "field": "spec.selector"}]),
        );
        assert!(is_immutable(&s));
        assert_eq!(invalid_fields(&s), ["/spec/selector"]);
    }
}
