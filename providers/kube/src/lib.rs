//! fleetform's kube provider: Kubernetes objects through server-side apply.
//!
//! - **Addresses**: `kube:<cluster>/<apiVersion>/<Kind>/[<namespace>/]<name>` ([`object_id`]).
//! - **Spec**: [`KubeSpec`] `{cluster, object, force, adopt}`.
//! - **Observe** reads the live object and, for a desired spec, asks the server for a dry-run
//!   server-side apply (field manager `fleetform`, `fieldValidation=Strict`, force) of the
//!   desired object: the server's own answer to "what would the object be after the apply",
//!   defaults, admission and CRD validation included. A rejected dry-run is a permanent error
//!   carrying the server's reason.
//! - **Diff** compares the dry-run result with the live object (Flux's drift rule), over the
//!   fields the desired object sets (and those `fleetform` owns in the live `managedFields`, so
//!   a field dropped from the manifest shows as a removal), ignoring `status` and server-owned
//!   metadata. Each drifted field names the field manager that owns it now (`changed_by`).
//! - **Apply** is server-side apply; a delete removes only objects `fleetform` manages.
//! - **Health** knows Deployments, DaemonSets, StatefulSets, CRDs, Namespaces, the GPU operator's
//!   ClusterPolicy, the network operator's NicClusterPolicy and NIMService; other kinds are ready.
//!
//! See docs/providers/kube.md.
//!
//! Layout: the provider's state, addresses and clients here; [`observe`], [`apply`], the
//! `Provider` impl ([`provider`]) and node maintenance in modules of their own, beside fields
//! (the diff rule), health, drain, errors and the spec.

mod apply;
mod disruption;
mod drain;
mod error;
mod fields;
mod health;
mod maintenance;
mod observe;
mod provider;
mod seen;
mod spec;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use fleetform_contract::provider::{
    Action, Applied, ApplyContext, ApplyRequest, Change, Cordon, Disruption, FieldChange, Health,
    NodeAvailability, NodeMaintenance, ObserveRequest, Observed, Provider, ProviderError,
};
use fleetform_contract::resource::{Desired, ResourceId};
use fleetform_contract::sensitive::MASK;
use futures::StreamExt;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PropagationPolicy,
    ValidationDirective,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::{Client, Config};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

pub use spec::{
    ClusterConfig, FIELD_MANAGER, KubeSpec, ObjectRef, is_operator_owned_label, object_id,
};

/// How many requests observe sends to one cluster at once, unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// The kube provider. Cheap to share; clients are built on first use, one per cluster.
pub struct KubeProvider {
    clusters: BTreeMap<String, ClusterConfig>,
    concurrency: usize,
    clients: tokio::sync::Mutex<HashMap<String, Client>>,
    kinds: StdMutex<HashMap<KindKey, (ApiResource, bool)>>,
    limits: StdMutex<HashMap<String, Arc<Semaphore>>>,
}

/// Resources per observe call (see `Provider::observe_batch`); the provider
/// bounds its own concurrency per cluster.
const OBSERVE_BATCH: usize = 5_000;

/// The field manager of maintenance cordons around disruptive host changes.
pub const MAINTENANCE_FIELD_MANAGER: &str = "fleetform-maintenance";

/// The annotation saying why fleetform cordoned a Node for maintenance.
pub const MAINTENANCE_ANNOTATION: &str = "fleetform.dev/maintenance";

/// (cluster, apiVersion, kind): what discovery answers are cached by.
type KindKey = (String, String, String);

/// Observe reads a group of at least this many objects of one kind in one namespace (or
/// cluster-wide) with one LIST instead of a GET each: a large fleet's re-plan then costs one
/// read per kind and namespace instead of one per object.
pub const LIST_THRESHOLD: usize = 8;

/// (cluster, apiVersion, kind, namespace): what one LIST reads.
type ListKey = (String, String, String, Option<String>);

/// Live objects of one [`ListKey`] by name.
type Listed = HashMap<String, Value>;

