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
//! Size: observe (LIST grouping, fast paths, dry-run) and apply share the provider's state here;
//! fields, health, drain, errors and the spec are already modules of their own.

mod disruption;
mod drain;
mod error;
mod fields;
mod health;
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
            private: Some(
                json!({"mode": "get", "live": live.object, "managedFields": live.managed_fields}),
            ),
        });
    }
    if req.unchanged
        && fields::untouched_since_applied(&t.object, &live.object, &live.managed_fields)
    {
        return Settled::Done(Observed {
            id: req.id.clone(),
            state: fields::project(&live.object, live.shape(t)),
            // diff needs nothing more: an unchanged object is a NoOp.
            private: Some(json!({"mode": "unchanged"})),
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

    /// Observes one object: reads it unless `known` says what a LIST found, then settles it
    /// without the server when it can, and dry-runs it otherwise.
    async fn observe_one(
        &self,
        req: &ObserveRequest<'_>,
        t: Target,
        known: Known,
        missing_namespaces: &HashSet<(String, String)>,
    ) -> Result<Option<Observed>, ProviderError> {
        let id = req.id;
        let _permit = self.limit(&t.spec.cluster).acquire_owned().await;
        let Some(api) = self.api(id, &t).await? else {
            if t.spec.adopt {
                return Err(self.not_found(id, &t));
            }
            return Ok(None);
        };
        let live = match known {
            Known::Compared(live) => return self.dry_run(id, &t, &api, live).await,
            Known::Listed(live) => live,
            Known::Unread => self.get(id, &t, &api).await?,
        };
        let Some(live) = live else {
            if !req.desired {
                return Ok(None);
            }
            if t.spec.adopt {
                return Err(self.not_found(id, &t));
            }
            if let Some(ns) = &t.reference.namespace
                && missing_namespaces.contains(&(t.spec.cluster.clone(), ns.clone()))
            {
                return Ok(None);
            }
            // Absent: a dry-run create still has the server validate the object (schema, strict
            // fields, CEL, admission), unless its namespace is itself still to be created.
            return match api
                .patch(
                    &t.reference.name,
                    &ssa_params(true, true),
                    &Patch::Apply(&t.object),
                )
                .await
            {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(error::map(&self.cx(id, &t, "dry-run apply"), e)),
            };
        };
        match settle(req, &t, Live::of(&t, live)) {
            Settled::Done(observed) => Ok(Some(observed)),
            Settled::NeedsDryRun(live) => self.dry_run(id, &t, &api, live).await,
        }
    }

    /// Observes a live object through a server-side dry-run of the desired one: what the
    /// object would become, with defaults, admission and other managers' fields.
    async fn dry_run(
        &self,
        id: &ResourceId,
        t: &Target,
        api: &Api<DynamicObject>,
        live: Live,
    ) -> Result<Option<Observed>, ProviderError> {
        let shape = live.shape(t).clone();
        let Live {
            object: live,
            managed_fields,
            ..
        } = live;
        let params = ssa_params(true, true);
        match api
            .patch(&t.reference.name, &params, &Patch::Apply(&t.object))
            .await
        {
            Ok(dry) => {
                let mut dry = serde_json::to_value(dry).map_err(|e| {
                    ProviderError::permanent(id, "unreadable object").with_source(e)
                })?;
                fields::clean(&mut dry);
                fields::digest_secret_data(&mut dry);
                Ok(Some(Observed {
                    id: id.clone(),
                    state: fields::project(&dry, &shape),
                    private: Some(
                        json!({"mode": "dry-run", "live": live, "dryRun": dry, "managedFields": managed_fields}),
                    ),
                }))
            }
            Err(kube::Error::Api(status)) if error::is_immutable(&status) => Ok(Some(Observed {
                id: id.clone(),
                state: fields::project(&live, &shape),
                private: Some(json!({
                    "mode": "replace",
                    "live": live,
                    "managedFields": managed_fields,
                    "replace": error::invalid_fields(&status),
                    "reason": status.message,
                })),
            })),
            // A CRD upgrade that drops a version objects are still stored in would strand them.
            Err(kube::Error::Api(status))
                if t.reference.kind == "CustomResourceDefinition"
                    && status.message.contains("storedVersions") =>
            {
                Err(ProviderError::permanent(
                    id,
                    format!(
                        "refusing to upgrade CRD {}: the new version list drops a version objects are still stored in \
                         (status.storedVersions); migrate them to a served version first (e.g. kube-storage-version-migrator), \
                         then drop it. The server said: {}",
                        t.reference.name, status.message
                    ),
                ))
            }
            Err(e) => Err(error::map(&self.cx(id, t, "dry-run apply"), e)),
        }
    }

    async fn observe_indexed(
        &self,
        i: usize,
        req: &ObserveRequest<'_>,
        target: Result<Target, ProviderError>,
        known: Known,
        missing_namespaces: Arc<HashSet<(String, String)>>,
    ) -> (usize, Result<Option<Observed>, ProviderError>) {
        let observed = match target {
            Ok(t) => self.observe_one(req, t, known, &missing_namespaces).await,
            Err(e) => Err(e),
        };
        (i, observed)
    }

    /// `Some((cluster, namespace))` when the namespace provably does not
    /// exist; `None` when it does or cannot be told (the caller dry-runs).
    async fn namespace_missing(
        &self,
        cluster: String,
        namespace: String,
        id: &ResourceId,
    ) -> Option<(String, String)> {
        let client = self.client(id, &cluster).await.ok()?;
        let api: Api<DynamicObject> = Api::all_with(
            client,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Namespace")),
        );
        match api.get_opt(&namespace).await {
            Ok(None) => Some((cluster, namespace)),
            _ => None,
        }
    }

    /// One LIST of the group `t` belongs to, or `None` when it cannot be listed (kind not
    /// served yet, LIST forbidden, any error): those objects are then read one by one, which
    /// reports errors per object as before. Items are decoded straight into JSON values.
    async fn list_group(
        &self,
        key: ListKey,
        id: &ResourceId,
        t: &Target,
    ) -> (ListKey, Option<Listed>) {
        let listed = async {
            let api = self.api(id, t).await.ok()??;
            let mut out = Listed::new();
            for v in self.list_items(api, &ListParams::default(), t).await? {
                let name = v
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)?
                    .to_string();
                out.insert(name, v);
            }
            Some(out)
        }
        .await;
        (key, listed)
    }

    /// The items of one LIST through `api`, each given back the apiVersion and kind LIST
    /// items lack (GET answers always carry them); `None` on any error. The request runs on
    /// its own task: large answers of several kinds are then decoded on several cores.
    async fn list_items(
        &self,
        api: Api<DynamicObject>,
        params: &ListParams,
        t: &Target,
    ) -> Option<Vec<Value>> {
        let request = kube::core::Request::new(api.resource_url())
            .list(params)
            .ok()?;
        let _permit = self.limit(&t.spec.cluster).acquire_owned().await;
        let client = api.into_client();
        let list: RawList = tokio::spawn(async move { client.request(request).await })
            .await
            .ok()?
            .ok()?;
        let mut items = list.items;
        for v in &mut items {
            v["apiVersion"] = json!(t.reference.api_version);
            v["kind"] = json!(t.reference.kind);
        }
        Some(items)
    }

    /// One LIST of every object of `t`'s kind in all namespaces that carries the
    /// [`MANAGED_BY_LABEL`] value of `key`, or `None` when that cannot be done (kind not
    /// served, cluster-wide LIST forbidden to this identity, any error): the objects are then
    /// read one by one.
    async fn list_labelled(
        &self,
        key: LabelledKey,
        id: &ResourceId,
        t: &Target,
    ) -> (LabelledKey, Option<LabelledListed>) {
        let listed = async {
            // Discovery (cached) tells the resource; the scope check is api()'s.
            self.api(id, t).await.ok()??;
            let kind = (
                t.spec.cluster.clone(),
                t.reference.api_version.clone(),
                t.reference.kind.clone(),
            );
            let (resource, _) = self
                .kinds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&kind)
                .cloned()?;
            let client = self.client(id, &t.spec.cluster).await.ok()?;
            let api: Api<DynamicObject> = Api::all_with(client, &resource);
            let selector = format!("{MANAGED_BY_LABEL}={}", key.3);
            let params = ListParams::default().labels(&selector);
            let mut out = LabelledListed::new();
            for v in self.list_items(api, &params, t).await? {
                let name = v
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)?
                    .to_string();
                let namespace = v
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                out.insert((namespace, name), v);
            }
            Some(out)
        }
        .await;
        (key, listed)
    }

    /// Where the GPU Operator's driver rollout stands on the ClusterPolicy's cluster: the
    /// nodes carrying its upgrade-state label (see [`health::driver_rollout`]).
    async fn driver_rollout(&self, id: &ResourceId, t: &Target) -> Result<Health, ProviderError> {
        let client = self.client(id, &t.spec.cluster).await?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
        let list = nodes
            .list_metadata(&ListParams::default().labels(health::DRIVER_UPGRADE_STATE))
            .await
            .map_err(|e| error::map(&self.cx(id, t, "list nodes"), e))?;
        let states: Vec<(String, String)> = list
            .items
            .into_iter()
            .filter_map(|n| {
                let state = n.metadata.labels?.remove(health::DRIVER_UPGRADE_STATE)?;
                Some((n.metadata.name?, state))
            })
            .collect();
        Ok(health::driver_rollout(&states))
    }

    fn not_found(&self, id: &ResourceId, t: &Target) -> ProviderError {
        ProviderError::permanent(
            id,
            format!(
                "{} {} not found in cluster {} (adopted objects are never created by fleetform)",
                t.reference.kind.to_lowercase(),
                t.reference.name,
                t.spec.cluster
            ),
        )
    }

    async fn server_side_apply(
        &self,
        id: &ResourceId,
        t: &Target,
        cx: &ApplyContext,
    ) -> Result<(), ProviderError> {
        let api = self.api_required(id, t).await?;
        if t.spec.adopt && self.get(id, t, &api).await?.is_none() {
            return Err(self.not_found(id, t));
        }
        let verb = if t.spec.force {
            "apply (force)"
        } else {
            "apply"
        };
        apply_unread(
            &api,
            &t.reference.name,
            &ssa_params(t.spec.force, cx.dry_run),
            &t.object,
        )
        .await
        .map_err(|e| error::map(&self.cx(id, t, verb), e))
    }

    /// Deletes the object when fleetform manages it; a missing object is a success.
    async fn delete_owned(
        &self,
        id: &ResourceId,
        t: &Target,
        cx: &ApplyContext,
    ) -> Result<bool, ProviderError> {
        let Some(api) = self.api(id, t).await? else {
            return Ok(false);
        };
        let Some(live) = self.get(id, t, &api).await? else {
            return Ok(false);
        };
        let managers = fields::managers(
            live.pointer("/metadata/managedFields")
                .unwrap_or(&Value::Null),
        );
        if !managers.iter().any(|m| m == FIELD_MANAGER) {
            return Err(ProviderError::permanent(
                id,
                format!(
                    "refusing to delete {} in cluster {}: fleetform does not manage it (field managers: {})",
                    t.reference.describe(),
                    t.spec.cluster,
                    if managers.is_empty() {
                        "none".to_string()
                    } else {
                        managers.join(", ")
                    }
                ),
            ));
        }
        let params = DeleteParams {
            dry_run: cx.dry_run,
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&t.reference.name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(error::map(&self.cx(id, t, "delete"), e)),
        }
    }

    async fn wait_gone(&self, id: &ResourceId, t: &Target) -> Result<(), ProviderError> {
        let api = self.api_required(id, t).await?;
        while self.get(id, t, &api).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Releases the fields fleetform owns on an adopted object by applying only its identity:
    /// the server removes what fleetform alone owned; the object stays.
    async fn release(
        &self,
        id: &ResourceId,
        t: &Target,
        cx: &ApplyContext,
    ) -> Result<(), ProviderError> {
        let Some(api) = self.api(id, t).await? else {
            return Ok(());
        };
        if self.get(id, t, &api).await?.is_none() {
            return Ok(());
        }
        let mut bare = json!({"apiVersion": t.reference.api_version, "kind": t.reference.kind,
            "metadata": {"name": t.reference.name}});
        if let Some(ns) = &t.reference.namespace {
            bare["metadata"]["namespace"] = json!(ns);
        }
        api.patch(
            &t.reference.name,
            &ssa_params(false, cx.dry_run),
            &Patch::Apply(&bare),
        )
        .await
        .map_err(|e| error::map(&self.cx(id, t, "release fields of"), e))?;
        Ok(())
    }

    async fn apply_inner(
        &self,
        request: &ApplyRequest<'_>,
        cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        let change = request.change;
        let id = &change.id;
        let desired_spec = request.desired.map(|d| &d.spec);
        let spec = desired_spec.or(request.last_applied).ok_or_else(|| {
            ProviderError::permanent(
                id,
                "nothing to apply: neither a desired nor a last-applied spec was given",
            )
        })?;
        let t = self.target(id, spec)?;
        match change.action {
            Action::NoOp => {}
            // A recreated hook (see `KubeSpec::recreate`): deleted and created again, as Helm
            // does with `before-hook-creation`.
            Action::Update if t.spec.recreate && !change.requires_replace.is_empty() => {
                if self.delete_owned(id, &t, cx).await? && !cx.dry_run {
                    self.wait_gone(id, &t).await?;
                }
                if !cx.dry_run {
                    self.server_side_apply(id, &t, cx).await?;
                }
            }
            Action::Create | Action::Update => self.server_side_apply(id, &t, cx).await?,
            Action::Replace => {
                if t.spec.adopt {
                    return Err(ProviderError::permanent(
                        id,
                        "an adopted object is never replaced: change it in place",
                    ));
                }
                if self.delete_owned(id, &t, cx).await? && !cx.dry_run {
                    self.wait_gone(id, &t).await?;
                }
                if !cx.dry_run {
                    self.server_side_apply(id, &t, cx).await?;
                }
            }
            Action::Delete => {
                if t.spec.adopt {
                    self.release(id, &t, cx).await?;
                } else {
                    self.delete_owned(id, &t, cx).await?;
                }
            }
        }
        Ok(Applied {
            id: id.clone(),
            spec: spec.clone(),
        })
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

#[async_trait]
impl Provider for KubeProvider {
    fn name(&self) -> &'static str {
        "kube"
    }

    /// Large batches: objects of one kind in one namespace are read with one
    /// LIST per batch, so small batches would read the same list many times.
    fn observe_batch(&self) -> Option<usize> {
        Some(OBSERVE_BATCH)
    }

    async fn observe(
        &self,
        requests: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>> {
        let clusters = self.clusters.len().max(1);
        let targets: Vec<Result<Target, ProviderError>> =
            requests.iter().map(|r| self.target(r.id, r.spec)).collect();
        // Large groups of one kind in one namespace are read with one LIST each.
        let keys: Vec<Option<ListKey>> = targets
            .iter()
            .map(|t| t.as_ref().ok().map(Target::list_key))
            .collect();
        let mut sizes: HashMap<&ListKey, (usize, usize)> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(k) = k {
                sizes.entry(k).or_insert((0, i)).0 += 1;
            }
        }
        let lists: Vec<_> = sizes
            .into_iter()
            .filter(|(_, (n, _))| *n >= LIST_THRESHOLD)
            .filter_map(|(k, (_, first))| {
                let t = targets[first].as_ref().ok()?;
                Some(self.list_group(k.clone(), requests[first].id, t))
            })
            .collect();
        let mut lists: HashMap<ListKey, Listed> = futures::stream::iter(lists)
            .buffer_unordered(self.concurrency * clusters)
            .filter_map(|(k, l)| async move { l.map(|l| (k, l)) })
            .collect()
            .await;
        // The rest, where two or more of a kind carry the same managed-by label: one
        // cluster-wide LIST with that label selector per kind.
        let labelled: Vec<Option<LabelledKey>> = keys
            .iter()
            .zip(&targets)
            .map(|(k, t)| match (k, t) {
                (Some(k), Ok(t)) if !lists.contains_key(k) => t.labelled_key(),
                _ => None,
            })
            .collect();
        let mut labelled_sizes: HashMap<&LabelledKey, (usize, usize)> = HashMap::new();
        for (i, k) in labelled.iter().enumerate() {
            if let Some(k) = k {
                labelled_sizes.entry(k).or_insert((0, i)).0 += 1;
            }
        }
        let labelled_lists: Vec<_> = labelled_sizes
            .into_iter()
            .filter(|(_, (n, _))| *n >= 2)
            .filter_map(|(k, (_, first))| {
                let t = targets[first].as_ref().ok()?;
                Some(self.list_labelled(k.clone(), requests[first].id, t))
            })
            .collect();
        let mut labelled_lists: HashMap<LabelledKey, LabelledListed> =
            futures::stream::iter(labelled_lists)
                .buffer_unordered(self.concurrency * clusters)
                .filter_map(|(k, l)| async move { l.map(|l| (k, l)) })
                .collect()
                .await;
        // Namespaces that do not exist yet (they are created by this plan):
        // objects in them are not dry-run, the server could only answer 404.
        let mut namespaces: Vec<(String, String, &ResourceId)> = keys
            .iter()
            .zip(requests)
            .filter(|(_, r)| r.desired)
            .filter_map(|(k, r)| {
                let (cluster, _, _, ns) = k.as_ref()?;
                Some((cluster.clone(), ns.clone()?, r.id))
            })
            .collect();
        // A namespace a LIST found objects in exists: no need to ask.
        let populated: HashSet<(&str, &str)> = lists
            .iter()
            .filter(|(_, objects)| !objects.is_empty())
            .filter_map(|((cluster, _, _, ns), _)| Some((cluster.as_str(), ns.as_deref()?)))
            .chain(labelled_lists.iter().flat_map(|((cluster, ..), objects)| {
                objects
                    .keys()
                    .filter_map(move |(ns, _)| Some((cluster.as_str(), ns.as_deref()?)))
            }))
            .collect();
        namespaces.retain(|(cluster, ns, _)| !populated.contains(&(cluster.as_str(), ns.as_str())));
        namespaces.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        namespaces.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let checks: Vec<_> = namespaces
            .into_iter()
            .map(|(cluster, ns, id)| self.namespace_missing(cluster, ns, id))
            .collect();
        let missing: Arc<HashSet<(String, String)>> = Arc::new(
            futures::stream::iter(checks)
                .buffer_unordered(self.concurrency * clusters)
                .filter_map(|m| async move { m })
                .collect()
                .await,
        );
        // Each listed object goes to the one request for it, moved rather than copied, and is
        // settled at once where it can be; the rest reads, dry-runs or reports errors.
        let mut quick: Vec<ListedObject<'_>> = Vec::new();
        let mut slow: Vec<(usize, Result<Target, ProviderError>, Known)> = Vec::new();
        for (i, (r, target)) in requests.iter().zip(targets).enumerate() {
            let listed = match (&keys[i], &labelled[i], &target) {
                (Some(k), _, Ok(t)) if lists.contains_key(k) => {
                    lists.get_mut(k).map(|l| l.remove(&t.reference.name))
                }
                // Found by the labelled LIST, or else read with a GET (it may exist unlabelled).
                (_, Some(k), Ok(t)) => labelled_lists
                    .get_mut(k)
                    .and_then(|l| {
                        l.remove(&(t.reference.namespace.clone(), t.reference.name.clone()))
                    })
                    .map(Some),
                _ => None,
            };
            match (target, listed) {
                (Ok(t), Some(Some(live))) => quick.push((i, r, t, live)),
                (target, Some(None)) => slow.push((i, target, Known::Listed(None))),
                (target, _) => slow.push((i, target, Known::Unread)),
            }
        }
        let mut results: Vec<(usize, Result<Option<Observed>, ProviderError>)> = Vec::new();
        for (i, t, settled) in settle_all(quick) {
            match settled {
                Settled::Done(observed) => results.push((i, Ok(Some(observed)))),
                Settled::NeedsDryRun(live) => slow.push((i, Ok(t), Known::Compared(live))),
            }
        }
        // Futures built up front: a closure inside the stream trips the async-trait lifetimes.
        let futures: Vec<_> = slow
            .into_iter()
            .map(|(i, target, known)| {
                self.observe_indexed(i, &requests[i], target, known, missing.clone())
            })
            .collect();
        results.extend(
            futures::stream::iter(futures)
                .buffer_unordered(self.concurrency * clusters)
                .collect::<Vec<_>>()
                .await,
        );
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    fn diff(
        &self,
        desired: &Desired,
        observed: Option<&Observed>,
    ) -> Result<Change, ProviderError> {
        let id = &desired.id;
        // Observe proved the live object is what fleetform last applied (and had resolved
        // the spec to get there).
        if observed
            .and_then(|o| o.private.as_ref())
            .and_then(|p| p.get("mode"))
            .and_then(Value::as_str)
            == Some("unchanged")
        {
            return Ok(Change::new(id.clone(), Action::NoOp));
        }
        let t = self.target(id, &desired.spec)?;
        let Some(observed) = observed else {
            return Ok(Change::new(id.clone(), Action::Create));
        };
        let private = observed.private.clone().unwrap_or(Value::Null);
        let live = private.get("live").cloned().unwrap_or(Value::Null);
        let managed_fields = private.get("managedFields").cloned().unwrap_or(Value::Null);
        let mut shape = t.object.clone();
        fields::digest_secret_data(&mut shape);

        let mut diffs = Vec::new();
        let mut requires_replace = Vec::new();
        let mut action = Action::Update;
        match private.get("mode").and_then(Value::as_str) {
            Some("dry-run") => {
                let dry = private.get("dryRun").cloned().unwrap_or(Value::Null);
                let mut all = Vec::new();
                fields::differences(Some(&live), Some(&dry), "", &mut all);
                diffs = all
                    .into_iter()
                    .filter(|(p, _, _)| {
                        fields::covered(&shape, &dry, p)
                            || fields::owners(&live, &managed_fields, p)
                                .iter()
                                .any(|m| m == FIELD_MANAGER)
                    })
                    .collect();
            }
            Some("replace") => {
                // A hook Helm recreates anyway: an update that deletes and creates (apply).
                action = if t.spec.recreate {
                    Action::Update
                } else {
                    Action::Replace
                };
                requires_replace = private
                    .get("replace")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                fields::differences(
                    Some(&fields::project(&live, &shape)),
                    Some(&shape),
                    "",
                    &mut diffs,
                );
                if requires_replace.is_empty() {
                    requires_replace = diffs.iter().map(|d| d.0.clone()).collect();
                }
            }
            _ => fields::differences(
                Some(&fields::project(&live, &shape)),
                Some(&shape),
                "",
                &mut diffs,
            ),
        }
        let secret = fields::is_secret(&shape);
        let sensitive: Vec<&str> = desired
            .sensitive
            .iter()
            .filter_map(|p| p.strip_prefix("/object"))
            .collect();
        let changes: Vec<FieldChange> = diffs
            .into_iter()
            .map(|(path, before, after)| {
                let hidden =
                    (secret && under(&path, "/data")) || sensitive.iter().any(|s| under(&path, s));
                let others: Vec<String> = fields::owners(&live, &managed_fields, &path)
                    .into_iter()
                    .filter(|m| m != FIELD_MANAGER)
                    .collect();
                let mask = |v: Option<Value>| v.map(|_| Value::String(MASK.to_string()));
                FieldChange {
                    before: if hidden { mask(before) } else { before },
                    after: if hidden { mask(after) } else { after },
                    sensitive: hidden,
                    changed_by: (!others.is_empty()).then(|| others.join(", ")),
                    path,
                }
            })
            .collect();
        if changes.is_empty() && action != Action::Replace {
            action = Action::NoOp;
        }
        Ok(Change {
            id: id.clone(),
            disruption: disruption::classify(
                &t.reference.api_version,
                &t.reference.kind,
                action,
                &changes,
            ),
            action,
            fields: changes,
            requires_replace,
        })
    }

    async fn apply(
        &self,
        request: &ApplyRequest<'_>,
        cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        let id = &request.change.id;
        match tokio::time::timeout(cx.timeout, self.apply_inner(request, cx)).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::transient(
                id,
                format!(
                    "{:?} did not finish within {} s",
                    request.change.action,
                    cx.timeout.as_secs()
                ),
            )),
        }
    }

    fn maintenance(&self) -> Option<&dyn NodeMaintenance> {
        Some(self)
    }

    /// Deleting a workload stops its pods (see `disruption::of_delete`).
    fn delete_disruption(&self, id: &ResourceId) -> Disruption {
        disruption::of_delete(id)
    }

    /// A heal takes drifted fields back from whichever field manager changed
    /// them: the server-side apply is forced.
    fn prepare_heal(&self, spec: &mut Value) {
        spec["force"] = Value::Bool(true);
    }

    /// The cluster of the object (a tenant's name, or `mgmt`).
    fn tenant<'a>(&self, id: &'a ResourceId) -> Option<&'a str> {
        fleetform_contract::address::kube_cluster(id)
    }

    async fn health(&self, id: &ResourceId, spec: &Value) -> Result<Health, ProviderError> {
        let t = self.target(id, spec)?;
        // The engine asks after a successful apply: a kind without a readiness rule is Ready
        // then, and reading it back would only double the requests of a large apply.
        if !t.spec.wait || !health::has_rule(&t.reference.api_version, &t.reference.kind) {
            return Ok(Health::Ready);
        }
        let Some(api) = self.api(id, &t).await? else {
            return Ok(Health::Progressing(format!(
                "cluster {} does not serve {} yet",
                t.spec.cluster, t.reference.kind
            )));
        };
        match self.get(id, &t, &api).await? {
            Some(live) => match health::of(&live) {
                Health::Ready
                    if t.reference.kind == "ClusterPolicy"
                        && t.reference.group() == "nvidia.com" =>
                {
                    self.driver_rollout(id, &t).await
                }
                h => Ok(h),
            },
            None => Ok(Health::Progressing(format!(
                "{} does not exist yet",
                t.reference.describe()
            ))),
        }
    }
}

