//! `fleetform serve` end to end with the in-memory provider: real git
//! repositories (local, and served by `git daemon` from tests/peers/git.sh),
//! the real HTTP endpoint, real signals through the daemon's cancel path.
#![allow(clippy::unwrap_used)]

mod source_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetform_engine::load::SourceFile;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::serve::daemon::{BoxError, Reconciled, Retry};
use fleetform_engine::serve::notify::Backoff;
use fleetform_engine::serve::webhook::github_signature;
use fleetform_engine::serve::{Daemon, Pipeline, Prepared, ServeConfig};
use fleetform_engine::state::{LocalStateStore, LockInfo, StateStore};
use fleetform_engine::testing::{MemoryProvider, Script};
use fleetform_engine::{Desired, ResourceId};
use serde_json::json;
use source_support::{WorkRepo, git, unique};
use tokio::sync::watch;

/// The test fleet format: in `fleet/resources.yaml`, each `name: value` line
/// is a resource `test:name`; `name: value <- other` makes it depend on `other`.
struct LinesPipeline {
    provider: Arc<MemoryProvider>,
}

impl Pipeline for LinesPipeline {
    fn prepare(&self, files: &[SourceFile]) -> Result<Prepared, BoxError> {
        let file = files
            .iter()
            .find(|f| f.path == "resources.yaml")
            .ok_or("resources.yaml is missing")?;
        let text = std::str::from_utf8(&file.bytes)?;
        let mut desired = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (name, rest) = line
                .split_once(':')
                .ok_or_else(|| format!("resources.yaml: `{line}` is not `name: value`"))?;
            let (value, dep) = match rest.split_once("<-") {
                Some((v, d)) => (v.trim(), Some(d.trim())),
                None => (rest.trim(), None),
            };
            let mut d = Desired::new(id(name.trim()), json!({ "value": value }));
            if let Some(dep) = dep {
                d = d.depends_on(id(dep), format!("{name} needs {dep}"));
            }
            desired.push(d);
        }
        Ok(Prepared {
            desired,
            providers: Providers::new().with(self.provider.clone()),
            plan_options: PlanOptions::default(),
            hooks: Vec::new(),
        })
    }
}

fn id(name: &str) -> ResourceId {
    ResourceId::new("test", name)
}

/// A fleet repository with `fleet/resources.yaml`.
fn fleet_repo(resources: &str) -> WorkRepo {
    let work = WorkRepo::new();
    work.write("fleet/resources.yaml", resources);
    work.commit("resources");
    work
}

struct Setup {
    dir: tempfile::TempDir,
    provider: Arc<MemoryProvider>,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let provider = Arc::new(MemoryProvider::persistent(dir.path().join("world.json")));
        Self { dir, provider }
    }

    /// A config following `url`'s main branch; `extra` is appended (YAML).
    fn config(&self, url: &str, extra: &str) -> ServeConfig {
        let state = self.dir.path().join("state");
        let yaml = format!(
            "apiVersion: fleetform.dev/v1alpha1\nkind: ServeConfig\nfleet: test\nsource:\n  url: {url}\n  ref: {{branch: main}}\n  path: fleet\nlisten: 127.0.0.1:0\nstateDir: {}\n{extra}",
            state.display()
        );
        ServeConfig::parse("serve.yaml", yaml.as_bytes()).unwrap()
    }

    fn daemon(&self, config: ServeConfig) -> Daemon {
        let pipeline = Arc::new(LinesPipeline {
            provider: self.provider.clone(),
        });
        let resolver = Arc::new(fleetform_engine::secret::LocalSecrets::new(self.dir.path()));
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

    fn store(&self) -> LocalStateStore {
        LocalStateStore::open(self.dir.path().join("state")).unwrap()
    }

    async fn last_applied(&self) -> Option<String> {
        self.store().load().await.unwrap().last_applied_revision
    }

    fn value(&self, name: &str) -> Option<String> {
        self.provider
            .world()
            .objects
            .get(&id(name))
            .and_then(|o| o["value"].as_str().map(str::to_string))
    }
}

