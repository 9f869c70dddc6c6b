//! Several `serve` daemons on one fleet whose state is in the real kube-apiserver
//! (tests/peers/kube.sh start; skipped when it is not running, a failure when
//! FLEETFORM_REQUIRE_PEERS=1), applying to one shared in-memory world: exactly one applies each
//! change; a leader that dies mid-apply (its task dropped: no unlock, no more renewals) is
//! replaced once its lease runs out, and the successor finishes without duplicates or losses.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetform_engine::load::SourceFile;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::serve::daemon::{BoxError, Reconciled};
use fleetform_engine::serve::notify::Backoff;
use fleetform_engine::serve::{Daemon, Pipeline, Prepared, ServeConfig};
use fleetform_engine::state::StateStore;
use fleetform_engine::testing::{MemoryProvider, Script};
use fleetform_engine::{Desired, ResourceId};
use fleetform_state_kube::{KubeStateStore, Location, Options};
use tokio::sync::watch;

/// `fleet/resources.yaml`: one `name: value` line per resource `test:name`.
struct LinesPipeline {
    provider: Arc<MemoryProvider>,
}

impl Pipeline for LinesPipeline {
    fn prepare(&self, files: &[SourceFile]) -> Result<Prepared, BoxError> {
        let file = files
            .iter()
            .find(|f| f.path == "resources.yaml")
            .ok_or("resources.yaml is missing")?;
        let mut desired = Vec::new();
        for line in std::str::from_utf8(&file.bytes)?.lines() {
            let (name, value) = line.split_once(':').ok_or("not `name: value`")?;
            desired.push(Desired::new(
                ResourceId::new("test", name.trim()),
                serde_json::json!({ "value": value.trim() }),
            ));
        }
        Ok(Prepared {
            desired,
            providers: Providers::new().with(self.provider.clone()),
            plan_options: PlanOptions::default(),
            hooks: Vec::new(),
        })
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn commit(repo: &Path, version: u32) {
    commit_n(repo, version, 30);
}

fn commit_n(repo: &Path, version: u32, resources: usize) {
    let lines: String = (0..resources)
        .map(|i| format!("r{i:02}: v{version}\n"))
        .collect();
    std::fs::create_dir_all(repo.join("fleet")).unwrap();
    std::fs::write(repo.join("fleet/resources.yaml"), lines).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", &format!("v{version}")]);
}

async fn client() -> Option<kube::Client> {
    let path = match std::env::var_os("FLEETFORM_TEST_KUBECONFIG") {
        Some(p) => std::path::PathBuf::from(p),
        None if std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!(
                "FLEETFORM_TEST_KUBECONFIG is not set: run tests/peers/kube.sh start and source target/peers/kube.env"
            )
        }
        None => {
            eprintln!("skipped: kube not running (tests/peers/kube.sh start)");
            return None;
        }
    };
    Some(
        fleetform_state_kube::client(Some(&path), None)
            .await
            .unwrap(),
    )
}

struct Replicas {
    repo: tempfile::TempDir,
    dirs: Vec<tempfile::TempDir>,
    provider: Arc<MemoryProvider>,
    client: kube::Client,
    location: Location,
}

impl Replicas {
    /// Replica `i` with its state in the Kubernetes API.
    fn daemon(&self, i: usize) -> Daemon {
        let store = KubeStateStore::new(
            self.client.clone(),
            self.location.clone(),
            Options {
                lease_duration: Duration::from_secs(2),
                renew: true,
                ..Options::default()
            },
        );
        self.local_daemon(i).with_state_store(Box::new(store))
    }