/// Nodes of the fleet's clusters: cordon and drain around disruptive changes.
#[async_trait]
impl NodeMaintenance for KubeProvider {
    /// Cordons a Node with server-side apply under its own field manager
    /// ([`MAINTENANCE_FIELD_MANAGER`]); releasing applies an empty object under
    /// that manager, which drops only its own claim: a Node also cordoned by a
    /// person, `kubectl cordon` or break/fix stays cordoned.
    async fn cordon(
        &self,
        node: &ResourceId,
        reason: Option<&str>,
    ) -> Result<Cordon, ProviderError> {
        let (cluster, name) = node_of(node)?;
        let mut object = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
        if let Some(reason) = reason {
            object["metadata"]["annotations"] = json!({ MAINTENANCE_ANNOTATION: reason });
            object["spec"] = json!({ "unschedulable": true });
        }
        let t = Target {
            spec: KubeSpec {
                cluster: cluster.clone(),
                object: object.clone(),
                force: false,
                adopt: true,
                wait: true,
                recreate: false,
            },
            reference: ObjectRef::of(&object).map_err(|e| ProviderError::permanent(node, e))?,
            object,
        };
        let client = self.client(node, &cluster).await?;
        let api: Api<DynamicObject> = Api::all_with(
            client,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Node")),
        );
        let verb = "patch";
        match api.get_opt(&name).await {
            Ok(None) => return Ok(Cordon::NoSuchNode),
            Ok(Some(_)) => {}
            Err(e) => return Err(error::map(&self.cx(node, &t, "get"), e)),
        }
        // Force: the manager only ever writes these two fields of a Node it
        // was asked to take out of service.
        let params = PatchParams::apply(MAINTENANCE_FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&t.object))
            .await
            .map_err(|e| error::map(&self.cx(node, &t, verb), e))?;
        Ok(Cordon::Done)
    }

    /// Evicts the node's pods as `kubectl drain` does (see the `drain` module) and waits for
    /// them, at most `timeout`; what remains at the deadline is named in the error.
    async fn drain(&self, node: &ResourceId, timeout: Duration) -> Result<(), ProviderError> {
        let (cluster, name) = node_of(node)?;
        let client = self.client(node, &cluster).await?;
        drain::drain(&client, &name, timeout)
            .await
            .map_err(|e| ProviderError::permanent(node, e))
    }

    /// Lists the Nodes of each cluster once (a budget re-reads them while an apply waits, so
    /// one LIST per cluster, not a GET per node) and says whether each serves: cordoned,
    /// NotReady or claimed for maintenance is down (see `disruption::availability`).
    async fn availability(
        &self,
        nodes: &[ResourceId],
    ) -> Vec<Result<NodeAvailability, ProviderError>> {
        let mut live: HashMap<String, Result<HashMap<String, Value>, String>> = HashMap::new();
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let (cluster, name) = match node_of(node) {
                Ok(x) => x,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if !live.contains_key(&cluster) {
                let listed = self.list_nodes(node, &cluster).await;
                live.insert(cluster.clone(), listed);
            }
            out.push(match &live[&cluster] {
                Ok(by_name) => Ok(by_name
                    .get(&name)
                    .map_or_else(NodeAvailability::default, |n| {
                        disruption::availability(n, MAINTENANCE_ANNOTATION)
                    })),
                Err(e) => Err(ProviderError::transient(node, e.clone())),
            });
        }
        out
    }
}

impl KubeProvider {
    /// Every Node of `cluster` by name, or why they could not be read.
    async fn list_nodes(
        &self,
        node: &ResourceId,
        cluster: &str,
    ) -> Result<HashMap<String, Value>, String> {
        let client = self
            .client(node, cluster)
            .await
            .map_err(|e| e.message.clone())?;
        let api: Api<DynamicObject> = Api::all_with(
            client,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Node")),
        );
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list Nodes in cluster {cluster}: {e}"))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| {
                let name = o.metadata.name.clone()?;
                Some((name, serde_json::to_value(&o).ok()?))
            })
            .collect())
    }
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