/// A running daemon: its address and the way to stop it.
struct Running {
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(mut daemon: Daemon) -> Self {
        let addr = daemon.listen().await.unwrap();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(async move { daemon.run(rx).await.unwrap() });
        Self { addr, stop, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the daemon stops within 30 s of a shutdown request")
            .unwrap();
    }
}

/// Waits up to `limit` for `check`, polling every 50 ms.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A bare repository in the git peer's base directory, served by `git daemon`.
struct Served {
    work: WorkRepo,
    url: String,
    bare: std::path::PathBuf,
}

impl Served {
    fn new(resources: &str) -> Option<Self> {
        let [base, daemon] =
            source_support::peer_envs(["FLEETFORM_GIT_BASE", "FLEETFORM_GIT_DAEMON_URL"])?;
        let work = fleet_repo(resources);
        let name = format!("{}.git", unique("serve"));
        git(
            std::path::Path::new(&base),
            &["init", "-q", "--bare", &name],
        );
        let bare = std::path::PathBuf::from(&base).join(&name);
        let s = Self {
            work,
            url: format!("{daemon}/{name}"),
            bare,
        };
        s.push();
        Some(s)
    }

    fn push(&self) {
        let bare = self.bare.to_str().unwrap();
        self.work
            .git(&["push", "-q", "--force", bare, "HEAD:refs/heads/main"]);
    }

