//! The `fleetform serve` loop: keep a fleet reconciled to a git ref.
//!
//! One task owns the loop, so a fleet has one reconcile at a time by
//! construction. It wakes on the poll interval, on a push webhook (which only
//! makes the next fetch immediate: the daemon fetches and checks the ref
//! itself) and on the drift schedule. A reconcile is fetch → history and
//! signature checks → validate and compile → the engine's one orchestration
//! path ([`crate::session`]: lock → state → observe hooks → plan → gates →
//! apply), holding the state lock from plan to the end of apply. Failures that may pass (a fetch, a BMC,
//! the lock) are retried with backoff; failures that need a new commit (an
//! invalid manifest, an unsigned commit, a rewritten history) wait for the next
//! poll and are notified once. Shutdown cancels through the apply's own cancel
//! signal: calls in flight finish and are journaled, nothing new starts, the
//! lock is released.
//! How a failure is classified and retried is in [`super::failure`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as Shared;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use super::config::{DriftSchedule, ServeConfig, parse_cron};
pub use super::failure::{Failure, Retry};
use super::failure::{check_plan, outcome_failure, session_failure, source_failure};
use super::metrics::{self, Metrics};
use super::notify::{Backoff, Event, EventType, Notifier};
use super::webhook::{self, WebhookEvent, WebhookProvider};
use crate::apply::ApplyOptions;
use crate::load::SourceFile;
use crate::observe::Providers;
use crate::plan::PlanOptions;
use crate::reconcile::ObserveOptions;
use crate::resource::{Desired, ResourceId};
use crate::secret::{SecretError, SecretResolver};
use crate::sensitive::Sensitive;
use crate::session::{ApplyRun, ObserveHook, Session};
use crate::source::{GitRef, GitSource};
use crate::state::{LocalStateStore, State, StateError, StateStore};

use super::shards::{Shard, Shards};

mod sharded;

/// Any error a [`Pipeline`] reports; its `Display` is shown to people.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one revision of the fleet compiles to.
pub struct Prepared {
    /// The resources to reconcile.
    pub desired: Vec<Desired>,
    /// The providers that own them.
    pub providers: Providers,
    /// Plan settings the fleet implies (e.g. its prune guard).
    pub plan_options: PlanOptions,
    /// Observed state besides the resources (GPU inventory for break/fix), the same
    /// hooks the CLI runs.
    pub hooks: Vec<Arc<dyn ObserveHook>>,
}

/// Turns the manifest files of one revision into [`Prepared`] resources.
///
/// The program hosting the daemon implements it: the CLI validates, compiles
/// and builds the real providers; tests use the in-memory provider. An error
/// (an invalid manifest, a missing kubeconfig) is reported and retried at the
/// next poll, not with backoff: it needs a new commit or a fix on the host.
pub trait Pipeline: Send + Sync {
    /// Validates and compiles `files` (the fleet directory at one commit).
    fn prepare(&self, files: &[SourceFile]) -> Result<Prepared, BoxError>;
}

/// Why the daemon could not start or run. Each message leaves its cause to the error chain
/// (`source()`), which whoever prints it shows cause by cause.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The webhook secret could not be read.
    #[error("webhook secret")]
    WebhookSecret(#[source] SecretError),
    /// The state directory could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The notification client could not be built.
    #[error(transparent)]
    Notifier(#[from] super::notify::NotifyError),
    /// The HTTP server stopped with an error.
    #[error("HTTP server")]
    Server(#[source] std::io::Error),
}

/// What `/status` answers: the daemon's view of its fleet, for people and probes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The fleet's name.
    pub fleet: String,
    /// The ref followed, e.g. `branch main`.
    pub reference: String,
    /// The commit the ref pointed at on the last successful fetch.
    pub head: Option<String>,
    /// The last revision whose apply finished without errors.
    pub last_applied_revision: Option<String>,
    /// A reconcile or drift check is running.
    pub busy: bool,
    /// The last reconcile's result: `applied`, `up-to-date` or `failed`.
    pub last_result: Option<String>,
    /// The last reconcile's error, when it failed, with its causes (`KIND failed: …: …`).
    pub last_error: Option<String>,
    /// The causes under the last error's own message, outermost first (e.g. the I/O error
    /// under `state file …`); empty when it succeeded or had none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_error_causes: Vec<String>,
    /// Failed reconciles in a row.
    pub consecutive_failures: u32,
    /// When the last reconcile ended (RFC 3339).
    pub last_reconcile_at: Option<String>,
    /// Resources found drifted by the last drift check.
    pub drifted: Option<usize>,
    /// When the last drift check ended (RFC 3339).
    pub last_drift_check_at: Option<String>,
}

/// How a reconcile that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// The head is the revision last applied; nothing was planned.
    UpToDate {
        /// The head commit.
        commit: String,
    },
    /// The head was planned and applied (possibly with no changes).
    Applied {
        /// The head commit.
        commit: String,
        /// The plan's totals, one line.
        summary: String,
    },
}

