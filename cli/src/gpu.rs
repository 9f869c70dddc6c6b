//! GPU inventory reports in the tenant clusters: published by each GPU node
//! (`fleetform gpu inventory --publish`) into the ConfigMap
//! `gpu-inventory/<node>` (key `inventory.json`), and read back by `plan`,
//! `apply` and `drift` as observed state (`--gpu-inventory cluster`), together
//! with each Node's cordon. See docs/providers/gpu.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use clap::Args;
use fleetform_engine::breakfix::{self, BreakFix, CORDON_REASON_ANNOTATION, Finding};
use fleetform_engine::manifest::Fleet;
use fleetform_gpu::inventory::{CONFIGMAP_KEY, CONFIGMAP_NAMESPACE, MAX_REPORT_BYTES};
use fleetform_gpu::{DirSource, Inventory, InventorySource, SourceError};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use fleetform_engine::compile::ClusterRef;
use fleetform_engine::session::{BoxError, HookObservation, ObserveHook};
use std::sync::Arc;

/// The field manager the reporter writes with (never `fleetform`, so the engine's
/// own server-side applies and the reports never fight over a field).
pub const FIELD_MANAGER: &str = "fleetform-gpu-inventory";

/// Where plan, apply and drift read GPU inventory reports from.
#[derive(Debug, Clone, Args)]
pub struct GpuArgs {
    /// GPU inventory reports as observed state, for GPU drift and break/fix:
    /// `cluster` (the ConfigMaps gpu-inventory/<node> in each tenant cluster, and
    /// the Nodes' cordons) or a directory of <node>.json files. Off when absent.
    #[arg(long = "gpu-inventory", env = "FLEETFORM_GPU_INVENTORY")]
    pub source: Option<String>,
    /// A report older than this many seconds makes its node's GPU health unknown.
    #[arg(long = "gpu-inventory-max-age", default_value_t = fleetform_gpu::fleet::DEFAULT_MAX_AGE_SECS)]
    pub max_age: u64,
}

/// The GPU state observed for one run.
pub struct GpuObserved {
    /// Cordons, releases and break/fix findings.
    pub breakfix: BreakFix,
    /// Pool-vs-inventory differences.
    pub drift: Vec<Finding>,
}

/// A client for a kubeconfig (and context), or the in-cluster / `$KUBECONFIG` one.
pub async fn client(kubeconfig: Option<&Path>, context: Option<String>) -> Result<Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            let options = KubeConfigOptions {
                context,
                ..Default::default()
            };
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| format!("kubeconfig {} is unusable", path.display()))?
        }
        None => Config::infer()
            .await
            .context("no kubeconfig given and no in-cluster or $KUBECONFIG configuration")?,
    };
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(config).context("cannot build a Kubernetes client")
}

/// Writes `inv` to the ConfigMap `gpu-inventory/<node>` with server-side apply as
/// [`FIELD_MANAGER`], owned by its Node (deleted with it). Compact JSON; refused
/// over `MAX_REPORT_BYTES`.
pub async fn publish(client: &Client, inv: &Inventory) -> Result<usize> {
    let text = serde_json::to_string(inv).context("cannot serialise the inventory")?;
    if text.len() > MAX_REPORT_BYTES {
        bail!(
            "the inventory of node {} is {} bytes, over the {MAX_REPORT_BYTES}-byte bound",
            inv.node,
            text.len()
        );
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .get_opt(&inv.node)
        .await
        .with_context(|| format!("reading Node {}", inv.node))?
        .with_context(|| {
            format!(
                "Node {} not found: --node must be the Kubernetes node name",
                inv.node
            )
        })?;
    let uid = node.metadata.uid.unwrap_or_default();
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": inv.node, "namespace": CONFIGMAP_NAMESPACE,
            "labels": { "app.kubernetes.io/managed-by": FIELD_MANAGER },
            "ownerReferences": [{ "apiVersion": "v1", "kind": "Node", "name": inv.node, "uid": uid }],
        },
        "data": { CONFIGMAP_KEY: text },
    });
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), CONFIGMAP_NAMESPACE);
    api.patch(
        &inv.node,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .with_context(|| {
        format!(
            "writing ConfigMap {CONFIGMAP_NAMESPACE}/{} (does the namespace exist, and may this service account patch ConfigMaps in it?)",
            inv.node
        )
    })?;
    Ok(text.len())
}

/// Reports from the ConfigMaps of the cluster each node belongs to.
struct ClusterSource {
    /// Node → its cluster's client.
    clients: BTreeMap<String, Client>,
}

#[async_trait]
impl InventorySource for ClusterSource {
    async fn load(&self, node: &str) -> Result<Option<Inventory>, SourceError> {
        let Some(client) = self.clients.get(node) else {
            return Ok(None);
        };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), CONFIGMAP_NAMESPACE);
        let cm = api.get_opt(node).await.map_err(|e| SourceError::Io {
            node: node.to_string(),
            source: std::io::Error::other(e),
        })?;
        let Some(text) = cm
            .and_then(|c| c.data)
            .and_then(|mut d| d.remove(CONFIGMAP_KEY))
        else {
            return Ok(None);
        };
        Inventory::from_json(&text)
            .map(Some)
            .map_err(|source| SourceError::Invalid {
                node: node.to_string(),
                source,
            })
    }
}

/// Node → tenant cluster, for pool members and spares (a spare is expected to
/// be joined to the cluster of the pool that lists it).
fn cluster_of_nodes(fleet: &Fleet) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in &fleet.pools {
        for h in fleet.members(p.name()).iter().chain(p.spec.spares.iter()) {
            out.entry(h.clone())
                .or_insert_with(|| p.spec.tenant.clone());
        }
    }
    out
}