/// The label whose value groups the objects of one kind for a cluster-wide LIST: every
/// object fleetform compiles or renders carries it (`app.kubernetes.io/managed-by`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// (cluster, apiVersion, kind, [`MANAGED_BY_LABEL`] value): what one cluster-wide LIST with
/// that label selector reads. Kinds whose objects are spread thin over namespaces (a chart's
/// Deployments, ServiceAccounts, Roles) are then read once per kind, not once per object.
type LabelledKey = (String, String, String, String);

/// Live objects of one [`LabelledKey`] by (namespace, name). An object missing from it may
/// still exist without the label, so it is read with a GET rather than taken as absent.
type LabelledListed = HashMap<(Option<String>, String), Value>;

/// A LIST answer, its items kept as plain JSON (no typed round trip).
#[derive(Deserialize)]
struct RawList {
    #[serde(default)]
    items: Vec<Value>,
}

/// One object resolved against its cluster.
struct Target {
    spec: KubeSpec,
    /// The object as it is sent: cleaned, a Secret's stringData folded into data.
    object: Value,
    reference: ObjectRef,
}

/// What observe knows of an object before asking the server about it.
enum Known {
    /// Nothing: read it with a GET.
    Unread,
    /// A LIST of its group found this (`None`: it does not exist).
    Listed(Option<Value>),
    /// Listed and compared: it needs a dry-run.
    Compared(Live),
}

/// A live object ready to compare with the desired one.
struct Live {
    /// Server-set metadata and status removed, a Secret's data digested.
    object: Value,
    /// Its `metadata.managedFields`, taken out of `object`.
    managed_fields: Value,
    /// The desired object with a Secret's data digested, when it is a Secret; otherwise the
    /// target's object itself is the shape (see [`Live::shape`]).
    secret_shape: Option<Value>,
}

impl Live {
    fn of(t: &Target, mut object: Value) -> Self {
        let managed_fields = object
            .pointer_mut("/metadata/managedFields")
            .map(Value::take)
            .unwrap_or(Value::Null);
        fields::clean(&mut object);
        fields::digest_secret_data(&mut object);
        let secret_shape = fields::is_secret(&t.object).then(|| {
            let mut shape = t.object.clone();
            fields::digest_secret_data(&mut shape);
            shape
        });
        Self {
            object,
            managed_fields,
            secret_shape,
        }
    }

    /// Which fields of the live object to look at: those of the desired one.
    fn shape<'a>(&'a self, t: &'a Target) -> &'a Value {
        self.secret_shape.as_ref().unwrap_or(&t.object)
    }
}

/// What can be told of a live object without the server: one only read (not desired), or
/// one fleetform last applied exactly and nobody has touched a field of since (the dry-run
/// would answer the live object). Anything else needs a dry-run.
fn settle(req: &ObserveRequest<'_>, t: &Target, live: Live) -> Settled {
    if !req.desired {
        return Settled::Done(Observed {
            id: req.id.clone(),
            state: fields::project(&live.object, live.shape(t)),
            private: seen::Seen::Get {
                live: live.object,
                managed_fields: live.managed_fields,
            }
            .into_private(),
        });
    }
    if req.unchanged
        && fields::untouched_since_applied(&t.object, &live.object, &live.managed_fields)
    {
        return Settled::Done(Observed {
            id: req.id.clone(),
            state: fields::project(&live.object, live.shape(t)),
            // diff needs nothing more: an unchanged object is a NoOp.
            private: seen::Seen::Unchanged.into_private(),
        });
    }
    Settled::NeedsDryRun(live)
}

/// What settling a listed object came to.
enum Settled {
    /// Observed without asking the server.
    Done(Observed),
    /// The server must dry-run the desired object against it.
    NeedsDryRun(Live),
}

/// A listed object to settle: its request's index, the request, the resolved object and
/// what the LIST found.
type ListedObject<'r> = (usize, &'r ObserveRequest<'r>, Target, Value);