/// What a drift check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftReport {
    /// The revision compared with (the last applied one).
    pub revision: String,
    /// The drifted resources.
    pub drifted: Vec<ResourceId>,
    /// Whether self-heal re-applied them successfully.
    pub healed: bool,
}

/// The `fleetform serve` daemon for one fleet.
pub struct Daemon {
    config: ServeConfig,
    pipeline: Arc<dyn Pipeline>,
    resolver: Arc<dyn SecretResolver>,
    source: GitSource,
    store: Box<dyn StateStore>,
    metrics: Arc<Metrics>,
    notifier: Arc<Notifier>,
    status: Arc<Mutex<Status>>,
    poke: Arc<Notify>,
    webhook: Option<(WebhookProvider, Sensitive<String>)>,
    listener: Option<tokio::net::TcpListener>,
    apply_options: ApplyOptions,
    observe_options: ObserveOptions,
    retry: Backoff,
    /// The head must be planned even if it was applied: the last attempt failed
    /// or was interrupted after recording the revision.
    dirty: bool,
    /// The last failure notified, so that a failure repeating at every poll is sent once.
    last_notified: Option<(String, Option<String>)>,
    /// Tenant sharding: reconcile only the shards this replica owns, each in its own store.
    shards: Option<Arc<dyn Shards>>,
    /// Shards whose last attempt failed: planned again even if their state says up to date.
    dirty_shards: std::collections::BTreeSet<Shard>,
}

impl Daemon {
    /// A daemon for `config`; `resolver` reads the webhook secret, notification
    /// tokens and git credentials.
    pub fn new(
        config: ServeConfig,
        pipeline: Arc<dyn Pipeline>,
        resolver: Arc<dyn SecretResolver>,
    ) -> Result<Self, DaemonError> {
        let webhook = match &config.webhook {
            Some(w) => Some((
                w.provider,
                resolver
                    .resolve(&w.secret)
                    .map_err(DaemonError::WebhookSecret)?,
            )),
            None => None,
        };
        let store = Box::new(LocalStateStore::open(&config.state_dir)?);
        let source = GitSource::new(&config.cache_dir).with_options(config.source_options());
        let status = Status {
            fleet: config.fleet.clone(),
            reference: config.source.reference.to_string(),
            ..Status::default()
        };
        let apply_options = ApplyOptions {
            allow_destroy: config.allow_destroy,
            ..ApplyOptions::default()
        };
        Ok(Self {
            pipeline,
            resolver,
            source,
            store,
            metrics: Arc::new(Metrics::new()),
            notifier: Arc::new(Notifier::new()?),
            status: Arc::new(Mutex::new(status)),
            poke: Arc::new(Notify::new()),
            webhook,
            listener: None,
            apply_options,
            observe_options: ObserveOptions::default(),
            retry: Backoff {
                initial: Duration::from_secs(5),
                max: config.poll_interval,
            },
            dirty: false,
            last_notified: None,
            shards: None,
            dirty_shards: std::collections::BTreeSet::new(),
            config,
        })
    }

    /// Replaces the apply settings (concurrency, timeouts); `allowDestroy` still comes from the config.
    pub fn with_apply_options(mut self, options: ApplyOptions) -> Self {
        self.apply_options = ApplyOptions {
            allow_destroy: self.config.allow_destroy,
            ..options
        };
        self
    }

