//! The apply path across an apiserver outage: kube-apiserver is stopped partway through an
//! apply and started again; transient errors retry with backoff, the apply converges, and a
//! re-plan is empty.
//!
//! The test starts its own kube-apiserver + etcd (tests/peers/kube.sh with a private state dir
//! and free ports), so stopping it never disturbs the shared peer other tests use. It runs
//! when the shared peer is up (its binaries are then installed) or FLEETFORM_REQUIRE_PEERS=1.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fleetform_engine::apply::{ApplyEvent, ApplyOptions};
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::provider::{
    Applied, ApplyContext, ApplyRequest, Change, Health, ObserveRequest, Observed, Provider,
    ProviderError,
};
use fleetform_engine::reconcile::{ObserveOptions, make_plan, run_apply};
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_engine::{Action, Desired, ResourceId};
use fleetform_kube::{ClusterConfig, KubeProvider, object_id};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

const CLUSTER: &str = "outage";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether to run: the peers are up (binaries installed) or required.
fn wanted() -> bool {
    let required = std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1");
    if required || std::env::var_os("FLEETFORM_TEST_KUBECONFIG").is_some() {
        return true;
    }
    eprintln!("skipped: kube not running (tests/peers/kube.sh start)");
    false
}

/// A port nothing listens on now, whose successor is free too (etcd's peer port is +1).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports on 127.0.0.1");
}

/// A private kube peer; stopped (both processes) when dropped, even when the test fails.
struct PrivatePeer {
    dir: tempfile::TempDir,
    port: u16,
    etcd_port: u16,
}

impl PrivatePeer {
    fn script(&self, verb: &str) -> Command {
        let mut c = Command::new(repo().join("tests/peers/kube.sh"));
        c.arg(verb)
            .env("FLEETFORM_PEERS_DIR", self.dir.path())
            .env("KUBE_PEER_PORT", self.port.to_string())
            .env("KUBE_PEER_ETCD_PORT", self.etcd_port.to_string())
            // One small CRD: the test applies core kinds only; loading all 40 costs seconds.
            .env(
                "KUBE_PEER_CRDS",
                fleetform_contract::testing::shared_fixture(repo(), "crds")
                    .join("keda/keda.sh_scaledobjects.yaml"),
            );
        c
    }

    fn run(&self, verb: &str) {
        let out = self.script(verb).output().unwrap();
        assert!(
            out.status.success(),
            "kube.sh {verb} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start() -> Self {
        let peer = Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port_pair(),
            etcd_port: free_port_pair(),
        };
        peer.run("start");
        peer
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kube/admin.kubeconfig")
    }
}

impl Drop for PrivatePeer {
    fn drop(&mut self) {
        let _ = self.script("stop").output();
    }
}

/// The real kube provider, with a hook: the `stop_at`-th apply call first waits until the
/// apiserver has been stopped, so the outage lands partway through the apply every time.
struct Outage {
    inner: KubeProvider,
    applies: AtomicUsize,
    stop_at: usize,
    stopped: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    stop_now: tokio::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

#[async_trait]
impl Provider for Outage {
    fn name(&self) -> &'static str {
        "kube"
    }
    async fn observe(
        &self,
        requests: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>> {
        self.inner.observe(requests).await
    }
    fn diff(
        &self,
        desired: &Desired,
        observed: Option<&Observed>,
    ) -> Result<Change, ProviderError> {
        self.inner.diff(desired, observed)
    }
    async fn apply(
        &self,
        request: &ApplyRequest<'_>,
        cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        if self.applies.fetch_add(1, Ordering::SeqCst) + 1 == self.stop_at {
            if let Some(tx) = self.stop_now.lock().await.take() {
                let _ = tx.send(());
            }
            if let Some(rx) = self.stopped.lock().await.take() {
                let _ = rx.await;
            }
        }
        self.inner.apply(request, cx).await
    }
    async fn health(&self, id: &ResourceId, spec: &Value) -> Result<Health, ProviderError> {
        self.inner.health(id, spec).await
    }
}

fn desired(object: Value) -> Desired {
    let spec = json!({"cluster": CLUSTER, "object": object});
    Desired::new(object_id(CLUSTER, &spec["object"]), spec)
}

fn objects() -> Vec<Desired> {
    let ns =
        desired(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "outage"}}));
    let ns_id = ns.id.clone();
    let mut out = vec![ns];
    for i in 0..40 {
        out.push(
            desired(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i:02}"), "namespace": "outage"},
                "data": {"index": i.to_string()}}))
            .depends_on(ns_id.clone(), "namespace outage first"),
        );
    }
    out
}

