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
    let res = p.observe(&reqs).await;
    // Results are positional: with one too few or too many, none of them can be matched to
    // its resource, so every resource of the batch gets the error under its own address
    // (never a result that may be another resource's, never silently dropped extras).
    if res.len() != ts.len() {
        let message = format!(
            "provider `{}` answered {} result(s) for a batch of {} resources (a provider bug); \
             none of the batch is used",
            p.name(),
            res.len(),
            ts.len()
        );
        return ts
            .iter()
            .map(|t| {
                let e = ProviderError::permanent(t.id, message.clone());
                (t.id.clone(), Err(e))
            })
            .collect();
    }
    ts.iter()
        .zip(res)
        .map(|(t, r)| {
            let r = match r {
                // An answer about another resource is the same bug, for this one.
                Ok(Some(o)) if &o.id != t.id => Err(ProviderError::permanent(
                    t.id,
                    format!(
                        "provider `{}` answered for {} in the place of {} (a provider bug)",
                        p.name(),
                        o.id,
                        t.id
                    ),
                )),
                r => r,
            };
            (t.id.clone(), r)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::provider::{Applied, ApplyContext, ApplyRequest, Change};
    use crate::resource::Desired;
    use serde_json::json;

    /// A provider that answers with a set number of results, each about `about`'s resource
    /// when given: the bugs the engine must survive.
    struct Miscounting {
        answers: usize,
        about: Option<ResourceId>,
    }

    #[async_trait::async_trait]
    impl Provider for Miscounting {
        fn name(&self) -> &'static str {
            "bad"
        }
        async fn observe(
            &self,
            requests: &[ObserveRequest<'_>],
        ) -> Vec<Result<Option<Observed>, ProviderError>> {
            (0..self.answers)
                .map(|i| {
                    let id = self
                        .about
                        .clone()
                        .unwrap_or_else(|| requests[i % requests.len()].id.clone());
                    Ok(Some(Observed {
                        id,
                        state: json!({}),
                        private: None,
                    }))
                })
                .collect()
        }
        fn diff(&self, d: &Desired, _: Option<&Observed>) -> Result<Change, ProviderError> {
            Ok(Change::new(d.id.clone(), crate::provider::Action::NoOp))
        }
        async fn apply(
            &self,
            r: &ApplyRequest<'_>,
            _: &ApplyContext,
        ) -> Result<Applied, ProviderError> {
            Ok(Applied {
                id: r.change.id.clone(),
                spec: json!({}),
            })
        }
    }

    async fn run(p: Miscounting) -> Observations {
        let providers = Providers::new().with(Arc::new(p));
        let ids: Vec<ResourceId> = (0..3)
            .map(|i| ResourceId::new("bad", format!("r{i}")))
            .collect();
        let spec = json!({});
        let targets: Vec<Target<'_>> = ids
            .iter()
            .map(|id| Target {
                id,
                spec: &spec,
                desired: true,
                unchanged: false,
            })
            .collect();
        observe(&providers, &targets, 4, 100).await
    }

    #[tokio::test]
    async fn a_batch_answered_with_the_wrong_count_fails_every_resource_under_its_own_address() {
        for answers in [1, 5] {
            let out = run(Miscounting {
                answers,
                about: None,
            })
            .await;
            assert_eq!(out.len(), 3, "no resource lost, no extra kept");
            for (id, r) in &out {
                let e = r.as_ref().unwrap_err();
                assert_eq!(&e.id, id, "each error names its own resource");
                assert!(
                    e.message
                        .contains(&format!("{answers} result(s) for a batch of 3")),
                    "{}",
                    e.message
                );
            }
        }
    }

    #[tokio::test]
    async fn an_answer_about_another_resource_is_not_taken_for_this_one() {
        let out = run(Miscounting {
            answers: 3,
            about: Some(ResourceId::new("bad", "r0")),
        })
        .await;
        assert!(out[&ResourceId::new("bad", "r0")].is_ok());
        let e = out[&ResourceId::new("bad", "r1")].as_ref().unwrap_err();
        assert!(
            e.message.contains("in the place of bad:r1"),
            "{}",
            e.message
        );
    }
}