    /// Keeps state in `store` (e.g. the Kubernetes API) instead of the config's `stateDir`,
    /// which then only holds the git cache.
    pub fn with_state_store(mut self, store: Box<dyn StateStore>) -> Self {
        self.store = store;
        self
    }

    /// Shards the fleet's tenants over replicas: this daemon reconciles only the shards
    /// `shards` says it owns, each with that shard's state store (the default store is then
    /// unused), and reconciles at once when its shards change.
    pub fn with_shards(mut self, shards: Arc<dyn Shards>) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Replaces the delays between retries of a failing reconcile.
    pub fn with_retry(mut self, retry: Backoff) -> Self {
        self.retry = retry;
        self
    }

    /// The daemon's metrics (also served on `/metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// A snapshot of the status (also served on `/status`).
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// Binds the HTTP listener now and returns its address (port 0 picks one);
    /// [`Daemon::run`] binds it otherwise.
    pub async fn listen(&mut self) -> Result<SocketAddr, DaemonError> {
        let addr = self.config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| DaemonError::Listen { addr, source })?;
        self.listener = Some(listener);
        Ok(local)
    }

    /// Serves HTTP and reconciles until `shutdown` turns true, then finishes
    /// the calls in flight, records them and returns.
    pub async fn run(mut self, shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
        if self.listener.is_none() {
            self.listen().await?;
        }
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let addr = listener.local_addr().ok();
        let app = Arc::new(Http {
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            poke: self.poke.clone(),
            webhook: self.webhook.clone(),
            reference: self.config.source.reference.clone(),
        });
        let mut stop_http = shutdown.clone();
        let server = tokio::spawn(
            axum::serve(
                listener,
                router(app, self.config.webhook.as_ref().map(|w| w.path.as_str())),
            )
            .with_graceful_shutdown(async move { stopped(&mut stop_http).await })
            .into_future(),
        );
        tracing::info!(fleet = %self.config.fleet, listen = ?addr, reference = %self.config.source.reference, "serving");
        self.main_loop(shutdown).await;
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DaemonError::Server(e)),
            Err(e) => Err(DaemonError::Server(std::io::Error::other(e))),
        }
    }

    async fn main_loop(&mut self, mut shutdown: watch::Receiver<bool>) {
        enum Wake {
            Fetch,
            Drift,
        }
        let mut next_fetch = tokio::time::Instant::now();
        let mut next_drift = self.next_drift();
        let mut failures = 0u32;
        let poke = self.poke.clone();
        // Shards gained (a replica died or left) are reconciled at once, not at the next poll.
        let moved = self
            .shards
            .as_ref()
            .map_or_else(|| Arc::new(Notify::new()), |s| s.changed());
        loop {
            let wake = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                () = poke.notified() => Wake::Fetch,
                () = moved.notified() => Wake::Fetch,
                () = tokio::time::sleep_until(next_fetch) => Wake::Fetch,
                () = sleep_until(next_drift) => Wake::Drift,
            };
            match wake {
                Wake::Fetch => {
                    let delay = match self.reconcile(&shutdown).await {
                        Ok(_) => {
                            failures = 0;
                            self.config.poll_interval
                        }
                        Err(f) if f.retry == Retry::Backoff => {
                            failures += 1;
                            self.retry.delay(failures).min(self.config.poll_interval)
                        }
                        Err(_) => {
                            failures = 0;
                            self.config.poll_interval
                        }
                    };
                    next_fetch = tokio::time::Instant::now() + delay;
                }
                Wake::Drift => {
                    let _ = self.check_drift(&shutdown).await;
                    next_drift = self.next_drift();
                }
            }
            if *shutdown.borrow() {
                break;
            }
        }
        if let Some(shards) = &self.shards {
            shards.leave().await;
        }
        tracing::info!(fleet = %self.config.fleet, "stopped");
    }

    fn next_drift(&self) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        match &self.config.drift.schedule {
            DriftSchedule::Off => None,
            DriftSchedule::Interval(d) => Some(now + *d),
            DriftSchedule::Cron(expr) => {
                let cron = parse_cron(expr)?;
                let utc = chrono::Utc::now();
                let next = cron.find_next_occurrence(&utc, false).ok()?;
                let wait = (next - utc).to_std().unwrap_or_default();
                Some(now + wait)
            }
        }
    }

    /// One reconcile of the ref's head: what the loop runs on each poll or
    /// push, and `serve --once`. Updates status and metrics and sends events.
    pub async fn reconcile(
        &mut self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Reconciled, Failure> {
        let started = Instant::now();
        self.update_status(|s| s.busy = true);
        let span = tracing::info_span!("reconcile", fleet = %self.config.fleet, reference = %self.config.source.reference);
        let result = self.try_reconcile(shutdown).instrument(span).await;
        self.metrics
            .observe_reconcile(started.elapsed().as_secs_f64());
        let now = crate::state::now_rfc3339();
        match &result {
            Ok(done) => {
                self.dirty = false;
                self.last_notified = None;
                let (commit, label) = match done {
                    Reconciled::UpToDate { commit } => (commit, "up-to-date"),
                    Reconciled::Applied { commit, summary } => {
                        tracing::info!(fleet = %self.config.fleet, commit = %commit, summary = %summary, "applied");
                        self.metrics.applied(
                            commit,
                            &self.config.source.reference.to_string(),
                            unix_now(),
                        );
                        self.notify(EventType::Applied, commit, summary.clone());
                        (commit, "applied")
                    }
                };
                let commit = commit.clone();
                self.update_status(|s| {
                    s.last_result = Some(label.into());
                    s.last_error = None;
                    s.last_error_causes.clear();
                    s.consecutive_failures = 0;
                    s.last_applied_revision = Some(commit.clone());
                    s.head = Some(commit);
                });
            }
            Err(f) => {
                self.dirty = true;
                tracing::warn!(fleet = %self.config.fleet, kind = f.kind, revision = ?f.revision, error = %f, "reconcile failed");
                self.metrics.error(f.kind);
                let key = (f.to_string(), f.revision.clone());
                if self.last_notified.as_ref() != Some(&key) {
                    self.notify(
                        EventType::Failed,
                        f.revision.as_deref().unwrap_or(""),
                        f.to_string(),
                    );
                    self.last_notified = Some(key);
                }
                let (message, causes, revision) = (f.to_string(), f.causes(), f.revision.clone());
                self.update_status(|s| {
                    s.last_result = Some("failed".into());
                    s.last_error = Some(message);
                    s.last_error_causes = causes;
                    s.consecutive_failures += 1;
                    if revision.is_some() {
                        s.head = revision;
                    }
                });
            }
        }
        self.update_status(|s| {
            s.busy = false;
            s.last_reconcile_at = Some(now);
        });
        result
    }

    async fn try_reconcile(
        &mut self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Reconciled, Failure> {
        if let Some(shards) = self.shards.clone() {
            return self.try_reconcile_sharded(shards.as_ref(), shutdown).await;
        }
        let state = self.load_state().await?;
        let last_applied = state.last_applied_revision.clone().filter(|r| is_commit(r));
        let fetched = self.fetch(last_applied.clone()).await?;
        let commit = fetched.revision.commit.clone();
        self.update_status(|s| s.head = Some(commit.clone()));
        if last_applied.as_deref() == Some(commit.as_str()) && !self.dirty {
            return Ok(Reconciled::UpToDate { commit });
        }
        if let Some(v) = &fetched.verified {
            tracing::info!(commit = %commit, signer = %v.signer, "commit signature verified");
        }
        let prepared = self
            .prepare(fetched.files)
            .await
            .map_err(|f| f.at(&commit))?;
        if *shutdown.borrow() {
            return Err(Failure::new("interrupted", Retry::Backoff, "shutting down").at(&commit));
        }
        let summary = self
            .apply_head(&prepared, &commit, shutdown)
            .await
            .map_err(|f| f.at(&commit))?;
        Ok(Reconciled::Applied { commit, summary })
    }

    /// Fetches the ref's head and reads the fleet at it, checking history and signatures
    /// against `last_applied`.
    async fn fetch(&self, last_applied: Option<String>) -> Result<crate::source::Fetched, Failure> {
        let source = self.source.clone();
        let spec = self.config.source.clone();
        let resolver = self.resolver.clone();
        let verification = self.config.verification.clone().unwrap_or_default();
        blocking(move || {
            source.fetch_and_read(
                &spec,
                resolver.as_ref(),
                last_applied.as_deref(),
                &verification,
            )
        })
        .await?
        .map_err(source_failure)
    }

    fn session<'a>(&'a self, prepared: &'a Prepared, commit: &str) -> Session<'a> {
        Session::new(
            self.store.as_ref(),
            &prepared.providers,
            &prepared.desired,
            prepared.plan_options.clone(),
            Some(commit.to_string()),
        )
        .with_observe_options(self.observe_options)
        .with_hooks(prepared.hooks.iter().cloned())
    }

    fn apply_run(&self, shutdown: &watch::Receiver<bool>) -> ApplyRun {
        ApplyRun {
            options: self.apply_options.clone(),
            events: None,
            cancel: shutdown.clone(),
        }
    }

    /// Plans and applies the head through the one orchestration path, holding the state
    /// lock from the state it plans against to the end of the apply.
    async fn apply_head(
        &self,
        prepared: &Prepared,
        commit: &str,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<String, Failure> {
        self.apply_session(&self.session(prepared, commit), commit, shutdown)
            .await
    }

    /// Plans and applies through `session`, holding its store's lock from plan to the end of
    /// the apply (the whole fleet, or one shard's part of it).
    async fn apply_session(
        &self,
        session: &Session<'_>,
        commit: &str,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<String, Failure> {
        let locked = session
            .lock(&format!("serve {}", short(commit)))
            .await
            .map_err(|e| Failure::caused("lock", Retry::Backoff, e))?;
        let result = async {
            let planned = locked.plan().await.map_err(session_failure)?;
            check_plan(planned.plan())?;
            let summary = crate::report::totals(planned.plan());
            let run = locked
                .apply(planned, self.apply_run(shutdown))
                .await
                .map_err(session_failure)?;
            self.count_resources(&run.state);
            outcome_failure(&run)?;
            Ok(summary)
        }
        .await;
        if let Err(e) = locked.release().await {
            tracing::error!(error = %e, "could not release the state lock");
        }
        result
    }

    /// Compares live state with the last applied revision; with `selfHeal`,
    /// re-applies what drifted. `Ok(None)` when nothing was applied yet.
    pub async fn check_drift(
        &mut self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Option<DriftReport>, Failure> {
        self.update_status(|s| s.busy = true);
        let span = tracing::info_span!("drift", fleet = %self.config.fleet);
        let result = self.try_check_drift(shutdown).instrument(span).await;
        let now = crate::state::now_rfc3339();
        match &result {
            Ok(Some(report)) => {
                let n = report.drifted.len();
                self.update_status(|s| s.drifted = Some(n));
            }
            Ok(None) => {}
            Err(f) => {
                tracing::warn!(fleet = %self.config.fleet, kind = f.kind, error = %f, "drift check failed");
                self.metrics.error("drift");
            }
        }
        self.update_status(|s| {
            s.busy = false;
            s.last_drift_check_at = Some(now);
        });
        result
    }

    async fn try_check_drift(
        &mut self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Option<DriftReport>, Failure> {
        if let Some(shards) = self.shards.clone() {
            return self.check_drift_sharded(shards.as_ref(), shutdown).await;
        }
        let state = self.load_state().await?;
        if state.resources.is_empty() {
            return Ok(None);
        }
        let Some(commit) = state.last_applied_revision.clone().filter(|r| is_commit(r)) else {
            return Ok(None);
        };
        let files = self.files_at(&commit).await?;
        let prepared = self.prepare(files).await.map_err(|f| f.at(&commit))?;
        let session = self.session(&prepared, &commit);
        self.drift_session(&session, &prepared, &commit, shutdown)
            .await
            .map(Some)
    }

    /// The fleet's files at `commit` (fetched again if the cache lost it).
    async fn files_at(&self, commit: &str) -> Result<Vec<SourceFile>, Failure> {
        let source = self.source.clone();
        let spec = self.config.source.clone();
        let resolver = self.resolver.clone();
        let commit = commit.to_string();
        blocking(move || {
            source.ensure_commit(&spec, resolver.as_ref(), &commit)?;
            source.open(&spec.url)?.read_tree(&commit, &spec.path)
        })
        .await?
        .map_err(source_failure)
    }

    /// Checks `session`'s drift at `commit` and, with `selfHeal`, heals it.
    async fn drift_session(
        &self,
        session: &Session<'_>,
        prepared: &Prepared,
        commit: &str,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<DriftReport, Failure> {
        let commit = commit.to_string();
        let found = session
            .drift()
            .await
            .map_err(|e| session_failure(e).at(&commit))?;
        check_plan(found.plan()).map_err(|f| f.at(&commit))?;
        let drifted: Vec<ResourceId> = found.plan().actionable().map(|c| c.id.clone()).collect();
        let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
        for id in &drifted {
            *counts
                .entry((
                    tenant_of(&prepared.providers, id).to_string(),
                    id.provider().to_string(),
                ))
                .or_default() += 1;
        }
        self.metrics.set_drifted(
            counts
                .iter()
                .map(|((t, p), n)| ((t.as_str(), p.as_str()), *n)),
        );
        let mut report = DriftReport {
            revision: commit.clone(),
            drifted,
            healed: false,
        };
        if report.drifted.is_empty() {
            return Ok(report);
        }
        self.notify(
            EventType::DriftDetected,
            &commit,
            format!(
                "{} resource(s) drifted: {}",
                report.drifted.len(),
                list(&report.drifted)
            ),
        );
        if !self.config.drift.self_heal || *shutdown.borrow() {
            return Ok(report);
        }
        // Under the lock the drift is planned again and healed only if it is the drift
        // just reported: a change made meanwhile (another apply) is not overwritten blind.
        let healed = session
            .heal(
                &format!("serve heal {}", short(&commit)),
                found.plan(),
                self.apply_run(shutdown),
            )
            .await
            .map_err(session_failure)
            .and_then(|run| {
                self.count_resources(&run.state);
                outcome_failure(&run)
            });
        match healed {
            Ok(()) => {
                report.healed = true;
                self.metrics.set_drifted(std::iter::empty());
                self.notify(
                    EventType::Applied,
                    &commit,
                    format!(
                        "self-heal re-applied {} drifted resource(s)",
                        report.drifted.len()
                    ),
                );
                Ok(report)
            }
            Err(f) => {
                let f = f.at(&commit);
                self.notify(EventType::Failed, &commit, format!("self-heal: {f}"));
                Err(f)
            }
        }
    }

    async fn load_state(&self) -> Result<State, Failure> {
        self.store
            .load()
            .await
            .map_err(|e| Failure::caused("state", Retry::Backoff, e))
    }

    async fn prepare(&self, files: Vec<SourceFile>) -> Result<Prepared, Failure> {
        let pipeline = self.pipeline.clone();
        blocking(move || pipeline.prepare(&files))
            .await?
            .map_err(|e| Failure::caused("validate", Retry::NextPoll, e))
    }

    fn count_resources(&self, state: &State) {
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for (id, entry) in &state.resources {
            let st = if entry.pending { "pending" } else { "managed" };
            *counts.entry((id.provider(), st)).or_default() += 1;
        }
        self.metrics.set_resources(counts);
    }

    /// Sends an event in the background: a slow receiver never holds up reconciles.
    fn notify(&self, event_type: EventType, revision: &str, summary: String) {
        if self.config.notifications.is_empty() {
            return;
        }
        let event = Event::new(
            event_type,
            &self.config.fleet,
            revision,
            summary,
            SystemTime::now(),
        );
        let (notifier, targets, resolver, metrics) = (
            self.notifier.clone(),
            self.config.notifications.clone(),
            self.resolver.clone(),
            self.metrics.clone(),
        );
        tokio::spawn(async move {
            for result in notifier.send_all(&targets, &event, resolver.as_ref()).await {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "notification not delivered");
                    metrics.error("notify");
                }
            }
        });
    }

    fn update_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.status));
    }
}

/// Runs blocking work (git, compile) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::new("internal", Retry::Backoff, format!("worker stopped: {e}")))
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    // A dropped sender means nobody can ask us to stop: wait forever.
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn lock(status: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// A directory revision (`dir:…`) is not a commit and cannot be fetched.
fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The tenant a resource belongs to, for metric labels, as its provider says
/// (the cluster of a Kubernetes object: a tenant's name, or `mgmt`); empty for
/// fleet-wide ones.
fn tenant_of<'a>(providers: &Providers, id: &'a ResourceId) -> &'a str {
    providers
        .for_id(id)
        .and_then(|p| p.tenant(id))
        .unwrap_or("")
}

