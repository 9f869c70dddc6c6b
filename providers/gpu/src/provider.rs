//! The `gpu` provider: observes node GPU inventories and reports drift from a
//! pool's expectation. It never changes a GPU: `apply` is a permanent error.
//!
//! Address: `gpu:node/<node>`. Spec: a [`PoolExpectation`]. Observe reads the
//! node's [`Inventory`] from an [`InventorySource`] (a directory of JSON files
//! in tests and on a workstation; the CLI reads the `gpu-inventory/<node>` ConfigMaps).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use fleetform_contract::provider::{
    Action, Applied, ApplyContext, ApplyRequest, Change, Disruption, FieldChange, Health,
    ObserveRequest, Observed, Provider, ProviderError,
};
use fleetform_contract::resource::{Desired, ResourceId};

use crate::health::{HealthState, node_health};
use crate::inventory::{Inventory, InventoryError};
use crate::pool::{PoolExpectation, compare};

/// The message `apply` fails with.
pub const APPLY_REFUSED: &str =
    "GPU state is observed; fix through MIG manager config or break/fix";

/// Why an inventory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading failed; worth retrying (I/O, API server unavailable).
    #[error("reading the inventory of node {node} failed")]
    Io {
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The stored document is not a valid inventory.
    #[error("the inventory of node {node} is invalid")]
    Invalid {
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: InventoryError,
    },
}

/// Where inventories come from.
#[async_trait]
pub trait InventorySource: Send + Sync {
    /// The latest inventory of `node`; `Ok(None)` when the node has none.
    async fn load(&self, node: &str) -> Result<Option<Inventory>, SourceError>;
}

/// Inventories as `<dir>/<node>.json` files.
#[derive(Debug, Clone)]
pub struct DirSource {
    dir: PathBuf,
}

impl DirSource {
    /// Reads from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl InventorySource for DirSource {
    async fn load(&self, node: &str) -> Result<Option<Inventory>, SourceError> {
        // Node names are DNS labels; refuse anything that could leave the directory.
        if node.is_empty() || node.contains('/') || node.contains("..") {
            return Ok(None);
        }
        let path = self.dir.join(format!("{node}.json"));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Inventory::from_json(&text)
                    .map(Some)
                    .map_err(|source| SourceError::Invalid {
                        node: node.to_string(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SourceError::Io {
                node: node.to_string(),
                source,
            }),
        }
    }
}

/// Registers the `gpu` provider, reading inventories from `source`. Unlike the other
/// providers it takes its source here: where the reports live (a cluster's ConfigMaps, a
/// directory) is a setting of the run (`--gpu-inventory`), not of the compiled fleet.
pub fn register(registry: &mut fleetform_contract::Registry, source: Arc<dyn InventorySource>) {
    registry.register("gpu", move |_| {
        Ok(Arc::new(GpuProvider::new(source.clone())) as Arc<dyn Provider>)
    });
}

/// The `gpu` provider.
#[derive(Clone)]
pub struct GpuProvider {
    source: Arc<dyn InventorySource>,
}

impl GpuProvider {
    /// A provider reading inventories from `source`.
    pub fn new(source: Arc<dyn InventorySource>) -> Self {
        Self { source }
    }

    /// The address of a node's GPUs.
    pub fn id(node: &str) -> ResourceId {
        ResourceId::new("gpu", format!("node/{node}"))
    }
}

fn node_of(id: &ResourceId) -> Result<&str, ProviderError> {
    match id.path().strip_prefix("node/") {
        Some(n) if !n.is_empty() && !n.contains('/') => Ok(n),
        _ => Err(ProviderError::permanent(
            id,
            format!("`{id}` is not a gpu address: expected gpu:node/<node>"),
        )),
    }
}

fn spec_of(id: &ResourceId, spec: &serde_json::Value) -> Result<PoolExpectation, ProviderError> {
    serde_json::from_value(spec.clone()).map_err(|e| {
        ProviderError::permanent(id, format!("invalid gpu pool expectation: {e}")).with_source(e)
    })
}

/// The observed state in the shape of the spec (what `plan` shows as "before").
fn state_of(exp: &PoolExpectation, inv: &Inventory) -> serde_json::Value {
    let names: std::collections::BTreeSet<&str> =
        inv.gpus.iter().filter_map(|g| g.name.as_deref()).collect();
    serde_json::json!({
        "pool": exp.pool,
        "gpuModel": names.into_iter().collect::<Vec<_>>().join(", "),
        "gpuCount": inv.gpus.len(),
        "driverVersion": inv.driver_version,
        "health": node_health(inv),
    })
}

#[async_trait]
impl Provider for GpuProvider {
    fn name(&self) -> &'static str {
        "gpu"
    }

