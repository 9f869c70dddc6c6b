//! The `ngc` provider: observe images (tag -> digest) and tenants' pull access.
//! Both resources are data: they are observed and checked, never created or changed.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use fleetform_contract::provider::{ApplyRequest, ErrorKind};
use fleetform_contract::secret::SecretResolver;
use fleetform_contract::{
    Action, Applied, ApplyContext, Change, Desired, ObserveRequest, Observed, Provider,
    ProviderError, ResourceId,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::registry::{
    BasicCredentials, MAX_CONCURRENT_PER_REGISTRY, RegistryClient, RegistryError,
};
use crate::spec::{AccessSpec, Credentials, ImageSpec, PROVIDER, RegistrySpec};

/// The two kinds of resource, told apart by the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Access,
}

fn kind_of(id: &ResourceId) -> Result<Kind, ProviderError> {
    match id.path().split_once('/') {
        Some(("image", _)) => Ok(Kind::Image),
        Some(("access", _)) => Ok(Kind::Access),
        _ => Err(ProviderError::permanent(
            id,
            "not an ngc address: expected ngc:image/<tenant>/<registry-host>/<repository>:<tag> \
             or ngc:access/<tenant>/<registry-host>",
        )),
    }
}

fn parse_spec<T: DeserializeOwned>(
    id: &ResourceId,
    spec: &serde_json::Value,
) -> Result<T, ProviderError> {
    // serde's message names the field, never a value worth hiding (credentials are references).
    serde_json::from_value(spec.clone())
        .map_err(|e| ProviderError::permanent(id, format!("invalid spec: {e}")))
}

fn check_id(id: &ResourceId, expected: Result<ResourceId, String>) -> Result<(), ProviderError> {
    let expected =
        expected.map_err(|e| ProviderError::permanent(id, format!("invalid spec: {e}")))?;
    if &expected != id {
        return Err(ProviderError::permanent(
            id,
            format!("address does not match its spec: the spec describes {expected}"),
        ));
    }
    Ok(())
}

/// What a registry error means for one image of one tenant, in words a person can act on.
/// Never includes a credential: `RegistryError` holds none.
fn image_error(
    id: &ResourceId,
    e: RegistryError,
    tenant: &str,
    host: &str,
    repository: &str,
    tag: &str,
    has_credentials: bool,
) -> ProviderError {
    let reference = format!("{host}/{repository}:{tag}");
    match e {
        RegistryError::NotFound => ProviderError::permanent(
            id,
            format!("image {reference} not found in {host} (tag {tag})"),
        ),
        RegistryError::Unauthorized(why) => ProviderError::permanent(
            id,
            format!("registry {host} rejected the credentials of tenant {tenant}: {why}"),
        ),
        // An anonymous token is refused the same way: say that there were no credentials.
        RegistryError::InsufficientScope if !has_credentials => ProviderError::permanent(
            id,
            format!(
                "tenant {tenant} may not pull repository {repository} from registry {host} \
                 (insufficient_scope: the tenant has no registry credentials; \
                 give it `ngc.apiKey`)"
            ),
        ),
        RegistryError::InsufficientScope => ProviderError::permanent(
            id,
            format!(
                "tenant {tenant} may not pull repository {repository} from registry {host} \
                 (insufficient_scope: the tenant's credentials do not grant pull on it)"
            ),
        ),
        RegistryError::Rejected { status: 403 } => ProviderError::permanent(
            id,
            format!(
                "registry {host} denied tenant {tenant} access to repository {repository} (HTTP 403)"
            ),
        ),
        RegistryError::Rejected { status } => ProviderError::permanent(
            id,
            format!("registry {host} answered HTTP {status} for {reference}"),
        ),
        RegistryError::Invalid(m) => ProviderError::permanent(id, format!("registry {host}: {m}")),
        RegistryError::Transient {
            what,
            retry_after,
            source,
        } => {
            let mut err = ProviderError::transient(
                id,
                format!("registry {host}: {what} (resolving {reference})"),
            );
            err.retry_after = retry_after;
            if let Some(s) = source {
                err = err.with_source(s);
            }
            err
        }
    }
}