fn list(ids: &[ResourceId]) -> String {
    let mut s: Vec<&str> = ids.iter().take(5).map(ResourceId::as_str).collect();
    if ids.len() > 5 {
        s.push("…");
    }
    s.join(", ")
}

// ---- HTTP -----------------------------------------------------------------

struct Http {
    metrics: Arc<Metrics>,
    status: Arc<Mutex<Status>>,
    poke: Arc<Notify>,
    webhook: Option<(WebhookProvider, Sensitive<String>)>,
    reference: GitRef,
}

fn router(app: Arc<Http>, webhook_path: Option<&str>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_page))
        .route("/metrics", get(metrics_page))
        .route("/status", get(status_page));
    if let Some(path) = webhook_path {
        router = router.route(path, post(push_hook));
    }
    router.with_state(app)
}

async fn metrics_page(Shared(app): Shared<Arc<Http>>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        app.metrics.encode(),
    )
        .into_response()
}

/// Ready once the source has been fetched: the config, credentials and
/// state directory work. A failing reconcile does not make the daemon unready
/// (it must keep receiving webhooks); see `/status` and the metrics for that.
async fn ready_page(Shared(app): Shared<Arc<Http>>) -> Response {
    if lock(&app.status).head.is_some() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the source has not been fetched yet\n",
        )
            .into_response()
    }
}