    /// Replica `i` with its state in its own directory (the default).
    fn local_daemon(&self, i: usize) -> Daemon {
        let yaml = format!(
            "apiVersion: fleetform.dev/v1alpha1\nkind: ServeConfig\nfleet: test\nsource:\n  url: {}\n  ref: {{branch: main}}\n  path: fleet\nlisten: 127.0.0.1:0\nstateDir: {}\n",
            self.repo.path().display(),
            self.dirs[i].path().display()
        );
        let config = ServeConfig::parse("serve.yaml", yaml.as_bytes()).unwrap();
        let pipeline = Arc::new(LinesPipeline {
            provider: self.provider.clone(),
        });
        let resolver = Arc::new(fleetform_engine::secret::LocalSecrets::new(
            self.dirs[i].path(),
        ));
        Daemon::new(config, pipeline, resolver)
            .unwrap()
            .with_apply_options(fleetform_engine::apply::ApplyOptions {
                base_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                health_poll: Duration::from_millis(5),
                ..Default::default()
            })
            .with_retry(Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
            })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_apply_each_change_once_and_a_killed_leader_is_replaced_without_duplicates()
{
    let Some(client) = client().await else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let r = Replicas {
        repo: tempfile::tempdir().unwrap(),
        dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
        provider: Arc::new(MemoryProvider::new()),
        client,
        location: Location {
            namespace: "default".into(),
            fleet: format!("sr{}-{nanos:x}", std::process::id()),
        },
    };
    git(r.repo.path(), &["init", "-q"]);
    commit(r.repo.path(), 1);
    let ids: Vec<ResourceId> = (0..30)
        .map(|i| ResourceId::new("test", format!("r{i:02}")))
        .collect();
    for id in &ids {
        r.provider.script(
            id,
            Script {
                latency_ms: 20,
                ..Script::default()
            },
        );
    }

    // Three replicas reconcile the same commit at once.
    let (_tx, rx) = watch::channel(false);
    let (mut a, mut b, mut c) = (r.daemon(0), r.daemon(1), r.daemon(2));
    let (ra, rb, rc) = tokio::join!(a.reconcile(&rx), b.reconcile(&rx), c.reconcile(&rx));
    let applied = [&ra, &rb, &rc]
        .iter()
        .filter(|o| matches!(o, Ok(Reconciled::Applied { summary, .. }) if summary.contains("30")))
        .count();
    assert_eq!(applied, 1, "{ra:?}\n{rb:?}\n{rc:?}");
    let world = r.provider.world();
    for id in &ids {
        assert_eq!(
            world.attempts.get(id),
            Some(&1),
            "{id} applied more than once"
        );
        assert_eq!(world.creates.get(id), Some(&1));
    }
    drop((a, b, c));

    // v2: the leader dies mid-apply (its task is dropped: no unlock, its lease is not renewed).
    commit(r.repo.path(), 2);
    // Staggered latencies: resources finish one after another, so the kill lands mid-apply.
    for (i, id) in ids.iter().enumerate() {
        r.provider.script(
            id,
            Script {
                latency_ms: 50 + 40 * i as u64,
                ..Script::default()
            },
        );
    }
    let mut leader = r.daemon(0);
    let task = tokio::spawn(async move {
        let (_tx, rx) = watch::channel(false);
        leader.reconcile(&rx).await
    });
    let started = Instant::now();
    loop {
        let w = r.provider.world();
        let done = ids
            .iter()
            .filter(|id| w.objects[*id]["value"] == "v2")
            .count();
        if done >= 5 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the leader never started applying"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    let killed = Instant::now();
    let _ = task.await;
    let half = ids
        .iter()
        .filter(|id| r.provider.world().objects[*id]["value"] == "v2")
        .count();
    assert!((5..30).contains(&half), "killed with {half}/30 applied");

    let mut successor = r.daemon(1);
    let (_tx, rx) = watch::channel(false);
    // Refused while the dead leader's lease is still live, then it takes over.
    let outcome = loop {
        match successor.reconcile(&rx).await {
            Ok(o) => break o,
            Err(f) => {
                assert!(f.to_string().contains("locked"), "{f}");
                assert!(
                    killed.elapsed() < Duration::from_secs(10),
                    "no takeover: {f}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let takeover = killed.elapsed();
    assert!(matches!(outcome, Reconciled::Applied { .. }), "{outcome:?}");
    let world = r.provider.world();
    for id in &ids {
        assert_eq!(world.objects[id]["value"], "v2", "{id} lost");
        assert_eq!(world.creates.get(id), Some(&1), "{id} created twice");
        // Applied once for v1, once for v2; a v2 apply in flight at the kill may be repeated
        // (its intent was journaled, its result was not): at most once more.
        let n = world.attempts[id];
        assert!((2..=3).contains(&n), "{id} applied {n} times");
    }
    eprintln!(
        "killed mid-apply ({half}/30 done) -> the successor finished the apply: {takeover:?} (lease 2 s)"
    );
    assert!(
        takeover >= Duration::from_millis(1500),
        "taken over before the lease ran out: {takeover:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_resources_apply_through_kubernetes_state_with_every_step_recorded() {
    let Some(client) = client().await else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let setup = |fleet: String| Replicas {
        repo: tempfile::tempdir().unwrap(),
        dirs: vec![tempfile::tempdir().unwrap()],
        provider: Arc::new(MemoryProvider::new()),
        client: client.clone(),
        location: Location {
            namespace: "default".into(),
            fleet,
        },
    };
    let (local, kube) = (
        setup(String::new()),
        setup(format!("big{}-{nanos:x}", std::process::id())),
    );
    for r in [&local, &kube] {
        git(r.repo.path(), &["init", "-q"]);
        commit_n(r.repo.path(), 1, 2000);
    }
    let (_tx, rx) = watch::channel(false);
    let t = Instant::now();
    let outcome = local.local_daemon(0).reconcile(&rx).await.unwrap();
    let local_s = t.elapsed().as_secs_f64();
    assert!(matches!(outcome, Reconciled::Applied { .. }), "{outcome:?}");
    let t = Instant::now();
    // A store that deadlocks under the engine's concurrency (a write parked in a future the
    // apply loop is not polling) hangs here: fail instead.
    let outcome = tokio::time::timeout(Duration::from_secs(120), kube.daemon(0).reconcile(&rx))
        .await
        .expect("the apply through Kubernetes state finished within 120 s")
        .unwrap();
    let kube_s = t.elapsed().as_secs_f64();
    let Reconciled::Applied { commit, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let state = KubeStateStore::new(
        kube.client.clone(),
        kube.location.clone(),
        Options::default(),
    )
    .load()
    .await
    .unwrap();
    assert_eq!(state.resources.len(), 2000);
    assert!(state.resources.values().all(|e| !e.pending));
    assert_eq!(state.last_applied_revision, Some(commit));
    assert_eq!(kube.provider.world().objects.len(), 2000);
    eprintln!(
        "2000 resources, one reconcile: local directory {local_s:.2} s, Kubernetes state {kube_s:.2} s"
    );
}