    fn commit(&self, resources: &str, msg: &str) -> String {
        self.work.write("fleet/resources.yaml", resources);
        let c = self.work.commit(msg);
        self.push();
        c
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bare);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_pushed_to_git_daemon_is_applied_by_the_next_polls() {
    let Some(served) = Served::new("a: 1\n") else {
        return;
    };
    let setup = Setup::new();
    let running =
        Running::start(setup.daemon(setup.config(&served.url, "pollInterval: 1s\n"))).await;
    let first = served.work.head();
    assert!(
        eventually(Duration::from_secs(20), || async {
            setup.last_applied().await.as_deref() == Some(first.as_str())
        })
        .await,
        "the head at start is applied"
    );
    assert_eq!(setup.value("a").as_deref(), Some("1"));

    let second = served.commit("a: 2\nb: 1 <- a\n", "change a, add b");
    // Bounded, not timed: with a 1 s poll the next polls pick the commit up; the bound only
    // keeps a broken poller from hanging the suite (the speed is measured in BENCHMARKS.md).
    assert!(
        eventually(Duration::from_secs(30), || async {
            setup.last_applied().await.as_deref() == Some(second.as_str())
        })
        .await,
        "the pushed commit is applied by a later poll"
    );
    assert_eq!(setup.value("a").as_deref(), Some("2"));
    assert_eq!(setup.value("b").as_deref(), Some("1"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_triggers_an_immediate_fetch_and_a_bad_signature_changes_nothing() {
    let Some(served) = Served::new("a: 1\n") else {
        return;
    };
    let setup = Setup::new();
    std::fs::write(setup.dir.path().join("hook-secret"), "s3cret-hook-key").unwrap();
    // A poll interval of an hour: only the webhook can explain a fast apply.
    let config = setup.config(
        &served.url,
        "pollInterval: 1h\nwebhook:\n  provider: github\n  secret: {file: hook-secret}\n",
    );
    let running = Running::start(setup.daemon(config)).await;
    let first = served.work.head();
    assert!(
        eventually(Duration::from_secs(20), || async {
            setup.last_applied().await.as_deref() == Some(first.as_str())
        })
        .await
    );
    let second = served.commit("a: 2\n", "change a");
    let body = json!({"ref": "refs/heads/main", "after": second, "repository": {"full_name": "acme/fleet"}})
        .to_string();
    let client = reqwest::Client::new();
    let post = |signature: String| {
        client
            .post(running.url("/hooks/git"))
            .header("X-GitHub-Event", "push")
            .header("X-Hub-Signature-256", signature)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
    };

    let forged = post(github_signature(b"not-the-secret", body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(setup.last_applied().await.as_deref(), Some(first.as_str()));
    assert_eq!(
        setup.value("a").as_deref(),
        Some("1"),
        "a forged push changes nothing"
    );

    let signed = post(github_signature(b"s3cret-hook-key", body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(signed.status(), 202);
    assert!(
        eventually(Duration::from_secs(5), || async {
            setup.last_applied().await.as_deref() == Some(second.as_str())
        })
        .await,
        "an authentic push is applied at once"
    );
    assert_eq!(setup.value("a").as_deref(), Some("2"));

    let metrics = client
        .get(running.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("fleetform_errors_total{kind=\"webhook\"} 1"),
        "{metrics}"
    );
    running.stop().await;
}

#[tokio::test]
async fn an_unsigned_commit_is_refused_before_anything_is_planned_when_verification_is_on() {
    let work = fleet_repo("a: 1\n");
    let setup = Setup::new();
    let (_, alice) = source_support::ssh_key(setup.dir.path(), "alice");
    std::fs::write(
        setup.dir.path().join("allowed_signers"),
        format!("alice@example.com {alice}\n"),
    )
    .unwrap();
    let config = setup.config(
        work.path().to_str().unwrap(),
        &format!(
            "verification:\n  allowedSigners: {}\n",
            setup.dir.path().join("allowed_signers").display()
        ),
    );
    let mut daemon = setup.daemon(config);
    let (_tx, rx) = watch::channel(false);
    let failure = daemon.reconcile(&rx).await.unwrap_err();
    assert_eq!(failure.kind, "verify");
    assert_eq!(failure.retry, Retry::NextPoll);
    assert_eq!(failure.revision.as_deref(), Some(work.head().as_str()));
    assert!(failure.message.contains("is not signed"), "{failure}");
    assert!(setup.provider.world().objects.is_empty(), "nothing applied");
    assert_eq!(setup.last_applied().await, None);
    let status = daemon.status();
    assert_eq!(status.last_result.as_deref(), Some("failed"));
    assert_eq!(status.consecutive_failures, 1);
}

#[tokio::test]
async fn an_invalid_manifest_fails_the_reconcile_and_waits_for_the_next_commit() {
    let work = fleet_repo("a: 1\n");
    let setup = Setup::new();
    let mut daemon = setup.daemon(setup.config(work.path().to_str().unwrap(), ""));
    let (_tx, rx) = watch::channel(false);
    assert!(matches!(
        daemon.reconcile(&rx).await.unwrap(),
        Reconciled::Applied { .. }
    ));
    work.write("fleet/resources.yaml", "this line has no colon\n");
    let bad = work.commit("broken");
    let failure = daemon.reconcile(&rx).await.unwrap_err();
    assert_eq!((failure.kind, failure.retry), ("validate", Retry::NextPoll));
    assert_eq!(failure.revision.as_deref(), Some(bad.as_str()));
    assert_eq!(
        setup.value("a").as_deref(),
        Some("1"),
        "live state untouched"
    );
}

#[tokio::test]
async fn a_plan_that_deletes_waits_for_a_person_unless_allow_destroy_is_set() {
    // Five resources, one deleted: under the mass-delete guard (30 %).
    let work = fleet_repo("a: 1\nb: 1\nc: 1\nd: 1\ne: 1\n");
    let setup = Setup::new();
    let url = work.path().to_str().unwrap().to_string();
    let mut daemon = setup.daemon(setup.config(&url, ""));
    let (_tx, rx) = watch::channel(false);
    daemon.reconcile(&rx).await.unwrap();
    work.write("fleet/resources.yaml", "a: 1\nc: 1\nd: 1\ne: 1\n");
    let head = work.commit("drop b");
    let failure = daemon.reconcile(&rx).await.unwrap_err();
    assert_eq!((failure.kind, failure.retry), ("apply", Retry::NextPoll));
    assert!(failure.message.contains("test:b"), "{failure}");
    assert_eq!(setup.value("b").as_deref(), Some("1"), "nothing deleted");
    drop(daemon);

    let mut trusted = setup.daemon(setup.config(&url, "allowDestroy: true\n"));
    let done = trusted.reconcile(&rx).await.unwrap();
    assert!(
        matches!(done, Reconciled::Applied { ref commit, .. } if *commit == head),
        "{done:?}"
    );
    assert_eq!(setup.value("b"), None, "deleted once allowed");
}

#[tokio::test]
async fn scheduled_drift_is_reported_and_healed_only_with_self_heal() {
    let work = fleet_repo("a: 1\nb: 1\n");
    let setup = Setup::new();
    let url = work.path().to_str().unwrap().to_string();
    let mut reporter = setup.daemon(setup.config(&url, "drift: {interval: 1s}\n"));
    let (_tx, rx) = watch::channel(false);
    reporter.reconcile(&rx).await.unwrap();
    setup
        .provider
        .tamper(&id("b"), |o| o["value"] = json!("changed by hand"));

    let report = reporter.check_drift(&rx).await.unwrap().unwrap();
    assert_eq!(report.drifted, vec![id("b")]);
    assert!(!report.healed);
    assert_eq!(
        setup.value("b").as_deref(),
        Some("changed by hand"),
        "report only"
    );
    let metrics = reporter.metrics().encode();
    assert!(
        metrics.contains("fleetform_drifted_resources{tenant=\"\",provider=\"test\"} 1"),
        "{metrics}"
    );
    drop(reporter);

    let mut healer = setup.daemon(setup.config(&url, "drift: {interval: 1s, selfHeal: true}\n"));
    let report = healer.check_drift(&rx).await.unwrap().unwrap();
    assert_eq!(report.drifted, vec![id("b")]);
    assert!(report.healed);
    assert_eq!(setup.value("b").as_deref(), Some("1"), "healed");
    let again = healer.check_drift(&rx).await.unwrap().unwrap();
    assert!(again.drifted.is_empty(), "{again:?}");
}

#[tokio::test]
async fn self_heal_applies_nothing_while_another_process_holds_the_state_lock() {
    let work = fleet_repo("a: 1\nb: 1\n");
    let setup = Setup::new();
    let url = work.path().to_str().unwrap().to_string();
    let mut healer = setup.daemon(setup.config(&url, "drift: {interval: 1s, selfHeal: true}\n"));
    let (_tx, rx) = watch::channel(false);
    healer.reconcile(&rx).await.unwrap();
    setup
        .provider
        .tamper(&id("b"), |o| o["value"] = json!("changed by hand"));
    // Another process (a `fleetform apply`) holds the lock: the heal must not apply
    // under it, and says whose lock stopped it.
    let store = LocalStateStore::open(setup.dir.path().join("state")).unwrap();
    let other = LockInfo::for_this_process("apply by someone else");
    store.lock(&other).await.unwrap();
    let failure = healer.check_drift(&rx).await.unwrap_err();
    assert_eq!(failure.kind, "lock", "{failure}");
    assert_eq!(setup.value("b").as_deref(), Some("changed by hand"));
    store.unlock(&other).await.unwrap();
    let report = healer.check_drift(&rx).await.unwrap().unwrap();
    assert!(report.healed, "{report:?}");
    assert_eq!(setup.value("b").as_deref(), Some("1"));
}

/// Receives notification events on 127.0.0.1.
async fn event_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/events"), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drift_schedule_runs_in_the_daemon_and_sends_a_drift_event() {
    let work = fleet_repo("a: 1\n");
    let setup = Setup::new();
    let (hook, events) = event_receiver().await;
    let config = setup.config(
        work.path().to_str().unwrap(),
        &format!("pollInterval: 1h\ndrift: {{interval: 1s}}\nnotifications:\n  - url: {hook}\n"),
    );
    let running = Running::start(setup.daemon(config)).await;
    let head = work.head();
    assert!(
        eventually(Duration::from_secs(10), || async {
            setup.last_applied().await.as_deref() == Some(head.as_str())
        })
        .await
    );
    setup.provider.tamper(&id("a"), |o| o["value"] = json!("9"));
    let seen = eventually(Duration::from_secs(10), || async {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "drift-detected")
    })
    .await;
    let events = events.lock().unwrap().clone();
    assert!(seen, "{events:#?}");
    let drift = events
        .iter()
        .find(|e| e["type"] == "drift-detected")
        .unwrap();
    assert_eq!(drift["fleet"], "test");
    assert_eq!(drift["revision"], head.as_str());
    assert!(
        drift["summary"].as_str().unwrap().contains("test:a"),
        "{drift}"
    );
    assert!(events.iter().any(|e| e["type"] == "applied"), "{events:#?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_mid_apply_leaves_state_consistent_and_a_restart_converges() {
    // A chain of slow resources: the shutdown lands while some are applied.
    let chain: String = (0..8)
        .map(|i| {
            if i == 0 {
                "r0: 1\n".to_string()
            } else {
                format!("r{i}: 1 <- r{}\n", i - 1)
            }
        })
        .collect();
    let work = fleet_repo(&chain);
    let setup = Setup::new();
    for i in 0..8 {
        setup.provider.script(
            &id(&format!("r{i}")),
            Script {
                latency_ms: 150,
                ..Script::default()
            },
        );
    }
    let url = work.path().to_str().unwrap().to_string();
    let running = Running::start(setup.daemon(setup.config(&url, "pollInterval: 1h\n"))).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            setup.provider.world().objects.len() >= 2
        })
        .await
    );
    running.stop().await;
    let applied = setup.provider.world().objects.len();
    assert!(
        applied < 8,
        "the shutdown came before the end ({applied} applied)"
    );
    assert_eq!(
        setup.last_applied().await,
        None,
        "an interrupted apply is not recorded as done"
    );
    // The lock was released: another process can take it.
    let store = setup.store();
    let info = LockInfo::for_this_process("test");
    store.lock(&info).await.unwrap();
    store.unlock(&info).await.unwrap();

    let mut restarted = setup.daemon(setup.config(&url, "pollInterval: 1h\n"));
    let (_tx, rx) = watch::channel(false);
    let done = restarted.reconcile(&rx).await.unwrap();
    assert!(matches!(done, Reconciled::Applied { .. }), "{done:?}");
    let world = setup.provider.world();
    assert_eq!(world.objects.len(), 8);
    assert!(
        world.creates.values().all(|n| *n == 1),
        "nothing created twice: {:?}",
        world.creates
    );
    assert_eq!(setup.last_applied().await, Some(work.head()));
    let again = restarted.reconcile(&rx).await.unwrap();
    assert_eq!(
        again,
        Reconciled::UpToDate {
            commit: work.head()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_status_and_healthz_are_served_and_metrics_parse_as_openmetrics() {
    let work = fleet_repo("a: 1\n");
    let setup = Setup::new();
    let running = Running::start(
        setup.daemon(setup.config(work.path().to_str().unwrap(), "pollInterval: 1h\n")),
    )
    .await;
    let head = work.head();
    assert!(
        eventually(Duration::from_secs(10), || async {
            setup.last_applied().await.as_deref() == Some(head.as_str())
        })
        .await
    );
    let client = reqwest::Client::new();
    for probe in ["/healthz", "/readyz"] {
        let resp = client.get(running.url(probe)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{probe}");
    }
    let status: serde_json::Value = client
        .get(running.url("/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["lastAppliedRevision"], head.as_str());
    assert_eq!(status["lastResult"], "applied");
    let resp = client.get(running.url("/metrics")).send().await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    check_openmetrics(&text);
    assert!(
        text.contains(&format!(
            "fleetform_last_applied_revision{{commit=\"{head}\",reference=\"branch main\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains("fleetform_resources{provider=\"test\",state=\"managed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fleetform_reconcile_duration_seconds_count 1"),
        "{text}"
    );
    running.stop().await;
}

/// The OpenMetrics text format's grammar for what fleetform emits: metadata
/// lines, samples `name{labels} value`, and `# EOF` last; every sample's
/// family has a TYPE line before it.
fn check_openmetrics(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
    let mut typed: Vec<String> = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line}");
            assert!(name.starts_with("fleetform_"), "{line}");
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "info", "unknown"].contains(&t),
                    "{line}"
                );
                typed.push(name.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
        assert!(
            typed.iter().any(|t| name.starts_with(t.as_str())),
            "{name} has no TYPE line before it"
        );
    }
}
