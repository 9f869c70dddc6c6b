//! `serve` daemons sharding the generated fleet's tenants (`fleetform dev generate`'s fleet,
//! compiled by the engine) over replicas, with the shard Leases and every shard's state in the
//! real kube-apiserver (tests/peers/kube.sh start; skipped when it is not running, a failure
//! when FLEETFORM_REQUIRE_PEERS=1), applying to one shared in-memory world per provider: every
//! tenant is reconciled by exactly one replica, and a replica that dies (its coordinator
//! dropped: no leave, no more renewals) has its tenants picked up once its Leases run out.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleetform_engine::load::SourceFile;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::provider::{
    Applied, ApplyContext, ApplyRequest, Change, Health, ObserveRequest, Observed, Provider,
    ProviderError,
};
use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::serve::daemon::{BoxError, Reconciled};
use fleetform_engine::serve::notify::Backoff;
use fleetform_engine::serve::shards::{Shard, Shards};
use fleetform_engine::serve::{Daemon, Pipeline, Prepared, ServeConfig};
use fleetform_engine::testing::MemoryProvider;
use fleetform_engine::{Desired, ResourceId, Sensitive};
use fleetform_state_kube::shard::{ShardSet, preferred_owner};
use fleetform_state_kube::{Location, Options};
use tokio::sync::watch;

/// Which replica applied each resource, in order.
type Log = Arc<Mutex<Vec<(usize, ResourceId)>>>;

/// The shared in-memory provider, seen from one replica: records who applied what, and names
/// a Kubernetes object's tenant (its cluster) as the kube provider does.
struct Seen {
    inner: Arc<MemoryProvider>,
    replica: usize,
    log: Log,
}

#[async_trait]
impl Provider for Seen {
    fn name(&self) -> &'static str {
        self.inner.name()
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
        self.log
            .lock()
            .unwrap()
            .push((self.replica, request.change.id.clone()));
        self.inner.apply(request, cx).await
    }
    async fn health(
        &self,
        id: &ResourceId,
        spec: &serde_json::Value,
    ) -> Result<Health, ProviderError> {
        self.inner.health(id, spec).await
    }
    fn maintenance(&self) -> Option<&dyn fleetform_engine::provider::NodeMaintenance> {
        self.inner.maintenance()
    }
    fn tenant<'a>(&self, id: &'a ResourceId) -> Option<&'a str> {
        fleetform_engine::address::kube_cluster(id)
    }
}

struct FixedSecrets;
impl SecretResolver for FixedSecrets {
    fn resolve(&self, _r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new("test-secret".into()))
    }
}

/// The tenant of a compiled resource: the cluster of a Kubernetes object other than the
/// management cluster's.
fn tenant(id: &ResourceId) -> Option<&str> {
    fleetform_engine::address::kube_cluster(id).filter(|c| *c != "mgmt")
}

/// Compiles the generated fleet and stamps every tenant object with the `# generation N`
/// line of `fleet.yaml`, so a
/// new commit changes every tenant.
struct SynthPipeline {
    world: Vec<Arc<MemoryProvider>>,
    replica: usize,
    log: Log,
}

