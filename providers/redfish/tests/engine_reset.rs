//! The one planned reset through the engine: plan and apply a host's bios + power resources
//! against the stateful BMC simulator (common/bmcsim.rs), next to a host whose BMC is down.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::bmcsim::{self, PASSWORD};
use common::rid;
use fleetform_contract::resource::Desired;
use fleetform_contract::secret::LocalSecrets;
use fleetform_engine::Action;
use fleetform_engine::apply::ApplyOptions;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::reconcile::{ObserveOptions, make_plan, run_apply};
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_redfish::{RedfishOptions, RedfishProvider};
use serde_json::{Value, json};

fn host(url: &str, name: &str, system: &str, attrs: &Value, pw: &std::path::Path) -> Vec<Desired> {
    let bmc = json!({"endpoint": url, "system": system,
                     "credentials": {"username": "root", "password": {"file": pw}}});
    let bios = Desired::new(rid(name, "bios"), json!({"bmc": bmc, "attributes": attrs}));
    let power = Desired::new(
        rid(name, "power"),
        json!({"bmc": bmc, "state": "On", "applyAtReset": {"bios": attrs}}),
    )
    .depends_on(
        bios.id.clone(),
        format!("bios settings of {name} take effect at the next power-on"),
    );
    vec![bios, power]
}

#[tokio::test]
async fn the_engine_stages_then_resets_once_and_skips_only_the_host_whose_bmc_is_down() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let (tree, system) = ("supermicro_hgx_h100", "1");
    let sim = bmcsim::serve(tree, Duration::from_millis(30)).await;
    let (name, _, new) = bmcsim::flippable_bios_attribute(&sim, system);
    let attrs = json!({ name.clone(): new.clone() });
    let down = bmcsim::down_endpoint().await;
    let mut desired = host(&sim.url, "hgx", system, &attrs, &pw);
    desired.extend(host(&down, "gone", "1", &attrs, &pw));

    let provider = RedfishProvider::with_options(
        Arc::new(LocalSecrets::new("/")),
        RedfishOptions {
            poll_interval: Duration::from_millis(20),
            power_timeout: Duration::from_secs(5),
            graceful_timeout: Duration::from_millis(400),
            ..RedfishOptions::default()
        },
    );
    let providers = Providers::new().with(Arc::new(provider));
    let store = LocalStateStore::open(dir.path().join("state")).unwrap();
    let planned = plan_once(&desired, &providers, &store).await;
    let plan = &planned.plan;
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    // The down BMC's host is skipped (both resources), the other host is planned.
    let skipped: Vec<String> = plan.skipped.iter().map(|s| s.id.to_string()).collect();
    assert_eq!(
        skipped,
        ["redfish:host/gone/bios", "redfish:host/gone/power"]
    );
    let get = |id: &str| {
        plan.changes
            .iter()
            .find(|c| c.id.to_string() == id)
            .unwrap()
    };
    let bios = get("redfish:host/hgx/bios");
    assert_eq!(bios.action, Action::Update);
    assert_eq!(
        bios.disruption,
        fleetform_contract::provider::Disruption::None,
        "staging disrupts nothing"
    );
    let power = get("redfish:host/hgx/power");
    assert_eq!(
        power.disruption,
        fleetform_contract::provider::Disruption::HostReboot,
        "the reset is the disruptive step"
    );
    assert_eq!(power.fields[0].path, "/awaitingReset");

    let mut state = store.load().await.unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let options = ApplyOptions {
        health_poll: Duration::from_millis(20),
        health_timeout: Duration::from_secs(5),
        ..ApplyOptions::default()
    };
    let report = run_apply(
        &planned, &desired, &mut state, &store, &providers, &options, None, rx,
    )
    .await
    .unwrap();
    assert!(report.succeeded(), "{:?}", report.outcomes);
    assert_eq!(sim.bios_attribute(system, &name), new);
    assert_eq!(sim.resets().len(), 1, "{:?}", sim.resets());

    // Converged: nothing left to do on the healthy host, the other still skipped.
    let again = plan_once(&desired, &providers, &store).await.plan;
    assert!(!again.summary.has_changes(), "{:?}", again.changes);
    assert_eq!(again.skipped.len(), 2);
    assert_eq!(sim.resets().len(), 1);
}

async fn plan_once(
    desired: &[Desired],
    providers: &Providers,
    store: &LocalStateStore,
) -> fleetform_engine::reconcile::Planned {
    make_plan(
        desired,
        &store.load().await.unwrap(),
        providers,
        &PlanOptions::default(),
        ObserveOptions::default(),
        Some("rev1".into()),
    )
    .await
    .unwrap()
}
