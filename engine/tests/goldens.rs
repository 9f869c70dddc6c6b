//! Golden files (insta, like `report_golden.rs`) for what fleetform shows people and programs
//! beyond the plan: the compiled resources of `examples/small`, its dependency graph (text and
//! DOT), a drift report (text and the versioned JSON) and an apply's event stream (NDJSON).
//! A change to any of them shows up as a snapshot diff in review; bless with
//! `INSTA_UPDATE=always cargo test -p fleetform-engine --test goldens` (or `cargo insta review`).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetform_engine::apply::{ApplyEvent, ApplyOptions};
use fleetform_engine::graph::Graph;
use fleetform_engine::load;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::reconcile::{ObserveOptions, make_plan, run_apply};
use fleetform_engine::report;
use fleetform_engine::secret::Placeholders;
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_engine::testing::{MemoryProvider, Script};
use fleetform_engine::{Desired, ResourceId, compile, validate};
use serde_json::json;

/// `examples/small`, compiled with placeholder secrets (what `fleetform graph` does).
fn small() -> Vec<Desired> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/small");
    let files = load::read_dir(&dir).unwrap();
    let (docs, diags) = load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let fleet = validate::validate(&docs).unwrap();
    let mut compiled = compile::compile(&fleet, &Placeholders).unwrap();
    compiled.resources.sort_by(|a, b| a.id.cmp(&b.id));
    compiled.resources
}

#[test]
fn the_compiled_resources_of_examples_small_match_their_golden_file() {
    let resources = small();
    let mut out = String::new();
    for d in &resources {
        let deps: Vec<String> = d.deps.iter().map(|e| e.on.to_string()).collect();
        out.push_str(&format!("== {}\n", d.id));
        if !deps.is_empty() {
            out.push_str(&format!("deps: {}\n", deps.join(", ")));
        }
        if !d.sensitive.is_empty() {
            out.push_str(&format!("sensitive: {}\n", d.sensitive.join(", ")));
        }
        let spec = fleetform_engine::plan::masked_spec(&d.spec, &d.sensitive);
        out.push_str(&serde_json::to_string_pretty(&spec).unwrap());
        out.push('\n');
    }
    insta::assert_snapshot!("compiled_small", out);
}

#[test]
fn the_dependency_graph_of_examples_small_matches_its_golden_files() {
    let graph = Graph::build(&small()).unwrap();
    insta::assert_snapshot!("graph_small_text", graph.to_string());
    insta::assert_snapshot!("graph_small_dot", graph.to_dot());
}

fn id(p: &str) -> ResourceId {
    ResourceId::new("test", p)
}

#[tokio::test]
async fn a_drift_report_matches_its_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(MemoryProvider::new());
    let providers = Providers::new().with(provider.clone());
    let store = LocalStateStore::open(dir.path()).unwrap();
    let fleet = vec![
        Desired::new(id("acme/queue"), json!({"weight": 2, "quota": 8})),
        Desired::new(id("acme/policy"), json!({"driver": "580.65.06"}))
            .depends_on(id("acme/queue"), "queue first"),
        Desired::new(id("acme/untouched"), json!({"a": 1})),
    ];
    let mut state = store.load().await.unwrap();
    let planned = make_plan(
        &fleet,
        &state,
        &providers,
        &PlanOptions::default(),
        ObserveOptions::default(),
        Some("rev-a".into()),
    )
    .await
    .unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    run_apply(
        &planned,
        &fleet,
        &mut state,
        &store,
        &providers,
        &ApplyOptions::default(),
        None,
        rx,
    )
    .await
    .unwrap();
    // Out of band: one field edited, one object deleted.
    provider.tamper(&id("acme/queue"), |o| o["quota"] = json!(16));
    provider.remove(&id("acme/policy"));
    let drift = make_plan(
        &fleet,
        &state,
        &providers,
        &PlanOptions::default(),
        ObserveOptions::default(),
        Some("rev-a".into()),
    )
    .await
    .unwrap()
    .plan;
    insta::assert_snapshot!("drift_text", report::drift_text(&drift, false));
    // The JSON is one line on stdout; pretty here so that a diff is readable.
    let json: serde_json::Value = serde_json::from_str(&report::drift_json(&drift)).unwrap();
    insta::assert_snapshot!("drift_json", serde_json::to_string_pretty(&json).unwrap());
}

#[tokio::test]
async fn an_apply_event_stream_matches_its_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(MemoryProvider::new());
    let providers = Providers::new().with(provider.clone());
    let store = LocalStateStore::open(dir.path()).unwrap();
    // A chain, so the events come in one order: a succeeds after one transient failure, b
    // fails for good, c waits for b and is skipped.
    let fleet = vec![
        Desired::new(id("a"), json!({"n": 1})),
        Desired::new(id("b"), json!({"n": 2})).depends_on(id("a"), "a first"),
        Desired::new(id("c"), json!({"n": 3})).depends_on(id("b"), "b first"),
    ];
    provider.script(
        &id("a"),
        Script {
            transient_failures: 1,
            ..Script::default()
        },
    );
    provider.script(
        &id("b"),
        Script {
            fail: Some("quota exceeded".into()),
            ..Script::default()
        },
    );
    let mut state = store.load().await.unwrap();
    let planned = make_plan(
        &fleet,
        &state,
        &providers,
        &PlanOptions::default(),
        ObserveOptions::default(),
        Some("rev-a".into()),
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ApplyEvent>();
    let (_cancel, cancel) = tokio::sync::watch::channel(false);
    let options = ApplyOptions {
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
        ..ApplyOptions::default()
    };
    run_apply(
        &planned,
        &fleet,
        &mut state,
        &store,
        &providers,
        &options,
        Some(tx),
        cancel,
    )
    .await
    .unwrap();
    let mut ndjson = String::new();
    while let Ok(mut e) = rx.try_recv() {
        // Wall-clock figures vary from run to run; the golden pins everything else.
        match &mut e {
            ApplyEvent::Succeeded { elapsed_ms, .. } => *elapsed_ms = 0,
            ApplyEvent::Retrying { delay_ms, .. } => *delay_ms = 0,
            _ => {}
        }
        ndjson.push_str(&serde_json::to_string(&e).unwrap());
        ndjson.push('\n');
    }
    insta::assert_snapshot!("apply_events", ndjson);
}