    async fn observe(
        &self,
        requests: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(self.observe_one(r).await);
        }
        out
    }

    fn diff(
        &self,
        desired: &Desired,
        observed: Option<&Observed>,
    ) -> Result<Change, ProviderError> {
        let exp = spec_of(&desired.id, &desired.spec)?;
        let Some(obs) = observed else {
            let mut c = Change::new(desired.id.clone(), Action::Create);
            c.fields.push(FieldChange {
                path: "/inventory".into(),
                before: None,
                after: Some(serde_json::json!(format!(
                    "a GPU inventory for pool {}",
                    exp.pool
                ))),
                sensitive: false,
                changed_by: None,
            });
            return Ok(c);
        };
        let inv: Inventory = obs
            .private
            .as_ref()
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .ok_or_else(|| {
                ProviderError::permanent(&desired.id, "observation carries no GPU inventory")
            })?;
        let drifts = compare(&exp, &inv);
        if drifts.is_empty() {
            return Ok(Change::new(desired.id.clone(), Action::NoOp));
        }
        let mut c = Change::new(desired.id.clone(), Action::Update);
        // Fixing a MIG layout drains the node's GPU work (the MIG manager evicts it).
        if drifts.iter().any(|d| d.is_disruptive()) {
            c.disruption = Disruption::NodeDrain;
        }
        for d in drifts {
            c.fields.push(FieldChange {
                path: d.path,
                before: d.observed,
                after: Some(d.expected),
                sensitive: false,
                changed_by: None,
            });
        }
        Ok(c)
    }

    async fn apply(
        &self,
        request: &ApplyRequest<'_>,
        _cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        Err(ProviderError::permanent(&request.change.id, APPLY_REFUSED))
    }

    /// Failed GPUs → `Failed`; degraded → `Progressing` (pending remaps and
    /// slowdowns usually clear at the next reset; the engine's gate timeout
    /// turns a lasting degradation into a failure); healthy → `Ready`.
    async fn health(
        &self,
        id: &ResourceId,
        _spec: &serde_json::Value,
    ) -> Result<Health, ProviderError> {
        let node = node_of(id)?;
        let inv = self
            .source
            .load(node)
            .await
            .map_err(|e| source_error(id, e))?;
        let Some(inv) = inv else {
            return Ok(Health::Progressing(format!(
                "no GPU inventory reported for node {node} yet"
            )));
        };
        let v = node_health(&inv);
        Ok(match v.state {
            HealthState::Healthy => Health::Ready,
            HealthState::Degraded => Health::Progressing(v.reasons.join("; ")),
            HealthState::Failed => Health::Failed(v.reasons.join("; ")),
        })
    }
}

fn source_error(id: &ResourceId, e: SourceError) -> ProviderError {
    match e {
        SourceError::Io { .. } => ProviderError::transient(id, e.to_string()).with_source(e),
        SourceError::Invalid { .. } => ProviderError::permanent(id, e.to_string()).with_source(e),
    }
}

impl GpuProvider {
    async fn observe_one(&self, r: &ObserveRequest<'_>) -> Result<Option<Observed>, ProviderError> {
        let node = node_of(r.id)?;
        let exp = spec_of(r.id, r.spec)?;
        let Some(inv) = self
            .source
            .load(node)
            .await
            .map_err(|e| source_error(r.id, e))?
        else {
            return Ok(None);
        };
        if inv.node != node {
            return Err(ProviderError::permanent(
                r.id,
                format!(
                    "the inventory stored for node {node} says it is from node {}",
                    inv.node
                ),
            ));
        }
        let private = serde_json::to_value(&inv).map_err(|e| {
            ProviderError::permanent(r.id, "cannot carry the inventory").with_source(e)
        })?;
        Ok(Some(Observed {
            id: r.id.clone(),
            state: state_of(&exp, &inv),
            private: Some(private),
        }))
    }
}