/// Settles listed objects on every core: after a large LIST this is all a no-change plan has
/// left to do, and it is plain CPU work. Each comes back with its index and target.
fn settle_all(items: Vec<ListedObject<'_>>) -> Vec<(usize, Target, Settled)> {
    let one = |(i, req, t, live): ListedObject<'_>| {
        let settled = settle(req, &t, Live::of(&t, live));
        (i, t, settled)
    };
    // Threads pay off only for large groups.
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(items.len() / 256)
        .max(1);
    if threads == 1 {
        return items.into_iter().map(one).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut items = items.into_iter();
    let chunks: Vec<Vec<ListedObject<'_>>> = (0..threads)
        .map(|_| items.by_ref().take(per).collect())
        .collect();
    std::thread::scope(|s| {
        let running: Vec<_> = chunks
            .into_iter()
            .map(|chunk| s.spawn(move || chunk.into_iter().map(one).collect::<Vec<_>>()))
            .collect();
        running
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

impl Target {
    /// The cluster-wide labelled group this object can be read with, when it carries
    /// [`MANAGED_BY_LABEL`].
    fn labelled_key(&self) -> Option<LabelledKey> {
        let value = self
            .object
            .pointer("/metadata/labels")?
            .get(MANAGED_BY_LABEL)?
            .as_str()?;
        Some((
            self.spec.cluster.clone(),
            self.reference.api_version.clone(),
            self.reference.kind.clone(),
            value.to_string(),
        ))
    }

    /// The group this object is read with when its kind is listed.
    fn list_key(&self) -> ListKey {
        (
            self.spec.cluster.clone(),
            self.reference.api_version.clone(),
            self.reference.kind.clone(),
            self.reference.namespace.clone(),
        )
    }
}

/// What one cluster serves (see [`KubeProvider::capabilities`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterCapabilities {
    /// The server's `gitVersion`, e.g. `v1.34.4`.
    pub kube_version: String,
    /// `v1`, `apps/v1`, `apps/v1/Deployment`, ... (Helm's `.Capabilities.APIVersions`).
    pub api_versions: Vec<String>,
    /// (apiVersion, kind, namespaced) of every kind served.
    pub kinds: Vec<(String, String, bool)>,
}

impl KubeProvider {
    /// A provider for these clusters (name → how to reach it).
    pub fn new(clusters: BTreeMap<String, ClusterConfig>) -> Self {
        Self {
            clusters,
            concurrency: DEFAULT_CONCURRENCY,
            clients: tokio::sync::Mutex::new(HashMap::new()),
            kinds: StdMutex::new(HashMap::new()),
            limits: StdMutex::new(HashMap::new()),
        }
    }

    /// What a cluster serves, for rendering charts against it (Helm's `.Capabilities`): the
    /// server's version, every group/version and group/version/Kind it serves, and whether
    /// each kind is namespaced.
    pub async fn capabilities(&self, cluster: &str) -> Result<ClusterCapabilities, ProviderError> {
        let id = ResourceId::new("kube", format!("{cluster}/"));
        let client = self.client(&id, cluster).await?;
        let version = client.apiserver_version().await.map_err(|e| {
            ProviderError::transient(
                &id,
                format!("cluster {cluster}: reading the server version"),
            )
            .with_source(e)
        })?;
        let discovery = kube::discovery::Discovery::new(client)
            .run()
            .await
            .map_err(|e| {
                ProviderError::transient(&id, format!("cluster {cluster}: API discovery"))
                    .with_source(e)
            })?;
        let mut caps = ClusterCapabilities {
            kube_version: version.git_version,
            api_versions: Vec::new(),
            kinds: Vec::new(),
        };
        for group in discovery.groups() {
            for v in group.versions() {
                let gv = if group.name().is_empty() {
                    v.to_string()
                } else {
                    format!("{}/{v}", group.name())
                };
                caps.api_versions.push(gv.clone());
                for (ar, c) in group.versioned_resources(v) {
                    caps.api_versions.push(format!("{gv}/{}", ar.kind));
                    caps.kinds
                        .push((gv.clone(), ar.kind.clone(), c.scope == Scope::Namespaced));
                }
            }
        }
        caps.api_versions.sort();
        caps.api_versions.dedup();
        caps.kinds.sort();
        caps.kinds.dedup();
        Ok(caps)
    }

    /// At most `n` (>= 1) observe requests in flight per cluster.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    fn target(&self, id: &ResourceId, spec: &Value) -> Result<Target, ProviderError> {
        let mut spec = KubeSpec::deserialize(spec).map_err(|e| {
            ProviderError::permanent(
                id,
                format!("not a kube spec ({{cluster, object, force, adopt}}): {e}"),
            )
        })?;
        // The target keeps the cleaned object; the spec's own copy is not read again.
        let mut object = std::mem::take(&mut spec.object);
        fields::clean(&mut object);
        fold_string_data(&mut object);
        let reference = ObjectRef::of(&object).map_err(|e| ProviderError::permanent(id, e))?;
        let expected = object_id(&spec.cluster, &object);
        if &expected != id {
            return Err(ProviderError::permanent(
                id,
                format!(
                    "the address does not match the object it describes: the object's address is {expected}"
                ),
            ));
        }
        if let Some(labels) = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
        {
            let owned: Vec<&str> = labels
                .keys()
                .map(String::as_str)
                .filter(|k| is_operator_owned_label(k))
                .collect();
            if !owned.is_empty() {
                return Err(ProviderError::permanent(
                    id,
                    format!(
                        "label(s) {} are written by an operator (GPU operator, mig-manager, GFD, NFD or network operator); \
                         fleetform must not own them: remove them from the manifest",
                        owned.join(", ")
                    ),
                ));
            }
        }
        Ok(Target {
            spec,
            object,
            reference,
        })
    }

    async fn client(&self, id: &ResourceId, cluster: &str) -> Result<Client, ProviderError> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(cluster) {
            return Ok(c.clone());
        }
        let cfg = self.clusters.get(cluster).ok_or_else(|| {
            let known: Vec<&str> = self.clusters.keys().map(String::as_str).collect();
            ProviderError::permanent(
                id,
                format!(
                    "cluster {cluster} is not configured (known: {})",
                    known.join(", ")
                ),
            )
        })?;
        let kubeconfig = Kubeconfig::read_from(&cfg.kubeconfig).map_err(|e| {
            ProviderError::permanent(
                id,
                format!(
                    "cannot read kubeconfig {} of cluster {cluster}",
                    cfg.kubeconfig.display()
                ),
            )
            .with_source(e)
        })?;
        let options = KubeConfigOptions {
            context: cfg.context.clone(),
            ..Default::default()
        };
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| {
                ProviderError::permanent(
                    id,
                    format!(
                        "kubeconfig {} of cluster {cluster} is unusable",
                        cfg.kubeconfig.display()
                    ),
                )
                .with_source(e)
            })?;
        config.auth_info.impersonate = cfg.impersonate.clone();
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(Duration::from_secs(60));
        // kube-client retries 429/503/504 by itself (up to 15 times, honouring Retry-After),
        // out of sight: the engine's own policy retries these errors (error::map makes them
        // transient with the server's delay), with an attempt limit and a visible event, and a
        // drain must see a disruption budget's 429 at once.
        config.default_retry = false;
        let client = Client::try_from(config).map_err(|e| {
            ProviderError::permanent(id, format!("cannot build a client for cluster {cluster}"))
                .with_source(e)
        })?;
        clients.insert(cluster.to_string(), client.clone());
        Ok(client)
    }

    fn limit(&self, cluster: &str) -> Arc<Semaphore> {
        let mut limits = self
            .limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limits
            .entry(cluster.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency)))
            .clone()
    }

    fn cx<'a>(&'a self, id: &'a ResourceId, t: &'a Target, verb: &'a str) -> error::Context<'a> {
        error::Context {
            id,
            cluster: &t.spec.cluster,
            object: &t.reference,
            verb,
            impersonate: self
                .clusters
                .get(&t.spec.cluster)
                .and_then(|c| c.impersonate.as_deref()),
        }
    }

    /// The API for the object's kind, or `None` when the cluster does not serve the kind (yet).
    async fn api(
        &self,
        id: &ResourceId,
        t: &Target,
    ) -> Result<Option<Api<DynamicObject>>, ProviderError> {
        let client = self.client(id, &t.spec.cluster).await?;
        let r = &t.reference;
        let key = (
            t.spec.cluster.clone(),
            r.api_version.clone(),
            r.kind.clone(),
        );
        let cached = self
            .kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        let (resource, namespaced) = match cached {
            Some(found) => found,
            None => {
                let gvk = GroupVersionKind::gvk(r.group(), r.version(), &r.kind);
                match kube::discovery::pinned_kind(&client, &gvk).await {
                    Ok((ar, caps)) => {
                        let found = (ar, caps.scope == Scope::Namespaced);
                        self.kinds
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(key, found.clone());
                        found
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                    Err(kube::Error::Discovery(_)) => return Ok(None),
                    Err(e) => return Err(error::map(&self.cx(id, t, "discover"), e)),
                }
            }
        };
        match (namespaced, &r.namespace) {
            (true, Some(ns)) => Ok(Some(Api::namespaced_with(client, ns, &resource))),
            (false, None) => Ok(Some(Api::all_with(client, &resource))),
            (true, None) => Err(ProviderError::permanent(
                id,
                format!(
                    "{} is namespaced: set metadata.namespace on {}",
                    r.kind,
                    r.describe()
                ),
            )),
            (false, Some(_)) => Err(ProviderError::permanent(
                id,
                format!(
                    "{} is cluster-scoped: remove metadata.namespace from {}",
                    r.kind,
                    r.describe()
                ),
            )),
        }
    }

    async fn api_required(
        &self,
        id: &ResourceId,
        t: &Target,
    ) -> Result<Api<DynamicObject>, ProviderError> {
        self.api(id, t).await?.ok_or_else(|| {
            ProviderError::permanent(
                id,
                format!(
                    "cluster {} does not serve {} {} (is its CRD installed and Established?)",
                    t.spec.cluster, t.reference.api_version, t.reference.kind
                ),
            )
        })
    }

    async fn get(
        &self,
        id: &ResourceId,
        t: &Target,
        api: &Api<DynamicObject>,
    ) -> Result<Option<Value>, ProviderError> {
        let live = api
            .get_opt(&t.reference.name)
            .await
            .map_err(|e| error::map(&self.cx(id, t, "get"), e))?;
        live.map(|o| {
            serde_json::to_value(o)
                .map_err(|e| ProviderError::permanent(id, "unreadable object").with_source(e))
        })
        .transpose()
    }
}