async fn status_page(Shared(app): Shared<Arc<Http>>) -> Response {
    axum::Json(lock(&app.status).clone()).into_response()
}

/// A push webhook: authenticated before anything is read; a push to the
/// followed ref makes the next fetch immediate. The payload's commit is not
/// trusted: the daemon fetches the ref and checks it as on any poll.
async fn push_hook(Shared(app): Shared<Arc<Http>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some((provider, secret)) = &app.webhook else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match webhook::receive(*provider, secret, &headers, &body) {
        Err(e) => {
            tracing::warn!(error = %e, "webhook refused");
            app.metrics.error("webhook");
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            (status, format!("{e}\n")).into_response()
        }
        Ok(WebhookEvent::Push(push)) if push.matches(&app.reference) && !push.deleted => {
            tracing::info!(reference = %push.reference, after = %push.after, "push received; fetching now");
            app.poke.notify_one();
            (StatusCode::ACCEPTED, "reconcile queued\n").into_response()
        }
        Ok(WebhookEvent::Push(push)) => (
            StatusCode::OK,
            format!(
                "push to {} does not move {}: ignored\n",
                push.reference, app.reference
            ),
        )
            .into_response(),
        Ok(WebhookEvent::Ping) => (StatusCode::OK, "pong\n").into_response(),
        Ok(WebhookEvent::Ignored { event }) => {
            (StatusCode::OK, format!("event {event} ignored\n")).into_response()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metric_tenants_come_from_the_provider() {
        let providers = Providers::new().with(std::sync::Arc::new(
            crate::testing::MemoryProvider::named("test"),
        ));
        // The in-memory provider has no tenants; the kube provider's own tests
        // pin that a Kubernetes object's tenant is its cluster.
        assert_eq!(
            tenant_of(&providers, &ResourceId::new("test", "acme/x")),
            ""
        );
        assert_eq!(
            tenant_of(&providers, &ResourceId::new("redfish", "host/r01/bios")),
            ""
        );
    }

    #[test]
    fn only_full_commit_ids_are_revisions_to_fetch() {
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("dir:0123456789abcdef"));
    }
}
