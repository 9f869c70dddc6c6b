//! The nico provider through the engine: the every-field fleet's NICo site, compiled, planned
//! and applied by the engine's own plan and apply (dependency order, health waits) against the
//! stand-in; a re-plan is empty; one changed field plans one update.
#![allow(clippy::unwrap_used)]

mod standin;

use std::sync::Arc;
use std::time::Duration;

use fleetform_contract::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_contract::sensitive::Sensitive;
use fleetform_engine::apply::ApplyOptions;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::reconcile::{ObserveOptions, Planned, make_plan, run_apply};
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_engine::{Action, Desired};
use fleetform_nico::NicoProvider;
use serde_json::json;
use standin::{SITE_ID, Standin, token};

struct Token(String);
impl SecretResolver for Token {
    fn resolve(&self, _: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new(self.0.clone()))
    }
}

async fn plan(p: &Providers, store: &LocalStateStore, desired: &[Desired]) -> Planned {
    let state = store.load().await.unwrap();
    let planned = make_plan(
        desired,
        &state,
        p,
        &PlanOptions {
            allow_mass_delete: true,
            ..PlanOptions::default()
        },
        ObserveOptions::default(),
        Some("nico-test".into()),
    )
    .await
    .unwrap();
    assert!(
        planned.plan.problems.is_empty(),
        "{:?}",
        planned.plan.problems
    );
    planned
}

async fn apply(p: &Providers, store: &LocalStateStore, desired: &[Desired]) {
    let planned = plan(p, store, desired).await;
    let mut state = store.load().await.unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let options = ApplyOptions {
        health_poll: Duration::from_millis(50),
        health_timeout: Duration::from_secs(10),
        allow_destroy: true,
        ..ApplyOptions::default()
    };
    let report = run_apply(&planned, desired, &mut state, store, p, &options, None, rx)
        .await
        .unwrap();
    assert!(report.succeeded(), "{report:?}");
}

#[tokio::test]
async fn the_engine_plans_and_applies_a_nico_site_then_replans_to_nothing() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/every-field");
    let files = fleetform_engine::load::read_dir(&root).unwrap();
    let (docs, diags) = fleetform_engine::load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let fleet = fleetform_engine::validate::validate(&docs).unwrap();
    let compiled = fleetform_engine::compile::compile(&fleet, &Token(String::new())).unwrap();
    let s = Standin::start().await;
    s.seed(
        "machine",
        json!({"id": "fm100ht4v4mce2qstjnl8970nnj3ie6ecek4mtjn27pea4kre5gsa49jg0g", "siteId": SITE_ID}),
    );
    s.seed("operating-system", json!({"name": "ubuntu-24.04"}));
    let desired: Vec<Desired> = compiled
        .resources
        .into_iter()
        .filter(|d| d.id.provider() == "nico")
        .map(|mut d| {
            d.spec["endpoint"] = json!(s.endpoint);
            d
        })
        .collect();
    let providers = Providers::new().with(Arc::new(NicoProvider::new(Arc::new(Token(token(
        &["PROVIDER_ADMIN", "TENANT_ADMIN"],
        3600,
    ))))));
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStateStore::open(dir.path().join("state")).unwrap();

    let first = plan(&providers, &store, &desired).await;
    assert_eq!(first.plan.actionable().count(), 9);
    apply(&providers, &store, &desired).await;
    assert_eq!(s.named("instance", "n1").len(), 1);
    let again = plan(&providers, &store, &desired).await.plan;
    assert!(
        !again.summary.has_changes(),
        "{:?}",
        again.actionable().collect::<Vec<_>>()
    );

    let mut changed = desired.clone();
    let vpc = changed
        .iter_mut()
        .find(|d| d.id.as_str() == "nico:pdx-1/vpc/tenant-a")
        .unwrap();
    vpc.spec["fields"]["labels"]["tenant"] = json!("a2");
    let moved = plan(&providers, &store, &changed).await.plan;
    let changes: Vec<_> = moved.actionable().collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0].id.as_str(), changes[0].action),
        ("nico:pdx-1/vpc/tenant-a", Action::Update)
    );
    apply(&providers, &store, &changed).await;
    assert!(
        !plan(&providers, &store, &changed)
            .await
            .plan
            .summary
            .has_changes()
    );
    assert_eq!(s.violations(), Vec::<String>::new());
}