/// (cluster, node name) of a Node's address `kube:<cluster>/v1/Node/<name>`.
fn node_of(node: &ResourceId) -> Result<(String, String), ProviderError> {
    match node.path().split('/').collect::<Vec<_>>().as_slice() {
        [cluster, "v1", "Node", name] => Ok(((*cluster).to_string(), (*name).to_string())),
        _ => Err(ProviderError::permanent(
            node,
            "only Nodes (kube:<cluster>/v1/Node/<name>) can be cordoned or drained",
        )),
    }
}

/// Server-side apply of `object` whose answer is not needed: the body is read as text (an
/// error still comes back as the server's Status), never decoded into an object.
async fn apply_unread(
    api: &Api<DynamicObject>,
    name: &str,
    params: &PatchParams,
    object: &Value,
) -> Result<(), kube::Error> {
    let request = kube::core::Request::new(api.resource_url())
        .patch(name, params, &Patch::Apply(object))
        .map_err(kube::Error::BuildRequest)?;
    api.clone().into_client().request_text(request).await?;
    Ok(())
}

/// Server-side apply as `fleetform`, strict field validation.
fn ssa_params(force: bool, dry_run: bool) -> PatchParams {
    let mut p = PatchParams::apply(FIELD_MANAGER).validation(ValidationDirective::Strict);
    if force {
        p = p.force();
    }
    if dry_run {
        p = p.dry_run();
    }
    p
}

