//! A whole provider against the contract alone: `toy` keeps each resource as a JSON file in a
//! directory (`toy:<name>` ↔ `<dir>/<name>.json`). It is the worked example of
//! docs/architecture.md ("Adding a provider"): the `Provider` impl, its `register` function and
//! a run of the engine's calls in order (observe → diff → apply → observe → diff), with no
//! engine, no runtime beyond a small executor and no I/O outside that directory.
//!
//! `cargo run -p fleetform-contract --example toy_provider`

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use fleetform_contract::provider::{
    Action, Applied, ApplyContext, ApplyRequest, Change, Disruption, FieldChange, ObserveRequest,
    Observed, Provider, ProviderError,
};
use fleetform_contract::registry::{ProviderConfig, Registry};
use fleetform_contract::resource::{Desired, ResourceId};
use fleetform_contract::secret::LocalSecrets;
use serde_json::{Value, json};

/// The address prefix the provider owns.
const NAME: &str = "toy";

/// Resources as JSON files in one directory.
struct ToyProvider {
    dir: PathBuf,
}

impl ToyProvider {
    fn file(&self, id: &ResourceId) -> Result<PathBuf, ProviderError> {
        let name = id.path();
        // An address is data from a manifest: never let it leave the directory.
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(ProviderError::permanent(
                id,
                "a toy name is one plain path segment",
            ));
        }
        Ok(self.dir.join(format!("{name}.json")))
    }
}

#[async_trait]
impl Provider for ToyProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn observe(
        &self,
        requests: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>> {
        // One result per request, in order; one failure does not fail the others.
        requests
            .iter()
            .map(|rq| {
                let path = self.file(rq.id)?;
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        let state: Value = serde_json::from_slice(&bytes).map_err(|e| {
                            ProviderError::permanent(rq.id, "the file is not JSON").with_source(e)
                        })?;
                        Ok(Some(Observed {
                            id: rq.id.clone(),
                            state,
                            private: None,
                        }))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    // Anything else may pass (a busy disk): the engine retries transient errors.
                    Err(e) => {
                        Err(ProviderError::transient(rq.id, "cannot read the file").with_source(e))
                    }
                }
            })
            .collect()
    }

    fn diff(
        &self,
        desired: &Desired,
        observed: Option<&Observed>,
    ) -> Result<Change, ProviderError> {
        let Some(observed) = observed else {
            return Ok(Change::new(desired.id.clone(), Action::Create));
        };
        // Field by field over the keys the manifest sets: keys someone else added are theirs.
        let mut fields = Vec::new();
        if let Some(want) = desired.spec.as_object() {
            for (k, v) in want {
                let live = observed.state.get(k);
                if live != Some(v) {
                    fields.push(FieldChange {
                        path: format!("/{k}"),
                        before: live.cloned(),
                        after: Some(v.clone()),
                        sensitive: false,
                        changed_by: None,
                    });
                }
            }
        }
        let action = if fields.is_empty() {
            Action::NoOp
        } else {
            Action::Update
        };
        Ok(Change {
            id: desired.id.clone(),
            action,
            fields,
            requires_replace: Vec::new(),
            // Writing a file disturbs no running work.
            disruption: Disruption::None,
        })
    }

    async fn apply(
        &self,
        request: &ApplyRequest<'_>,
        cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        let id = &request.change.id;
        let path = self.file(id)?;
        if request.change.action == Action::Delete {
            if !cx.dry_run {
                // Idempotent: deleting what is already gone succeeds.
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ProviderError::transient(id, "cannot delete").with_source(e));
                    }
                }
            }
            let spec = request.last_applied.cloned().unwrap_or(Value::Null);
            return Ok(Applied {
                id: id.clone(),
                spec,
            });
        }
        let desired = request
            .desired
            .ok_or_else(|| ProviderError::permanent(id, "nothing to apply: no spec"))?;
        // Keys the manifest does not set are kept: the diff ignores them too.
        let mut object = request
            .observed
            .map(|o| o.state.clone())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        if let (Some(o), Some(want)) = (object.as_object_mut(), desired.spec.as_object()) {
            o.extend(want.clone());
        }
        if !cx.dry_run {
            let bytes = serde_json::to_vec_pretty(&object)
                .map_err(|e| ProviderError::permanent(id, "unserialisable spec").with_source(e))?;
            // Write then rename: a crash never leaves half a file.
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| ProviderError::transient(id, "cannot write").with_source(e))?;
        }
        Ok(Applied {
            id: id.clone(),
            spec: desired.spec.clone(),
        })
    }
}

/// What a provider crate exports: its factory under its name. The binary calls this once
/// (in fleetform, `cli/src/fleet.rs::registry()`); the engine builds the provider from the
/// compiled fleet's configuration and never names it.
fn register(registry: &mut Registry, dir: PathBuf) {
    registry.register(NAME, move |_config: &ProviderConfig| {
        Ok(Arc::new(ToyProvider { dir: dir.clone() }) as Arc<dyn Provider>)
    });
}

/// The engine's calls for one resource, in its order: observe, diff, apply, then a re-plan
/// that must be a NoOp (the contract's convergence rule).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("fleetform-toy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut registry = Registry::new();
    register(&mut registry, dir.clone());
    let config = ProviderConfig {
        clusters: Default::default(),
        secrets: Arc::new(LocalSecrets::default()),
        secrets_base: dir.clone(),
    };
    let providers = registry.build(&config)?;
    let toy = providers
        .iter()
        .find(|p| p.name() == NAME)
        .ok_or("toy is registered")?;

    let desired = Desired::new(ResourceId::new(NAME, "queue"), json!({"weight": 2}));
    let rq = [ObserveRequest {
        id: &desired.id,
        spec: &desired.spec,
        desired: true,
        unchanged: false,
    }];
    let observed = block_on(toy.observe(&rq)).remove(0)?;
    let change = toy.diff(&desired, observed.as_ref())?;
    println!("plan:    {:?} {}", change.action, change.id);
    block_on(toy.apply(
        &ApplyRequest {
            change: &change,
            desired: Some(&desired),
            last_applied: None,
            observed: observed.as_ref(),
        },
        &ApplyContext::default(),
    ))?;
    let again = block_on(toy.observe(&rq)).remove(0)?;
    let replan = toy.diff(&desired, again.as_ref())?;
    println!("re-plan: {:?} {}", replan.action, replan.id);
    std::fs::remove_dir_all(&dir)?;
    if replan.action == Action::NoOp {
        Ok(())
    } else {
        Err("apply did not converge".into())
    }
}

/// Polls a future to completion on this thread: the toy's calls never wait on anything, so
/// no async runtime is needed (a real provider runs under the engine's tokio runtime).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
