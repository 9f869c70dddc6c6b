//! Golden files for every plan rendering (text, JSON, Markdown), and the
//! promise that no secret reaches any of them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use fleetform_engine::apply::ApplyOptions;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::{Plan, PlanOptions};
use fleetform_engine::reconcile::{ObserveOptions, make_plan, run_apply};
use fleetform_engine::report;
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_engine::testing::{MemoryProvider, Script};
use fleetform_engine::{Desired, Origin, ResourceId};
use serde_json::json;

fn id(p: &str) -> ResourceId {
    ResourceId::new("test", p)
}

fn at(line: u32) -> Option<Origin> {
    Some(Origin {
        file: "tenants.yaml".into(),
        line,
        column: 3,
    })
}

const PINNED: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A plan with a create (its image pinned to a digest), an update (one plain and one secret field), a
/// multi-line update, a delete and a located problem.
async fn sample_plan() -> Plan {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(MemoryProvider::new());
    let providers = Providers::new().with(provider.clone());
    let store = LocalStateStore::open(dir.path()).unwrap();
    let mut secret = Desired::new(
        id("acme/ngc-pull"),
        json!({"data": {"key": "nvapi-GOLDEN-CANARY-1"}}),
    );
    secret.sensitive = vec!["/data/key".into()];
    secret.origin = at(20);
    let mut policy = Desired::new(
        id("acme/cluster-policy"),
        json!({"driver": {"version": "570.124.06"}, "config": "a: 1\nb: 2\n"}),
    )
    .depends_on(
        id("acme/ngc-pull"),
        "pull secret before anything that pulls from NGC",
    );
    policy.origin = at(7);
    let old = Desired::new(id("acme/old-queue"), json!({"weight": 1}));
    let gone = Desired::new(id("acme/gone-1"), json!({}));
    let gone2 = Desired::new(id("acme/gone-2"), json!({}));
    let first = vec![
        secret.clone(),
        policy.clone(),
        old.clone(),
        gone.clone(),
        gone2.clone(),
    ];
    let mut state = store.load().await.unwrap();
    let planned = make_plan(
        &first,
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
        &first,
        &mut state,
        &store,
        &providers,
        &ApplyOptions::default(),
        None,
        rx,
    )
    .await
    .unwrap();

    secret.spec["data"]["key"] = json!("nvapi-GOLDEN-CANARY-2");
    policy.spec["driver"]["version"] = json!("580.65.06");
    policy.spec["config"] = json!("a: 1\nb: 3\n");
    let mut bmc = Desired::new(id("host/r01-n01/power"), json!({"state": "On"}));
    bmc.origin = Some(Origin {
        file: "hosts.yaml".into(),
        line: 31,
        column: 3,
    });
    provider.script(
        &bmc.id,
        Script {
            observe_fails: true,
            ..Script::default()
        },
    );
    // A create with an image pinned to a digest: every rendering must show the digest.
    let new = Desired::new(
        id("acme/nim"),
        json!({"replicas": 2, "image": {"repository": "nvcr.io/nim/llama", "tag": format!("1.8@{PINNED}")}}),
    )
    .depends_on(
        id("acme/cluster-policy"),
        "NIM workloads need the GPU Operator ready",
    );
    let second = vec![secret, policy, old, new, bmc];
    let opts = PlanOptions {
        allow_mass_delete: true,
        ..PlanOptions::default()
    };
    make_plan(
        &second,
        &state,
        &providers,
        &opts,
        ObserveOptions::default(),
        Some("rev-b".into()),
    )
    .await
    .unwrap()
    .plan
}

#[tokio::test]
async fn plan_renderings_match_their_golden_files_and_hide_secrets() {
    let plan = sample_plan().await;
    let text = report::plan_text(&plan, false);
    let json = report::plan_json(&plan);
    let markdown = report::plan_markdown(
        &plan,
        "fleetform plan",
        &["This pull request changes 1 manifest file(s): `tenants.yaml`.".into()],
    );
    for out in [&text, &json, &markdown] {
        assert!(!out.contains("CANARY"), "a secret leaked:\n{out}");
        assert!(
            out.contains(&format!("1.8@{PINNED}")),
            "the create's pinned digest is missing:\n{out}"
        );
    }
    assert_eq!(plan.summary.create, 1);
    assert_eq!(plan.summary.update, 2);
    assert_eq!(plan.summary.delete, 2);
    // The unreachable BMC is skipped, not a problem: the rest of the plan can be applied.
    assert_eq!(plan.problems.len(), 0);
    assert_eq!(plan.skipped.len(), 1);
    insta::assert_snapshot!("plan_text", text);
    insta::assert_snapshot!("plan_json", json);
    insta::assert_snapshot!("plan_markdown", markdown);
}

#[tokio::test]
async fn a_huge_plan_is_summarised_to_fit_a_pull_request_comment() {
    let dir = tempfile::tempdir().unwrap();
    let providers = Providers::new().with(Arc::new(MemoryProvider::new()));
    let store = LocalStateStore::open(dir.path()).unwrap();
    let fleet: Vec<Desired> = (0..3000)
        .map(|i| Desired::new(id(&format!("r{i:05}")), json!({"i": i})))
        .collect();
    let plan = make_plan(
        &fleet,
        &store.load().await.unwrap(),
        &providers,
        &PlanOptions::default(),
        ObserveOptions::default(),
        None,
    )
    .await
    .unwrap()
    .plan;
    let md = report::plan_markdown(&plan, "fleetform plan", &[]);
    assert!(md.len() < report::MARKDOWN_LIMIT, "{}", md.len());
    assert!(md.contains("| test | create | 3000 |"), "{md}");
}
