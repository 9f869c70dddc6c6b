//! Benchmark: fleetform applies N Kubernetes objects through the engine's plan/apply path and
//! the real kube provider, then re-plans (no change) and runs drift over them, against the
//! floor of one LIST per kind. `bench/kube-apply.sh` runs it beside
//! `kubectl apply --server-side` on the same apiserver and prints the ratio.
//!
//!   kube_apply_bench KUBECONFIG NAMESPACE [OBJECTS=2000] [YAML_OUT | --requests]
//!
//! The objects: one Namespace plus OBJECTS split evenly over ConfigMap, Secret, ServiceAccount
//! and Role in it. With YAML_OUT it only writes the same objects (for kubectl) into another
//! namespace's file and exits; with `--requests` it only prints the apiserver's request
//! counters for those kinds (to count kubectl's requests). Prints one `key=value` line per
//! measurement (re-plan, drift and floor: the median of KUBE_BENCH_ROUNDS=5 interleaved
//! rounds, samples beside it); `*_requests` lines are the apiserver's own counts (`apiserver_request_total`)
//! for the benchmark's kinds, by verb, which do not depend on how loaded the machine is.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use fleetform_engine::Desired;
use fleetform_engine::apply::ApplyOptions;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::reconcile::{ObserveOptions, make_plan, run_apply};
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_kube::{ClusterConfig, KubeProvider, object_id};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use tokio::sync::watch;

const CLUSTER: &str = "bench";
const KINDS: [(&str, &str, &str); 4] = [
    ("", "v1", "ConfigMap"),
    ("", "v1", "Secret"),
    ("", "v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io", "v1", "Role"),
];

fn objects(ns: &str, n: usize) -> Vec<Value> {
    let mut out = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})];
    for i in 0..n {
        let name = format!("obj-{i:05}");
        let meta = json!({"name": name, "namespace": ns, "labels": {"bench": "kube-apply"}});
        out.push(match i % 4 {
            0 => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                "data": {"index": i.to_string(), "payload": "x".repeat(64)}}),
            1 => json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
                "data": {"token": "YmVuY2gtbm90LWEtc2VjcmV0"}}),
            2 => json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}),
            _ => json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}),
        });
    }
    out
}