/// The ngc provider. Holds one registry client per (registry, tenant, credentials) so tokens
/// are never shared between tenants, and one concurrency limit per registry endpoint.
pub struct NgcProvider {
    secrets: Arc<dyn SecretResolver>,
    clients: std::sync::Mutex<HashMap<String, Arc<RegistryClient>>>,
    limits: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl std::fmt::Debug for NgcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.clients.lock().map_or(0, |c| c.len());
        f.debug_struct("NgcProvider")
            .field("clients", &n)
            .finish_non_exhaustive()
    }
}

impl NgcProvider {
    /// A provider that resolves credential references through `secrets`.
    pub fn new(secrets: Arc<dyn SecretResolver>) -> Self {
        Self {
            secrets,
            clients: Default::default(),
            limits: Default::default(),
        }
    }

    /// The client for `tenant` on `registry`, resolving the credentials now (so a rotated key
    /// is picked up on the next observe).
    fn client(
        &self,
        id: &ResourceId,
        tenant: &str,
        registry: &RegistrySpec,
        credentials: Option<&Credentials>,
    ) -> Result<Arc<RegistryClient>, ProviderError> {
        let creds = match credentials {
            None => None,
            Some(c) => {
                let password = self.secrets.resolve(&c.password).map_err(|e| {
                    ProviderError::permanent(id, format!("credentials of tenant {tenant}: {e}"))
                })?;
                Some(BasicCredentials {
                    username: c.username.clone(),
                    password,
                })
            }
        };
        let key = format!(
            "{}|{}|{:?}|{tenant}|{}",
            registry.endpoint,
            registry.insecure,
            registry.ca_bundle,
            creds.as_ref().map_or_else(String::new, |c| format!(
                "{}|{}",
                c.username,
                c.password.digest()
            )),
        );
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let limit = self
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(registry.endpoint.trim_end_matches('/').to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_CONCURRENT_PER_REGISTRY)))
            .clone();
        let host = registry.host().unwrap_or(&registry.endpoint).to_string();
        let client = Arc::new(
            RegistryClient::new(registry, creds, limit)
                .map_err(|e| ProviderError::permanent(id, format!("registry {host}: {e}")))?,
        );
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Resolves an image spec's tag to its manifest digest (`sha256:...`), e.g. to pin it.
    pub async fn resolve_digest(&self, spec: &ImageSpec) -> Result<String, ProviderError> {
        let id = spec
            .id()
            .map_err(|e| ProviderError::permanent(&ResourceId::new(PROVIDER, "image"), e))?;
        spec.validate()
            .map_err(|e| ProviderError::permanent(&id, format!("invalid spec: {e}")))?;
        let client = self.client(&id, &spec.tenant, &spec.registry, spec.credentials.as_ref())?;
        client
            .resolve_digest(&spec.repository, &spec.tag)
            .await
            .map_err(|e| {
                image_error(
                    &id,
                    e,
                    &spec.tenant,
                    client.host(),
                    &spec.repository,
                    &spec.tag,
                    spec.credentials.is_some(),
                )
            })
    }

    async fn observe_image(
        &self,
        id: &ResourceId,
        spec: &serde_json::Value,
    ) -> Result<Option<Observed>, ProviderError> {
        let spec: ImageSpec = parse_spec(id, spec)?;
        check_id(id, spec.id())?;
        let digest = self.resolve_digest(&spec).await?;
        Ok(Some(Observed {
            id: id.clone(),
            state: json!({ "digest": digest }),
            private: None,
        }))
    }

    async fn observe_access(
        &self,
        id: &ResourceId,
        spec: &serde_json::Value,
    ) -> Result<Option<Observed>, ProviderError> {
        let spec: AccessSpec = parse_spec(id, spec)?;
        check_id(id, spec.id())?;
        spec.validate()
            .map_err(|e| ProviderError::permanent(id, format!("invalid spec: {e}")))?;
        let refs = spec
            .image_refs()
            .map_err(|e| ProviderError::permanent(id, format!("invalid spec: {e}")))?;
        let client = self.client(id, &spec.tenant, &spec.registry, spec.credentials.as_ref())?;
        let tenant = spec.tenant.as_str();
        let has_credentials = spec.credentials.is_some();
        let results = futures::future::join_all(refs.iter().map(|(repo, tag)| {
            let client = client.clone();
            async move {
                client
                    .resolve_digest(repo, tag)
                    .await
                    .map(|d| (format!("{repo}:{tag}"), d))
                    .map_err(|e| {
                        image_error(id, e, tenant, client.host(), repo, tag, has_credentials)
                    })
            }
        }))
        .await;
        let mut images = serde_json::Map::new();
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok((image, digest)) => {
                    images.insert(image, json!(digest));
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            return Ok(Some(Observed {
                id: id.clone(),
                state: json!({ "images": images }),
                private: None,
            }));
        }
        // One error for the resource: permanent if any image's is, listing every failure.
        let kind = if errors.iter().any(|e| e.kind == ErrorKind::Permanent) {
            ErrorKind::Permanent
        } else {
            ErrorKind::Transient
        };
        let retry_after = errors.iter().filter_map(|e| e.retry_after).max();
        // Bad credentials fail every image the same way: say it once.
        let mut messages: Vec<&str> = Vec::new();
        for e in &errors {
            if !messages.contains(&e.message.as_str()) {
                messages.push(&e.message);
            }
        }
        let message = messages.join("; ");
        let mut err = match kind {
            ErrorKind::Permanent => ProviderError::permanent(id, message),
            ErrorKind::Transient => ProviderError::transient(id, message),
        };
        err.retry_after = retry_after;
        Err(err)
    }
}

