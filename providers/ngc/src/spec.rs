//! The specs of the ngc provider's resources and their addresses.
//!
//! - `ngc:image/<tenant>/<registry-host>/<repository>:<tag>`: an image tag, resolved to a
//!   digest ([`ImageSpec`]). A data resource: it is observed, never created.
//! - `ngc:access/<tenant>/<registry-host>`: a tenant's credentials can pull a list of images
//!   ([`AccessSpec`]).

use std::path::PathBuf;

use fleetform_contract::ResourceId;
use fleetform_contract::secret::SecretRef;
use serde::{Deserialize, Serialize};

/// The provider name: the address prefix it owns.
pub const PROVIDER: &str = "ngc";

/// Where a registry is and how to reach it.
///
/// ```yaml
/// registry: { endpoint: https://nvcr.io }
/// registry: { endpoint: http://127.0.0.1:5000 }
/// registry: { endpoint: https://registry.lab:5443, caBundle: certs/lab-ca.pem }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrySpec {
    /// `https://host[:port]`, or `http://host[:port]` (plain HTTP is accepted for loopback
    /// hosts; for any other host it needs `insecure: true`, as credentials travel in clear).
    pub endpoint: String,
    /// Skip TLS certificate verification (https) / allow plain HTTP to a non-loopback host.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// PEM bundle of extra CA certificates trusted for this registry (added to the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
}

impl RegistrySpec {
    /// The registry for an endpoint, with default TLS settings.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            insecure: false,
            ca_bundle: None,
        }
    }

    /// Splits the endpoint into scheme (`http`/`https`) and host (`host[:port]`), checking it.
    pub fn parse_endpoint(&self) -> Result<(&str, &str), String> {
        let e = self.endpoint.trim_end_matches('/');
        let (scheme, host) = if let Some(h) = e.strip_prefix("https://") {
            ("https", h)
        } else if let Some(h) = e.strip_prefix("http://") {
            ("http", h)
        } else {
            return Err(format!(
                "registry endpoint `{}` must start with https:// or http://, e.g. https://nvcr.io",
                self.endpoint
            ));
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return Err(format!(
                "registry endpoint `{}` must be scheme://host[:port] with no path or user, e.g. https://nvcr.io",
                self.endpoint
            ));
        }
        if scheme == "http" && !self.insecure && !is_loopback(host) {
            return Err(format!(
                "registry endpoint `{}` is plain HTTP to a non-loopback host: use https, or set insecure: true",
                self.endpoint
            ));
        }
        Ok((scheme, host))
    }

    /// The `host[:port]` of the endpoint (as used in addresses and `.dockerconfigjson`).
    pub fn host(&self) -> Result<&str, String> {
        self.parse_endpoint().map(|(_, h)| h)
    }
}

fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) && !n.ends_with(':') => n,
        _ => host,
    };
    matches!(name, "localhost" | "[::1]") || name.starts_with("127.")
}

/// Credentials for a registry: for NGC the username is the literal `$oauthtoken` and the
/// password an NGC API key, given as a secret reference (never inline).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credentials {
    /// The username (`$oauthtoken` for nvcr.io).
    pub username: String,
    /// Where the password / API key lives: `{env: NGC_API_KEY}`, `{file: ...}`, `{secret: {...}}`.
    pub password: SecretRef,
}

/// `ngc:image/<tenant>/<registry-host>/<repository>:<tag>`: one image tag, resolved to a digest.
///
/// ```yaml
/// tenant: acme
/// registry: { endpoint: https://nvcr.io }
/// repository: nvidia/gpu-operator
/// tag: v25.3.0
/// credentials: { username: $oauthtoken, password: { env: NGC_API_KEY } }   # or null
/// ```
/// Observed state: `{ digest: "sha256:..." }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSpec {
    /// The tenant whose credentials are used (part of the address and of every error).
    pub tenant: String,
    /// The registry.
    pub registry: RegistrySpec,
    /// Repository inside the registry, e.g. `nvidia/gpu-operator`.
    pub repository: String,
    /// The tag to resolve, or a digest (`sha256:<64 hex>`) to check exists: a reference the
    /// manifest pinned.
    pub tag: String,
    /// Pull credentials; `null` for anonymous pulls.
    #[serde(default)]
    pub credentials: Option<Credentials>,
}

impl ImageSpec {
    /// The resource address of this image.
    pub fn id(&self) -> Result<ResourceId, String> {
        let host = self.registry.host()?;
        Ok(ResourceId::new(
            PROVIDER,
            format!(
                "image/{}/{host}/{}:{}",
                self.tenant, self.repository, self.tag
            ),
        ))
    }

    /// `host/repository:tag` (or `@digest`), as a person would type it for `docker pull`.
    pub fn reference(&self) -> String {
        let host = self.registry.host().unwrap_or(&self.registry.endpoint);
        let at = if self.tag.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        format!("{host}/{}{at}{}", self.repository, self.tag)
    }

    /// Checks the fields that the registry would otherwise reject with a less clear message.
    pub fn validate(&self) -> Result<(), String> {
        self.registry.parse_endpoint()?;
        check_tenant(&self.tenant)?;
        check_repository(&self.repository)?;
        if self.tag.starts_with("sha256:") {
            check_digest(&self.tag)
        } else {
            check_tag(&self.tag)
        }
    }
}