impl Pipeline for SynthPipeline {
    fn prepare(&self, files: &[SourceFile]) -> Result<Prepared, BoxError> {
        // The source reads only YAML: the stamp is a comment line of fleet.yaml.
        let generation = files
            .iter()
            .find(|f| f.path == "fleet.yaml")
            .and_then(|f| {
                String::from_utf8_lossy(&f.bytes)
                    .lines()
                    .find_map(|l| l.strip_prefix("# generation ").map(str::to_string))
            })
            .unwrap_or_default();
        let yaml: Vec<SourceFile> = files
            .iter()
            .filter(|f| f.path.ends_with(".yaml"))
            .cloned()
            .collect();
        let (docs, diags) = fleetform_engine::load::load(&yaml);
        if !diags.is_empty() {
            return Err(format!("{diags:?}").into());
        }
        let fleet = fleetform_engine::validate::validate(&docs).map_err(|d| format!("{d:?}"))?;
        let compiled = fleetform_engine::compile::compile(&fleet, &FixedSecrets)
            .map_err(|d| format!("{d:?}"))?;
        let mut desired = compiled.resources;
        for d in &mut desired {
            if tenant(&d.id).is_some() {
                d.spec["testGeneration"] = serde_json::json!(generation);
            }
        }
        let mut providers = Providers::new();
        for p in &self.world {
            providers = providers.with(Arc::new(Seen {
                inner: p.clone(),
                replica: self.replica,
                log: self.log.clone(),
            }));
        }
        Ok(Prepared {
            desired,
            providers,
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

/// A git repository holding the generated fleet (`hosts`, `tenants`) and a generation stamp.
struct Fleet {
    repo: tempfile::TempDir,
    desired: Vec<Desired>,
}

impl Fleet {
    fn new(hosts: usize, tenants: usize) -> Self {
        let repo = tempfile::tempdir().unwrap();
        let files = fleetform_engine::synth::synthetic_fleet(hosts, tenants);
        for f in &files {
            let path = repo.path().join("fleet").join(&f.path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, &f.bytes).unwrap();
        }
        git(repo.path(), &["init", "-q"]);
        let mut fleet = Self {
            repo,
            desired: Vec::new(),
        };
        fleet.commit(1);
        let pipeline = SynthPipeline {
            world: Vec::new(),
            replica: 0,
            log: Log::default(),
        };
        fleet.desired = pipeline.prepare(&files).unwrap().desired;
        fleet
    }

    fn commit(&mut self, generation: u32) {
        let path = self.repo.path().join("fleet/fleet.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut text: String = text
            .lines()
            .filter(|l| !l.starts_with("# generation "))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(&format!("# generation {generation}\n"));
        std::fs::write(path, text).unwrap();
        git(self.repo.path(), &["add", "-A"]);
        git(
            self.repo.path(),
            &["commit", "-q", "-m", &format!("generation {generation}")],
        );
    }

    fn tenants(&self) -> BTreeSet<String> {
        self.desired
            .iter()
            .filter_map(|d| tenant(&d.id).map(str::to_string))
            .collect()
    }
}

/// One world shared by every replica: kube, redfish, ngc and nico in memory.
fn world() -> Vec<Arc<MemoryProvider>> {
    ["kube", "redfish", "ngc", "nico"]
        .into_iter()
        .map(|n| Arc::new(MemoryProvider::named(n)))
        .collect()
}

fn daemon(
    fleet: &Fleet,
    dir: &Path,
    world: &[Arc<MemoryProvider>],
    replica: usize,
    log: &Log,
    shards: Arc<dyn Shards>,
) -> Daemon {
    let yaml = format!(
        "apiVersion: fleetform.dev/v1alpha1\nkind: ServeConfig\nfleet: synthetic\nsource:\n  url: {}\n  ref: {{branch: main}}\n  path: fleet\nlisten: 127.0.0.1:0\nstateDir: {}\n",
        fleet.repo.path().display(),
        dir.display()
    );
    let config = ServeConfig::parse("serve.yaml", yaml.as_bytes()).unwrap();
    let pipeline = Arc::new(SynthPipeline {
        world: world.to_vec(),
        replica,
        log: log.clone(),
    });
    Daemon::new(
        config,
        pipeline,
        Arc::new(fleetform_engine::secret::LocalSecrets::new(dir)),
    )
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
    .with_shards(shards)
}

fn location(prefix: &str) -> Location {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Location {
        namespace: "default".into(),
        fleet: format!("{prefix}{}-{nanos:x}", std::process::id()),
    }
}

async fn shard_set(client: &kube::Client, at: &Location, replica: usize, count: u32) -> ShardSet {
    ShardSet::start(
        client.clone(),
        at,
        &format!("serve-{replica}"),
        count,
        Options {
            lease_duration: Duration::from_secs(2),
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

/// Waits (at most `limit`) until `sets` (replicas `serve-0`, `serve-1`, …) own every shard
/// between them, each exactly once and each by its preferred (rendezvous) owner among them.
async fn until_settled(sets: &[&dyn Shards], count: u32, limit: Duration) -> Duration {
    let started = Instant::now();
    let members: BTreeSet<String> = (0..sets.len()).map(|i| format!("serve-{i}")).collect();
    let preferred: Vec<BTreeSet<Shard>> = (0..sets.len())
        .map(|i| {
            (0..=count)
                .filter(|k| preferred_owner(*k, &members) == Some(format!("serve-{i}").as_str()))
                .map(|k| {
                    if k == count {
                        Shard::Fleet
                    } else {
                        Shard::Tenants(k)
                    }
                })
                .collect()
        })
        .collect();
    loop {
        let owned: Vec<BTreeSet<Shard>> = sets.iter().map(|s| s.owned()).collect();
        if owned == preferred {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "the shards did not settle on their preferred owners within {limit:?}: {owned:?}, expected {preferred:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reconciles with each daemon until all succeed (a tenant shard may wait for the fleet shard
/// first), at most `limit`.
async fn reconcile_all(daemons: &mut [Daemon], limit: Duration) -> Vec<Reconciled> {
    let (_tx, rx) = watch::channel(false);
    let started = Instant::now();
    let mut done: Vec<Option<Reconciled>> = vec![None; daemons.len()];
    loop {
        let pending: Vec<usize> = (0..daemons.len()).filter(|i| done[*i].is_none()).collect();
        if pending.is_empty() {
            return done.into_iter().map(Option::unwrap).collect();
        }
        let results = futures::future::join_all(
            daemons
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| done[*i].is_none())
                .map(|(_, d)| d.reconcile(&rx)),
        )
        .await;
        for (i, r) in pending.into_iter().zip(results) {
            match r {
                Ok(r) => done[i] = Some(r),
                Err(f) => {
                    assert!(
                        started.elapsed() < limit,
                        "replica {i} still failing after {limit:?}: {f}"
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tenant → the replicas that applied any of its resources, from the log entries after `from`.
fn appliers(log: &Log, from: usize) -> BTreeMap<String, BTreeSet<usize>> {
    let mut by_tenant: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (replica, id) in log.lock().unwrap()[from..].iter() {
        if let Some(t) = tenant(id) {
            by_tenant.entry(t.to_string()).or_default().insert(*replica);
        }
    }
    by_tenant
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_tenants_over_three_replicas_are_each_reconciled_by_one_and_a_dead_replicas_are_picked_up()
 {
    let Some(client) = client().await else { return };
    let mut fleet = Fleet::new(60, 60);
    let tenants = fleet.tenants();
    assert_eq!(tenants.len(), 60, "{tenants:?}");
    let at = location("sh");
    let count = 12;
    let world = world();
    let log = Log::default();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut sets: Vec<Arc<ShardSet>> = vec![
        Arc::new(shard_set(&client, &at, 0, count).await),
        Arc::new(shard_set(&client, &at, 1, count).await),
        Arc::new(shard_set(&client, &at, 2, count).await),
    ];
    // The first rounds ran before the others joined: wait until ownership settles.
    let refs: Vec<&dyn Shards> = sets.iter().map(|s| s.as_ref() as &dyn Shards).collect();
    until_settled(&refs, count, Duration::from_secs(10)).await;
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|i| daemon(&fleet, dirs[i].path(), &world, i, &log, sets[i].clone()))
        .collect();

    let results = reconcile_all(&mut daemons, Duration::from_secs(60)).await;
    let by_tenant = appliers(&log, 0);
    assert_eq!(
        by_tenant.keys().cloned().collect::<BTreeSet<_>>(),
        tenants,
        "{results:?}"
    );
    for (t, replicas) in &by_tenant {
        assert_eq!(replicas.len(), 1, "tenant {t} reconciled by {replicas:?}");
    }
    let kube = world[0].world();
    for d in fleet.desired.iter().filter(|d| d.id.provider() == "kube") {
        assert_eq!(kube.creates.get(&d.id), Some(&1), "{} created", d.id);
    }
    let per_replica: Vec<usize> = (0..3)
        .map(|r| by_tenant.values().filter(|s| s.contains(&r)).count())
        .collect();
    eprintln!("60 tenants over 3 replicas, 12 + 1 shards: tenants per replica {per_replica:?}");

    // Replica 2 dies: its coordinator stops (no leave, no renewals) and it reconciles no more.
    let theirs: BTreeSet<String> = by_tenant
        .iter()
        .filter(|(_, r)| r.contains(&2))
        .map(|(t, _)| t.clone())
        .collect();
    assert!(
        !theirs.is_empty(),
        "replica 2 owned no tenant: {per_replica:?}"
    );
    drop(daemons.pop());
    let dead = sets.pop().unwrap();
    drop(Arc::try_unwrap(dead).ok().expect("only the test holds it"));
    let killed = Instant::now();
    fleet.commit(2);
    let refs: Vec<&dyn Shards> = sets.iter().map(|s| s.as_ref() as &dyn Shards).collect();
    let picked_up = until_settled(&refs, count, Duration::from_secs(10)).await;
    let from = log.lock().unwrap().len();
    let results = reconcile_all(&mut daemons, Duration::from_secs(60)).await;
    let finished = killed.elapsed();
    let after = appliers(&log, from);
    assert_eq!(
        after.keys().cloned().collect::<BTreeSet<_>>(),
        tenants,
        "every tenant reconciled for generation 2: {results:?}"
    );
    for t in &theirs {
        assert!(
            !after[t].contains(&2) && after[t].len() == 1,
            "tenant {t} of the dead replica: {:?}",
            after[t]
        );
    }
    let kube = world[0].world();
    for d in fleet.desired.iter().filter(|d| tenant(&d.id).is_some()) {
        assert_eq!(
            kube.objects[&d.id]["testGeneration"], "2",
            "{} not at generation 2",
            d.id
        );
        assert_eq!(kube.creates.get(&d.id), Some(&1), "{} created twice", d.id);
    }
    eprintln!(
        "replica 2 dropped ({} tenants): its shards owned by the others after {picked_up:?}, generation 2 applied everywhere {finished:?} after the kill (2 s leases)",
        theirs.len()
    );
}

/// Throughput for BENCHMARKS.md (bench/serve-shards.sh): the generated fleet reconciled from
/// nothing by 1 and by 3 replicas, 12 tenant shards, state in the apiserver. Ignored in the
/// ordinary run: it measures, it does not pin behaviour beyond the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: bench/serve-shards.sh"]
async fn throughput_of_one_and_three_replicas_on_the_generated_fleet() {
    let Some(client) = client().await else { return };
    let tenants: usize = std::env::var("BENCH_TENANTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let hosts: usize = std::env::var("BENCH_HOSTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(tenants);
    let count = 12;
    for replicas in [1usize, 3] {
        let fleet = Fleet::new(hosts, tenants);
        let at = location("tp");
        let world = world();
        let log = Log::default();
        let dirs: Vec<tempfile::TempDir> = (0..replicas)
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let mut sets = Vec::new();
        for i in 0..replicas {
            sets.push(Arc::new(shard_set(&client, &at, i, count).await));
        }
        let refs: Vec<&dyn Shards> = sets.iter().map(|s| s.as_ref() as &dyn Shards).collect();
        until_settled(&refs, count, Duration::from_secs(10)).await;
        let mut daemons: Vec<Daemon> = (0..replicas)
            .map(|i| daemon(&fleet, dirs[i].path(), &world, i, &log, sets[i].clone()))
            .collect();
        let started = Instant::now();
        reconcile_all(&mut daemons, Duration::from_secs(600)).await;
        let secs = started.elapsed().as_secs_f64();
        let resources = fleet.desired.len();
        println!(
            "replicas={replicas} tenants={tenants} hosts={hosts} resources={resources} shards={count}+1 reconcile_s={secs:.2} tenants_per_minute={:.0}",
            tenants as f64 / secs * 60.0
        );
        for s in &sets {
            s.leave().await;
        }
    }
}