/// Resolves `spec`'s tag to a manifest digest with a one-off client (for the engine or CLI to
/// pin digests outside a provider run). Errors are the provider's: permanent for a missing
/// tag or refused credentials, transient for 5xx/429/connection failures.
pub async fn resolve_digest(
    spec: &ImageSpec,
    secrets: Arc<dyn SecretResolver>,
) -> Result<String, ProviderError> {
    NgcProvider::new(secrets).resolve_digest(spec).await
}

#[async_trait]
impl Provider for NgcProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn observe(
        &self,
        requests: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>> {
        futures::future::join_all(requests.iter().map(|r| async move {
            match kind_of(r.id)? {
                Kind::Image => self.observe_image(r.id, r.spec).await,
                Kind::Access => self.observe_access(r.id, r.spec).await,
            }
        }))
        .await
    }

    fn diff(
        &self,
        desired: &Desired,
        observed: Option<&Observed>,
    ) -> Result<Change, ProviderError> {
        let kind = kind_of(&desired.id)?;
        match observed {
            // A data resource: when it can be observed there is nothing to change; the digest
            // (or the per-image digests) rides along in `observed.state` for the plan to show.
            Some(_) => Ok(Change::new(desired.id.clone(), Action::NoOp)),
            None => Err(ProviderError::permanent(
                &desired.id,
                match kind {
                    Kind::Image => {
                        "the image was not observed: ngc images are read-only and cannot be created"
                    }
                    Kind::Access => {
                        "pull access was not observed: ngc access checks cannot be created"
                    }
                },
            )),
        }
    }

    async fn apply(
        &self,
        request: &ApplyRequest<'_>,
        _cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        let id = &request.change.id;
        kind_of(id)?;
        match request.change.action {
            Action::NoOp => Ok(Applied {
                id: id.clone(),
                spec: request
                    .desired
                    .map_or(serde_json::Value::Null, |d| d.spec.clone()),
            }),
            // Forgetting a data resource touches nothing in the registry.
            Action::Delete => Ok(Applied {
                id: id.clone(),
                spec: request
                    .last_applied
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
            }),
            a => Err(ProviderError::permanent(
                id,
                format!(
                    "ngc resources are read-only: cannot {a:?} (push the image or fix the credentials instead)"
                ),
            )),
        }
    }
}
