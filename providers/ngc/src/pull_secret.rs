//! Image pull secrets: the `.dockerconfigjson` content and the `kubernetes.io/dockerconfigjson`
//! Secret that carries it. The kube provider applies the Secret; `PULL_SECRET_SENSITIVE_POINTER`
//! goes into the `Desired::sensitive` list so the engine compares it by digest and renders it
//! `(sensitive)`. Rotating the key changes the content, hence an `Update` of that one field.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fleetform_contract::Sensitive;
use serde_json::json;

use crate::registry::basic_auth_value;

/// The JSON pointer of the secret field inside [`pull_secret_object`]'s Secret.
pub const PULL_SECRET_SENSITIVE_POINTER: &str = "/data/.dockerconfigjson";

/// The Secret type Kubernetes expects for image pull secrets.
pub const PULL_SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";

/// `.dockerconfigjson` content for one registry:
/// `{"auths": {"<host>": {"username", "password", "auth": base64("user:pass")}}}`.
pub fn dockerconfigjson(
    registry_host: &str,
    username: &str,
    password: &Sensitive<String>,
) -> Sensitive<String> {
    let auth = basic_auth_value(username, password);
    let doc = json!({
        "auths": {
            registry_host: {
                "username": username,
                "password": password.expose(),
                "auth": auth.expose(),
            }
        }
    });
    Sensitive::new(doc.to_string())
}

/// A `kubernetes.io/dockerconfigjson` Secret (`data` base64-encoded) for the kube provider.
/// The returned value holds the secret (base64) at [`PULL_SECRET_SENSITIVE_POINTER`]: hand it
/// only to the kube provider together with that pointer, never print it.
pub fn pull_secret_object(
    namespace: &str,
    name: &str,
    registry_host: &str,
    username: &str,
    password: &Sensitive<String>,
) -> serde_json::Value {
    let content = dockerconfigjson(registry_host, username, password);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "namespace": namespace, "name": name },
        "type": PULL_SECRET_TYPE,
        "data": { ".dockerconfigjson": STANDARD.encode(content.expose()) },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_pointer_addresses_the_secret_field() {
        let obj = pull_secret_object(
            "ns",
            "ngc",
            "nvcr.io",
            "$oauthtoken",
            &Sensitive::new("k".into()),
        );
        assert!(
            obj.pointer(PULL_SECRET_SENSITIVE_POINTER)
                .is_some_and(|v| v.is_string())
        );
        let mut masked = obj.clone();
        fleetform_contract::sensitive::mask_paths(
            &mut masked,
            &[PULL_SECRET_SENSITIVE_POINTER.to_string()],
        );
        assert_eq!(
            masked["data"][".dockerconfigjson"],
            fleetform_contract::sensitive::MASK
        );
    }
}