/// The server turns a Secret's `stringData` into `data`; do it first so drift on it is visible.
fn fold_string_data(object: &mut Value) {
    use base64::Engine as _;
    if !fields::is_secret(object) {
        return;
    }
    let Some(Value::Object(string_data)) =
        object.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    let data = object
        .as_object_mut()
        .map(|m| m.entry("data").or_insert_with(|| json!({})));
    if let Some(Value::Object(data)) = data {
        for (k, v) in string_data {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            data.insert(
                k,
                Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

/// True when `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || (path.starts_with(prefix) && path[prefix.len()..].starts_with('/'))
        || prefix.is_empty()
}

/// The provider name, the address prefix it owns.
pub const NAME: &str = fleetform_contract::address::KUBE;

/// Registers the kube provider: one lazily built client per cluster of the configuration.
pub fn register(registry: &mut fleetform_contract::Registry) {
    registry.register(NAME, |config| {
        let mut clusters = BTreeMap::new();
        for (name, c) in &config.clusters {
            let path = kubeconfig_path(&c.kubeconfig, &config.secrets_base).map_err(|e| {
                fleetform_contract::BuildError::new(
                    NAME,
                    format!("kubeconfig of cluster {name} ({})", c.kubeconfig),
                )
                .with_source(e)
            })?;
            let mut cfg = ClusterConfig::new(path);
            cfg.context = c.context.clone();
            clusters.insert(name.clone(), cfg);
        }
        Ok(Arc::new(KubeProvider::new(clusters)))
    });
}

/// A kubeconfig reference is a file path (relative ones against `base`) or an
/// environment variable holding one; a Kubernetes Secret cannot hold it.
pub fn kubeconfig_path(
    r: &fleetform_contract::secret::SecretRef,
    base: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    use fleetform_contract::secret::SecretRef;
    match r {
        SecretRef::File(p) if p.is_absolute() => Ok(p.clone()),
        SecretRef::File(p) => Ok(base.join(p)),
        SecretRef::Env(v) => std::env::var(v)
            .map(std::path::PathBuf::from)
            .map_err(|_| format!("environment variable {v} is not set")),
        SecretRef::Secret(_) => Err(
            "a kubeconfig must be a file reference ({file: ...}) or an env var holding a path"
                .to_string(),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_of_an_object_is_its_cluster() {
        let p = KubeProvider::new(BTreeMap::new());
        let id = ResourceId::new("kube", "acme/v1/Namespace/ml");
        assert_eq!(p.tenant(&id), Some("acme"));
        assert_eq!(p.tenant(&ResourceId::new("redfish", "host/r01/bios")), None);
    }

    #[test]
    fn a_heal_forces_the_apply_and_nodes_can_be_maintained() {
        let p = KubeProvider::new(BTreeMap::new());
        let mut spec = json!({"cluster": "acme", "object": {}});
        p.prepare_heal(&mut spec);
        assert_eq!(spec["force"], json!(true));
        assert!(p.maintenance().is_some());
    }

    #[test]
    fn kubeconfig_paths_resolve_against_the_base() {
        use fleetform_contract::secret::SecretRef;
        let base = std::path::Path::new("/fleet");
        assert_eq!(
            kubeconfig_path(&SecretRef::File("kc".into()), base).unwrap(),
            base.join("kc")
        );
        let err = kubeconfig_path(&SecretRef::Env("FLEETFORM_TEST_SURELY_UNSET".into()), base)
            .unwrap_err();
        assert_eq!(
            err,
            "environment variable FLEETFORM_TEST_SURELY_UNSET is not set"
        );
    }
}