async fn plan(
    desired: &[Desired],
    store: &LocalStateStore,
    providers: &Providers,
) -> fleetform_engine::reconcile::Planned {
    let state = store.load().await.unwrap();
    make_plan(
        desired,
        &state,
        providers,
        &PlanOptions::default(),
        ObserveOptions::default(),
        Some("outage-test".into()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_interrupted_by_an_apiserver_restart_retries_and_converges_with_an_empty_replan() {
    if !wanted() {
        return;
    }
    let peer = Arc::new(PrivatePeer::start());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
    let outage = Arc::new(Outage {
        inner: KubeProvider::new(BTreeMap::from([(
            CLUSTER.to_string(),
            ClusterConfig::new(peer.kubeconfig()),
        )])),
        applies: AtomicUsize::new(0),
        stop_at: 15,
        stopped: tokio::sync::Mutex::new(Some(stopped_rx)),
        stop_now: tokio::sync::Mutex::new(Some(stop_tx)),
    });
    let providers = Providers::new().with(outage.clone());
    let state_dir = tempfile::tempdir().unwrap();
    let store = LocalStateStore::open(state_dir.path().join("state")).unwrap();
    let desired = objects();

    let planned = plan(&desired, &store, &providers).await;
    assert_eq!(planned.plan.summary.create, desired.len());

    // The outage: stop kube-apiserver when the 15th apply call starts, start it again after a
    // pause, while the apply keeps going.
    let p = peer.clone();
    let outage_task = tokio::spawn(async move {
        if stop_rx.await.is_err() {
            return false;
        }
        let p2 = p.clone();
        tokio::task::spawn_blocking(move || p2.run("apiserver-stop"))
            .await
            .unwrap();
        let _ = stopped_tx.send(());
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::spawn_blocking(move || p.run("apiserver-start"))
            .await
            .unwrap();
        true
    });

    let options = ApplyOptions {
        concurrency: 4,
        max_attempts: 30,
        base_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
        call_timeout: Duration::from_secs(10),
        health_poll: Duration::from_millis(200),
        health_timeout: Duration::from_secs(120),
        ..ApplyOptions::default()
    };
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let (_cancel_tx, cancel_rx) = watch::channel(false);
    let mut state = store.load().await.unwrap();
    let report = run_apply(
        &planned,
        &desired,
        &mut state,
        &store,
        &providers,
        &options,
        Some(events_tx),
        cancel_rx,
    )
    .await
    .unwrap();
    assert!(
        outage_task.await.unwrap(),
        "the apiserver was never stopped"
    );

    let mut retries = Vec::new();
    while let Ok(e) = events_rx.try_recv() {
        if let ApplyEvent::Retrying { error, .. } = e {
            retries.push(error);
        }
    }
    eprintln!(
        "{} retries during the outage, first: {:?}",
        retries.len(),
        retries.first()
    );
    assert!(
        report.succeeded(),
        "apply did not converge: {:#?}",
        report.root_causes()
    );
    assert!(
        !retries.is_empty(),
        "the outage caused no retry: the apiserver stop did not land mid-apply"
    );

    let again = plan(&desired, &store, &providers).await;
    let actionable: Vec<(&ResourceId, Action)> =
        again.plan.actionable().map(|c| (&c.id, c.action)).collect();
    assert!(
        actionable.is_empty(),
        "re-plan is not empty: {actionable:?}"
    );
}
