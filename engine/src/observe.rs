//! Observe: read live state through the providers, concurrently and bounded.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::stream::{self, StreamExt};

use crate::provider::{ObserveRequest, Observed, Provider, ProviderError};
use crate::resource::ResourceId;

/// The configured providers, by name (the address prefix they own).
#[derive(Clone, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Arc<dyn Provider>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

impl Providers {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a provider under its name.
    pub fn with(mut self, provider: Arc<dyn Provider>) -> Self {
        self.by_name.insert(provider.name().to_string(), provider);
        self
    }

    /// Every provider of a registry, built from one configuration (the CLI and
    /// `serve` alike): the engine never names a provider itself.
    pub fn from_registry(
        registry: &crate::registry::Registry,
        config: &crate::registry::ProviderConfig,
    ) -> Result<Self, crate::registry::BuildError> {
        Ok(registry
            .build(config)?
            .into_iter()
            .fold(Self::new(), Self::with))
    }

    /// The provider owning `id`, if configured.
    pub fn for_id(&self, id: &ResourceId) -> Option<&Arc<dyn Provider>> {
        self.by_name.get(id.provider())
    }
}

/// What to observe: an address and the spec that describes it (borrowed:
/// a large fleet's specs are not copied to be observed).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The resource.
    pub id: &'a ResourceId,
    /// The desired spec, or the last-applied one.
    pub spec: &'a serde_json::Value,
    /// Whether `spec` is desired (see [`ObserveRequest::desired`]).
    pub desired: bool,
    /// See [`ObserveRequest::unchanged`].
    pub unchanged: bool,
}

/// What each observation returned.
pub type Observations = BTreeMap<ResourceId, Result<Option<Observed>, ProviderError>>;

/// Observes every target. Requests are batched per provider (the provider
/// bounds its own per-endpoint concurrency); at most `concurrency` batches run
/// at once across all providers.
pub async fn observe(
    providers: &Providers,
    targets: &[Target<'_>],
    concurrency: usize,
    batch: usize,
) -> Observations {
    let mut out = Observations::new();
    let mut per_provider: BTreeMap<&str, Vec<&Target<'_>>> = BTreeMap::new();
    for t in targets {
        if providers.for_id(t.id).is_some() {
            per_provider.entry(t.id.provider()).or_default().push(t);
        } else {
            out.insert(
                t.id.clone(),
                Err(ProviderError::permanent(
                    t.id,
                    format!("no provider named `{}` is configured", t.id.provider()),
                )),
            );
        }
    }
    let batches: Vec<(Arc<dyn Provider>, Vec<&Target<'_>>)> = per_provider
        .into_iter()
        .flat_map(|(name, ts)| {
            let p = providers.by_name[name].clone();
            let size = p.observe_batch().unwrap_or(batch).max(1);
            ts.chunks(size)
                .map(move |c| (p.clone(), c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    // The futures are built before they are streamed: a `map` closure
    // returning an async block would make this future's `Send`ness
    // unprovable to rustc for callers that spawn it (the serve daemon).
    let calls: Vec<_> = batches
        .into_iter()
        .map(|(p, ts)| observe_batch(p, ts))
        .collect();
    let results = stream::iter(calls)
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    for r in results {
        out.extend(r);
    }
    out
}

/// One provider call for a batch of targets, one result per target.
async fn observe_batch(
    p: Arc<dyn Provider>,
    ts: Vec<&Target<'_>>,
) -> Vec<(ResourceId, Result<Option<Observed>, ProviderError>)> {
    let reqs: Vec<ObserveRequest<'_>> = ts
        .iter()
        .map(|t| ObserveRequest {
            id: t.id,
            spec: t.spec,
            desired: t.desired,
            unchanged: t.unchanged,
        })
        .collect();
    let mut res = p.observe(&reqs).await;
    // A provider that returns the wrong number of results is a bug; report it per resource.
    res.resize_with(ts.len(), || {
        Err(ProviderError::permanent(
            ts[0].id,
            "provider returned too few results",
        ))
    });
    ts.iter().map(|t| t.id.clone()).zip(res).collect()
}
