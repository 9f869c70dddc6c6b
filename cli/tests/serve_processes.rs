//! Separate `fleetform serve` processes sharding one fleet's tenants (`--shards`), state and
//! Leases in the real kube-apiserver, tenant objects applied to it by the real kube provider
//! (tests/peers/kube.sh start; skipped when it is not running, a failure when
//! FLEETFORM_REQUIRE_PEERS=1): every tenant shard is applied by exactly one process; a process
//! killed with SIGKILL has its tenants picked up by the others; a process paused (SIGSTOP) past
//! its lease and resumed writes nothing after the others took over.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetform_engine::state::StateStore;
use fleetform_state_kube::{KubeStateStore, Location, Options};

fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("FLEETFORM_TEST_KUBECONFIG") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!(
                "FLEETFORM_TEST_KUBECONFIG is not set: run tests/peers/kube.sh start and source target/peers/kube.env"
            )
        }
        None => {
            eprintln!("skipped: kube not running (tests/peers/kube.sh start)");
            None
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// 12, not 60: every tenant renders the GPU Operator chart into the one test apiserver, which
/// takes about 2 s of CPU per tenant on the 2-core test machine; 60 tenants over 3 replicas are
/// covered in process by state-kube/tests/serve_shards.rs.
const TENANTS: usize = 12;
const SHARDS: u32 = 6;
const LEASE_S: u64 = 2;

/// A fleet of `TENANTS` tenants whose clusters are all the test apiserver; each tenant has a
/// namespace of its own per generation, `<tenant>-g<generation>` (the first one kept: deleting
/// it would need consent), so every commit changes every tenant and the apiserver shows which
/// tenants were reconciled.
struct Fleet {
    root: tempfile::TempDir,
    location: Location,
}

impl Fleet {
    fn new(kc: &Path, prefix: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let charts = std::env::var_os("FLEETFORM_SHARED_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
            .join("fixtures/charts");
        let fleet = root.path().join("repo/fleet");
        let secrets = root.path().join("secrets");
        std::fs::create_dir_all(&fleet).unwrap();
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::copy(kc, secrets.join("admin.kubeconfig")).unwrap();
        std::fs::write(
            fleet.join("fleet.yaml"),
            format!(
                "apiVersion: fleetform.dev/v1alpha1\nkind: Fleet\nmetadata: {{name: procs}}\nspec:\n  charts: {{repository: {}, wait: false}}\n  operators:\n    gpuOperator:\n      version: v26.7.0\n      driver: {{version: \"580.159.04\"}}\n  managementCluster:\n    kubeconfig: {{file: admin.kubeconfig}}\n",
                charts.display()
            ),
        )
        .unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let f = Self {
            location: Location {
                namespace: "default".into(),
                fleet: format!("{prefix}{}-{nanos:x}", std::process::id()),
            },
            root,
        };
        git(&f.repo(), &["init", "-q"]);
        f.commit(1);
        std::fs::write(
            f.root.path().join("serve.yaml"),
            format!(
                "apiVersion: fleetform.dev/v1alpha1\nkind: ServeConfig\nfleet: procs\nsource:\n  url: {}\n  ref: {{branch: main}}\n  path: fleet\npollInterval: 1s\nlisten: 127.0.0.1:0\nstateDir: {}\nsecretsDir: {}\n",
                f.repo().display(),
                f.root.path().join("cache").display(),
                secrets.display()
            ),
        )
        .unwrap();
        f
    }

    fn repo(&self) -> PathBuf {
        self.root.path().join("repo")
    }

    /// Tenant names: the fleet's name makes them unique per test run.
    fn tenant(&self, i: usize) -> String {
        format!("{}-t{i:02}", self.location.fleet)
    }

    fn commit(&self, generation: u32) -> String {
        let mut y = String::new();
        for i in 0..TENANTS {
            let t = self.tenant(i);
            y.push_str(&format!(
                "---\napiVersion: fleetform.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  flavor: tenant-managed\n  kubernetes:\n    version: \"1.34\"\n    kubeconfig: {{file: admin.kubeconfig}}\n    podCidr: 10.{}.0.0/16\n    serviceCidr: 10.{}.0.0/16\n  nodeOs: {{byo: true}}\n  namespaces: [{t}-g1, {t}-g{generation}]\n",
                100 + i,
                i
            ));
        }
        std::fs::write(self.repo().join("fleet/tenants.yaml"), y).unwrap();
        git(&self.repo(), &["add", "-A"]);
        git(
            &self.repo(),
            &["commit", "-q", "-m", &format!("g{generation}")],
        );
        git(&self.repo(), &["rev-parse", "HEAD"])
    }

    fn serve(&self, kc: &Path, replica: usize) -> Child {
        let log = std::fs::File::create(self.log(replica)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_fleetform"))
            .args(["serve", "--config"])
            .arg(self.root.path().join("serve.yaml"))
            .args(["--state", &self.location.to_string()])
            .args(["--shards", &SHARDS.to_string()])
            .args(["--replica", &format!("serve-{replica}")])
            .args(["--lease-seconds", &LEASE_S.to_string()])
            .args(["--log-format", "json"])
            .env("FLEETFORM_STATE_KUBECONFIG", kc)
            .env("FLEETFORM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn log(&self, replica: usize) -> PathBuf {
        self.root.path().join(format!("serve-{replica}.log"))
    }

    /// Shard → how many times each process logged applying it.
    fn applied_by(&self, replicas: usize) -> BTreeMap<String, BTreeMap<usize, usize>> {
        let mut by: BTreeMap<String, BTreeMap<usize, usize>> = BTreeMap::new();
        for r in 0..replicas {
            let text = std::fs::read_to_string(self.log(r)).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("shard applied")) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let shard = v["fields"]["shard"].as_str().unwrap_or("?").to_string();
                *by.entry(shard).or_default().entry(r).or_default() += 1;
            }
        }
        by
    }

    fn shard_stores(&self, client: &kube::Client) -> Vec<(String, KubeStateStore)> {
        (0..SHARDS)
            .map(|k| k.to_string())
            .chain(["fleet".to_string()])
            .map(|k| {
                let at = Location {
                    namespace: self.location.namespace.clone(),
                    fleet: format!("{}-shard-{k}", self.location.fleet),
                };
                (
                    k,
                    KubeStateStore::new(client.clone(), at, Options::default()),
                )
            })
            .collect()
    }

    /// Waits until every shard's state records `commit`, at most `limit`.
    async fn until_applied(&self, client: &kube::Client, commit: &str, limit: Duration) {
        let started = Instant::now();
        let stores = self.shard_stores(client);
        loop {
            let mut behind = Vec::new();
            for (k, s) in &stores {
                let rev = s.load().await.ok().and_then(|st| st.last_applied_revision);
                if rev.as_deref() != Some(commit) {
                    behind.push(k.clone());
                }
            }
            if behind.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "shards {behind:?} did not apply {commit} within {limit:?}; logs in {}",
                self.root.path().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Namespaces in the apiserver, by name.
async fn namespaces(client: &kube::Client) -> BTreeSet<String> {
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect()
}

struct Procs(Vec<Option<Child>>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {}", child.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_serve_processes_apply_each_tenant_shard_once_and_a_killed_ones_tenants_are_picked_up()
 {
    let Some(kc) = kubeconfig() else { return };
    let client = fleetform_state_kube::client(Some(&kc), None).await.unwrap();
    let fleet = Fleet::new(&kc, "pk");
    let head = git(&fleet.repo(), &["rev-parse", "HEAD"]);
    let mut procs = Procs((0..3).map(|r| Some(fleet.serve(&kc, r))).collect());
    fleet
        .until_applied(&client, &head, Duration::from_secs(240))
        .await;
    let ns = namespaces(&client).await;
    for i in 0..TENANTS {
        let want = format!("{}-g1", fleet.tenant(i));
        assert!(ns.contains(&want), "{want} missing");
    }
    // Every shard applied by exactly one process, once (the first apply of the head; a
    // process that took a shard over later would log it too).
    // A process logs a shard after its state write: give the last line a moment.
    let started = Instant::now();
    let mut by = fleet.applied_by(3);
    while by.len() < SHARDS as usize + 1 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        by = fleet.applied_by(3);
    }
    assert_eq!(by.len(), SHARDS as usize + 1, "{by:?}");
    for (shard, procs) in &by {
        assert_eq!(procs.len(), 1, "shard {shard} applied by {procs:?}");
        assert_eq!(procs.values().sum::<usize>(), 1, "shard {shard}: {procs:?}");
    }

    // SIGKILL a process that owns tenant shards, then commit: the others pick its shards up.
    let victim = (0..3)
        .find(|r| by.iter().any(|(s, p)| s != "fleet" && p.contains_key(r)))
        .unwrap();
    let mut child = procs.0[victim].take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let head = fleet.commit(2);
    fleet
        .until_applied(&client, &head, Duration::from_secs(120))
        .await;
    let took = killed.elapsed();
    let ns = namespaces(&client).await;
    for i in 0..TENANTS {
        let want = format!("{}-g2", fleet.tenant(i));
        assert!(ns.contains(&want), "{want} missing after the kill");
    }
    eprintln!(
        "SIGKILL of serve-{victim}: generation 2 applied to every shard {took:?} after the kill ({LEASE_S} s leases)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_process_paused_past_its_lease_writes_nothing_after_the_others_took_over() {
    let Some(kc) = kubeconfig() else { return };
    let client = fleetform_state_kube::client(Some(&kc), None).await.unwrap();
    let fleet = Fleet::new(&kc, "pp");
    let head = git(&fleet.repo(), &["rev-parse", "HEAD"]);
    let procs = Procs((0..2).map(|r| Some(fleet.serve(&kc, r))).collect());
    fleet
        .until_applied(&client, &head, Duration::from_secs(240))
        .await;
    // Pause serve-0 (it owns shards), commit, let serve-1 take everything over and apply.
    let paused = procs.0[0].as_ref().unwrap();
    signal(paused, "-STOP");
    let head = fleet.commit(2);
    fleet
        .until_applied(&client, &head, Duration::from_secs(120))
        .await;
    // The heads as serve-1 left them.
    let heads = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        client.clone(),
        &fleet.location.namespace,
    );
    let versions = |names: Vec<String>| {
        let heads = heads.clone();
        async move {
            let mut v = BTreeMap::new();
            for n in names {
                let s = heads.get(&n).await.unwrap();
                v.insert(n, s.metadata.resource_version.unwrap());
            }
            v
        }
    };
    let names: Vec<String> = fleet
        .shard_stores(&client)
        .iter()
        .map(|(_, s)| fleetform_state_kube::head_name(&s.location().fleet))
        .collect();
    let before = versions(names.clone()).await;
    signal(paused, "-CONT");
    // Long enough for the resumed process to notice it lost its shards and to try whatever
    // it was doing: two lease durations and a few of its rounds.
    tokio::time::sleep(Duration::from_secs(3 * LEASE_S)).await;
    let after = versions(names).await;
    assert_eq!(
        before, after,
        "a head changed after the paused process resumed"
    );
    let log = std::fs::read_to_string(fleet.log(0)).unwrap();
    eprintln!(
        "paused serve-0 resumed: heads unchanged; its log mentions fencing {} time(s)",
        log.matches("fenc").count()
    );
    drop(procs);
}