/// `ngc:access/<tenant>/<registry-host>`: the tenant's credentials can pull every listed image.
///
/// ```yaml
/// tenant: acme
/// registry: { endpoint: https://nvcr.io }
/// credentials: { username: $oauthtoken, password: { secret: { namespace: fleet, name: ngc, key: apiKey } } }
/// images: [nvidia/gpu-operator:v25.3.0, nvidia/k8s/dcgm-exporter:4.2.3-4.1.3-ubuntu22.04]
/// ```
/// Observed state: `{ images: { "<repository>:<tag>": "sha256:..." } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessSpec {
    /// The tenant whose credentials are checked.
    pub tenant: String,
    /// The registry.
    pub registry: RegistrySpec,
    /// Pull credentials; `null` checks anonymous access.
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// `repository:tag` entries the tenant must be able to pull.
    pub images: Vec<String>,
}

impl AccessSpec {
    /// The resource address of this access check.
    pub fn id(&self) -> Result<ResourceId, String> {
        let host = self.registry.host()?;
        Ok(ResourceId::new(
            PROVIDER,
            format!("access/{}/{host}", self.tenant),
        ))
    }

    /// The images as (repository, tag) pairs, checked.
    pub fn image_refs(&self) -> Result<Vec<(String, String)>, String> {
        self.images
            .iter()
            .map(|i| {
                // The tag follows the last ':' that comes after the last '/'.
                let slash = i.rfind('/').map_or(0, |p| p + 1);
                let Some(colon) = i[slash..].rfind(':').map(|c| c + slash) else {
                    return Err(format!(
                        "image `{i}` must be repository:tag, e.g. nvidia/gpu-operator:v25.3.0"
                    ));
                };
                let (repo, tag) = (&i[..colon], &i[colon + 1..]);
                check_repository(repo)?;
                check_tag(tag)?;
                Ok((repo.to_string(), tag.to_string()))
            })
            .collect()
    }

    /// Checks the spec.
    pub fn validate(&self) -> Result<(), String> {
        self.registry.parse_endpoint()?;
        check_tenant(&self.tenant)?;
        if self.images.is_empty() {
            return Err("images must list at least one repository:tag".into());
        }
        self.image_refs().map(|_| ())
    }
}

fn check_tenant(t: &str) -> Result<(), String> {
    if t.is_empty() || t.contains(['/', ':', ' ']) {
        return Err(format!(
            "tenant `{t}` must be a non-empty name without '/', ':' or spaces"
        ));
    }
    Ok(())
}

/// Repository names per the OCI distribution spec: lowercase path components.
fn check_repository(r: &str) -> Result<(), String> {
    let ok = !r.is_empty()
        && r.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "repository `{r}` is not a valid OCI repository name (lowercase a-z0-9._- components separated by /)"
        ))
    }
}

fn check_digest(d: &str) -> Result<(), String> {
    let hex = d.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() == 64
        && hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Ok(())
    } else {
        Err(format!(
            "digest `{d}` is not a sha256 digest (sha256: and 64 lowercase hex digits)"
        ))
    }
}

fn check_tag(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag `{t}` is not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})"
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn image_address_has_tenant_host_repository_and_tag() {
        let spec: ImageSpec = serde_json::from_value(serde_json::json!({
            "tenant": "acme", "registry": {"endpoint": "https://nvcr.io"},
            "repository": "nvidia/gpu-operator", "tag": "v25.3.0", "credentials": null
        }))
        .unwrap();
        assert_eq!(
            spec.id().unwrap().as_str(),
            "ngc:image/acme/nvcr.io/nvidia/gpu-operator:v25.3.0"
        );
        spec.validate().unwrap();
    }

    #[test]
    fn access_images_split_on_the_tag_colon_not_the_port() {
        let spec: AccessSpec = serde_json::from_value(serde_json::json!({
            "tenant": "acme", "registry": {"endpoint": "http://127.0.0.1:5000"}, "credentials": null,
            "images": ["acme/train:v1", "acme/a/b:2.0"]
        }))
        .unwrap();
        assert_eq!(
            spec.id().unwrap().as_str(),
            "ngc:access/acme/127.0.0.1:5000"
        );
        assert_eq!(
            spec.image_refs().unwrap(),
            vec![
                ("acme/train".into(), "v1".into()),
                ("acme/a/b".into(), "2.0".into())
            ]
        );
    }

    #[test]
    fn plain_http_to_a_remote_host_needs_insecure() {
        let err = RegistrySpec::new("http://registry.example:5000")
            .parse_endpoint()
            .unwrap_err();
        assert!(err.contains("insecure: true"), "{err}");
        assert!(
            RegistrySpec::new("http://localhost:5000")
                .parse_endpoint()
                .is_ok()
        );
        assert!(RegistrySpec::new("nvcr.io").parse_endpoint().is_err());
    }

    #[test]
    fn credentials_take_a_secret_reference_not_a_value() {
        let c: Credentials = serde_json::from_value(
            serde_json::json!({"username": "$oauthtoken", "password": {"env": "NGC_API_KEY"}}),
        )
        .unwrap();
        assert_eq!(c.password, SecretRef::Env("NGC_API_KEY".into()));
        assert!(
            serde_json::from_value::<Credentials>(
                serde_json::json!({"username": "u", "password": "inline"})
            )
            .is_err()
        );
    }
}