fn desired(objects: &[Value]) -> Vec<Desired> {
    let ns = objects.first().map(|o| object_id(CLUSTER, o));
    objects
        .iter()
        .map(|o| {
            let id = object_id(CLUSTER, o);
            let d = Desired::new(id.clone(), json!({"cluster": CLUSTER, "object": o}));
            match &ns {
                Some(ns) if ns != &id => d.depends_on(ns.clone(), "namespace first"),
                _ => d,
            }
        })
        .collect()
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Loads the state and plans, as `fleetform plan` does: the seconds it took (dropping the plan
/// included) and how many changes it found.
async fn timed_plan(
    desired: &[Desired],
    store: &LocalStateStore,
    providers: &Providers,
    options: &PlanOptions,
) -> Result<(f64, usize), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let state = store.load().await?;
    let planned = make_plan(
        desired,
        &state,
        providers,
        options,
        ObserveOptions::default(),
        None,
    )
    .await?;
    let changes = planned.plan.actionable().count();
    drop(planned);
    Ok((secs(t), changes))
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn samples(samples: &[f64]) -> String {
    let all: Vec<String> = samples.iter().map(|s| format!("{s:.3}")).collect();
    all.join(" ")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(kubeconfig), Some(ns)) = (args.first(), args.get(1)) else {
        return Err("usage: kube_apply_bench KUBECONFIG NAMESPACE [OBJECTS] [YAML_OUT]".into());
    };
    let n: usize = match args.get(2) {
        Some(s) => s.parse()?,
        None => 2000,
    };
    let objects = objects(ns, n);
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    if args.get(3).map(String::as_str) == Some("--requests") {
        println!("{}", show(&requests(&client).await?));
        return Ok(());
    }
    if let Some(out) = args.get(3) {
        let docs: Vec<String> = objects.iter().map(|o| format!("---\n{o}\n")).collect();
        std::fs::write(out, docs.concat())?;
        return Ok(());
    }
    let desired = desired(&objects);
    let provider = Arc::new(KubeProvider::new(BTreeMap::from([(
        CLUSTER.to_string(),
        ClusterConfig::new(PathBuf::from(kubeconfig)),
    )])));
    let providers = Providers::new().with(provider);
    let state_dir = tempfile::tempdir()?;
    let store = LocalStateStore::open(state_dir.path().join("state"))?;
    let apply_options = ApplyOptions::default();
    let (_cancel, cancel_rx) = watch::channel(false);

    // Apply = what `fleetform apply` does: plan (observe + diff), then apply with health gates.
    let before = requests(&client).await?;
    let t = Instant::now();
    let state = store.load().await?;
    let planned = make_plan(
        &desired,
        &state,
        &providers,
        &PlanOptions::default(),
        ObserveOptions::default(),
        None,
    )
    .await?;
    let plan_s = secs(t);
    let planned_at = requests(&client).await?;
    let mut state = state;
    let report = run_apply(
        &planned,
        &desired,
        &mut state,
        &store,
        &providers,
        &apply_options,
        None,
        cancel_rx,
    )
    .await?;
    let total_s = secs(t);
    if !report.succeeded() {
        return Err(format!("apply failed: {:?}", report.root_causes()).into());
    }
    println!("objects={}", desired.len());
    println!("fleetform_plan_s={plan_s:.3}");
    println!("fleetform_apply_only_s={:.3}", total_s - plan_s);
    println!("fleetform_apply_s={total_s:.3}");
    let mid = requests(&client).await?;
    println!(
        "fleetform_plan_requests={}",
        show(&delta(&planned_at, &before))
    );
    println!("fleetform_apply_requests={}", show(&delta(&mid, &before)));

    // No-change re-plan, drift and the floor, interleaved over ROUNDS rounds so that a burst
    // of load on the machine hits all three alike; medians are reported beside every sample.
    let rounds: usize = std::env::var("KUBE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let (mut replans, mut drifts, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    let mut listed = 0;
    let mut replan_requests = String::new();
    let mut drift_requests = String::new();
    for round in 0..rounds {
        let before = requests(&client).await?;
        let (replan_s, changed) =
            timed_plan(&desired, &store, &providers, &PlanOptions::default()).await?;
        replans.push(replan_s);
        if changed > 0 {
            return Err(format!("re-plan is not empty: {changed} changes").into());
        }
        let after_replan = requests(&client).await?;

        // Drift (what `fleetform drift` plans: the inventory only, no prune).
        let drift_options = PlanOptions {
            inventory_only: true,
            no_prune: true,
            ..PlanOptions::default()
        };
        let (drift_s, drifted) = timed_plan(&desired, &store, &providers, &drift_options).await?;
        drifts.push(drift_s);
        if drifted > 0 {
            return Err(format!("drift found {drifted} changes right after the apply").into());
        }
        if round == 0 {
            replan_requests = show(&delta(&after_replan, &before));
            drift_requests = show(&delta(&requests(&client).await?, &after_replan));
        }

        // The floor: one LIST per kind in the namespace (what any observer must at least read).
        listed = 0;
        let t = Instant::now();
        for (group, version, kind) in KINDS {
            let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            listed += api.list(&ListParams::default()).await?.items.len();
        }
        floors.push(secs(t));
    }
    println!(
        "replan_s={:.3} (samples {})",
        median(&replans),
        samples(&replans)
    );
    println!("replan_requests={replan_requests}");
    println!(
        "drift_s={:.3} (samples {})",
        median(&drifts),
        samples(&drifts)
    );
    println!("drifted=0");
    println!("drift_requests={drift_requests}");
    println!(
        "list_floor_s={:.3} (samples {})",
        median(&floors),
        samples(&floors)
    );
    println!("listed={listed}");
    Ok(())
}

/// Requests the apiserver has served for the benchmark's kinds, by verb (dry-runs apart;
/// `[ns]`: on Namespaces, which includes the apiserver's own NamespaceLifecycle lookups).
async fn requests(
    client: &kube::Client,
) -> Result<BTreeMap<String, u64>, Box<dyn std::error::Error>> {
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |k: &str| {
            line.split_once(&format!("{k}=\""))
                .and_then(|(_, r)| r.split_once('"'))
                .map_or("", |(v, _)| v)
        };
        let resource = label("resource");
        if ![
            "configmaps",
            "secrets",
            "serviceaccounts",
            "roles",
            "namespaces",
        ]
        .contains(&resource)
        {
            continue;
        }
        let mut verb = label("verb").to_string();
        if !label("dry_run").is_empty() {
            verb.push_str("(dry-run)");
        }
        if resource == "namespaces" {
            verb.push_str("[ns]");
        }
        let n: f64 = line
            .rsplit(' ')
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0.0);
        *out.entry(verb).or_insert(0) += n as u64;
    }
    Ok(out)
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn show(counts: &BTreeMap<String, u64>) -> String {
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{total} ({})", parts.join(" "))
}