/// Where this run reads GPU reports from (`--gpu-inventory`), shared by the registered `gpu`
/// provider and the break/fix hook, so both see the same reports through the same clients.
pub struct GpuInventory {
    source: Arc<dyn InventorySource>,
    /// Node → its cluster's client, to read the Nodes' cordons (empty for a directory).
    clients: BTreeMap<String, Client>,
    max_age: u64,
}

impl GpuInventory {
    /// The source the `gpu` provider reads through.
    pub fn source(&self) -> Arc<dyn InventorySource> {
        self.source.clone()
    }
}

/// Connects to where `args` says the reports are: `cluster` (a client per tenant cluster of
/// the fleet's GPU nodes) or a directory. `None` when no `--gpu-inventory` was given.
pub async fn connect(
    args: &GpuArgs,
    secrets_base: &Path,
    fleet: &Fleet,
    clusters: &BTreeMap<String, ClusterRef>,
) -> Result<Option<Arc<GpuInventory>>> {
    let Some(from) = &args.source else {
        return Ok(None);
    };
    if from != "cluster" {
        // A directory: for a workstation and tests. Cordons are not observed.
        return Ok(Some(Arc::new(GpuInventory {
            source: Arc::new(DirSource::new(PathBuf::from(from))),
            clients: BTreeMap::new(),
            max_age: args.max_age,
        })));
    }
    let mut clients: BTreeMap<String, Client> = BTreeMap::new();
    let mut by_cluster: BTreeMap<String, Client> = BTreeMap::new();
    for (node, cluster) in cluster_of_nodes(fleet) {
        if !by_cluster.contains_key(&cluster) {
            let c = clusters
                .get(&cluster)
                .with_context(|| format!("cluster {cluster} is not in the fleet"))?;
            let path = crate::fleet::kubeconfig_path(&c.kubeconfig, secrets_base)
                .with_context(|| format!("kubeconfig of cluster {cluster}"))?;
            let client = client(Some(&path), c.context.clone())
                .await
                .with_context(|| format!("cluster {cluster}"))?;
            by_cluster.insert(cluster.clone(), client);
        }
        if let Some(c) = by_cluster.get(&cluster) {
            clients.insert(node, c.clone());
        }
    }
    Ok(Some(Arc::new(GpuInventory {
        source: Arc::new(ClusterSource {
            clients: clients.clone(),
        }),
        clients,
        max_age: args.max_age,
    })))
}

/// The GPU inventory as an observe hook of the engine's session: the same for `plan`,
/// `apply`, `drift` and `serve`.
pub struct GpuHook {
    inventory: Arc<GpuInventory>,
    fleet: Fleet,
}

impl GpuHook {
    /// A hook for `fleet` reading `inventory`; `None` without one.
    pub fn hook(
        inventory: Option<&Arc<GpuInventory>>,
        fleet: &Fleet,
    ) -> Option<Arc<dyn ObserveHook>> {
        Some(Arc::new(Self {
            inventory: inventory?.clone(),
            fleet: fleet.clone(),
        }))
    }
}

#[async_trait]
impl ObserveHook for GpuHook {
    async fn observe(&self) -> Result<HookObservation, BoxError> {
        let g = observe(&self.inventory, &self.fleet).await?;
        Ok(HookObservation {
            breakfix: Some(g.breakfix),
            findings: g.drift,
        })
    }
}

/// Reads the GPU reports (and, from a cluster, the Nodes' cordons) and decides break/fix.
pub async fn observe(inventory: &GpuInventory, fleet: &Fleet) -> Result<GpuObserved> {
    let now = fleetform_gpu::fleet::now_secs();
    let (mut conditions, fresh) =
        fleetform_gpu::fleet::observe(fleet, inventory.source.as_ref(), now, inventory.max_age)
            .await;
    for c in &mut conditions {
        let Some(client) = inventory.clients.get(&c.node) else {
            continue;
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let node = nodes
            .get_opt(&c.node)
            .await
            .with_context(|| format!("reading Node {}", c.node))?;
        if let Some(n) = node {
            c.cordoned = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
            c.cordon_reason = n
                .metadata
                .annotations
                .and_then(|mut a| a.remove(CORDON_REASON_ANNOTATION));
        }
    }
    conditions.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(GpuObserved {
        breakfix: breakfix::assess(fleet, &conditions),
        drift: fleetform_gpu::fleet::drift_findings(fleet, &fresh),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use fleetform_engine::registry::ProviderConfig;

    fn config() -> ProviderConfig {
        ProviderConfig {
            clusters: BTreeMap::new(),
            secrets: Arc::new(fleetform_engine::secret::LocalSecrets::default()),
            secrets_base: PathBuf::from("."),
        }
    }

    #[test]
    fn the_gpu_provider_is_registered_when_the_run_reads_gpu_reports() {
        let without = crate::fleet::registry(None);
        assert!(!without.names().any(|n| n == "gpu"));
        let inventory = Arc::new(GpuInventory {
            source: Arc::new(DirSource::new(PathBuf::from("reports"))),
            clients: BTreeMap::new(),
            max_age: 900,
        });
        let with = crate::fleet::registry(Some(&inventory));
        assert!(with.names().any(|n| n == "gpu"));
        let providers =
            fleetform_engine::observe::Providers::from_registry(&with, &config()).unwrap();
        let gpu = providers
            .for_id(&fleetform_gpu::GpuProvider::id("r01-n01"))
            .unwrap();
        assert_eq!(gpu.name(), "gpu");
    }
}
