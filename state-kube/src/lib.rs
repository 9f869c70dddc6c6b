//! fleetform's state in Kubernetes: a [`StateStore`] whose inventory, last applied revision,
//! per-resource hashes and apply journal live in Secrets of one namespace, and whose lock is a
//! `coordination.k8s.io/v1` Lease. Several `fleetform serve` replicas (or a CI runner with a
//! read-only identity) then share one fleet's state through the API server, with no shared volume.
//!
//! Layout for fleet `F` (see `docs/state.md`):
//! - `fleetform-state-F` (the *head*): format version, last applied revision, the fencing token
//!   and its holder, the names of the chunk and journal-segment objects, and the newest journal
//!   lines;
//! - `fleetform-state-F-<gen>-c<i>` (*chunks*): the compacted inventory, split by a stable hash
//!   of the resource id so that no object nears the 1 MiB object limit;
//! - `fleetform-state-F-j<rand>` (*segments*): journal lines moved out of the head when it grows.
//!
//! Every write ends with a replace of the head carrying the resourceVersion this store last saw,
//! so two writers can never both win: the loser gets a 409 and [`StateError::Conflict`]. Chunks
//! and segments are created under fresh names and only become part of the state when the head
//! naming them is written, so a refused writer leaves the state as it was.
//!
//! Fencing: `lock` takes the Lease `fleetform-state-F` and then raises the head's fencing token
//! (a generation number, written with a resourceVersion precondition). A store whose token is not
//! the head's, such as an old leader that was paused past its lease while another took over,
//! has every write refused before it is sent, and any write it sends with its old
//! resourceVersion fails with a conflict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use fleetform_engine::resource::ResourceId;
use fleetform_engine::state::{
    InventoryEntry, JournalEntry, LockInfo, STATE_VERSION, State, StateError, StateStore,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use serde::{Deserialize, Serialize};
use sha2::Digest;

pub mod shard;

/// The largest serialised inventory one chunk object may hold. A Secret may hold 1 MiB; half
/// of that leaves room for metadata and for entries that grow between two compactions.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// Journal lines kept in the head before they move to a segment object. Every step rewrites
/// the head, so a small head keeps a long apply's traffic linear rather than quadratic.
pub const HEAD_JOURNAL_BYTES: usize = 64 * 1024;

/// The Secret type of every object this store writes, so they are easy to tell apart.
pub const SECRET_TYPE: &str = "fleetform.dev/state";

/// The label naming the fleet an object belongs to.
pub const FLEET_LABEL: &str = "fleetform.dev/fleet";

/// The Lease annotation holding the holder's [`LockInfo`] (who, operation, since when).
pub const LOCK_ANNOTATION: &str = "fleetform.dev/lock";

/// Where a fleet's state lives, parsed from `kubernetes://<namespace>/<fleet>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The namespace of the Secrets and the Lease.
    pub namespace: String,
    /// The fleet's name; every object's name is derived from it.
    pub fleet: String,
}

/// The URL scheme that selects this store on the command line.
pub const SCHEME: &str = "kubernetes://";

impl Location {
    /// Parses `kubernetes://<namespace>/<fleet>`; `None` when `s` is not such a URL (a local
    /// directory), an error when it is one but malformed.
    pub fn parse(s: &str) -> Option<Result<Self, String>> {
        let rest = s.strip_prefix(SCHEME)?;
        Some(match rest.split_once('/') {
            Some((ns, fleet)) if is_dns_label(ns) && is_dns_label(fleet) && fleet.len() <= 40 => {
                Ok(Self {
                    namespace: ns.into(),
                    fleet: fleet.into(),
                })
            }
            _ => Err(format!(
                "state location {s:?}: expected kubernetes://<namespace>/<fleet>, both lowercase DNS labels (a-z, 0-9, '-'), the fleet at most 40 characters so derived object names stay valid"
            )),
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.namespace, self.fleet)
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// How the store behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a Lease stays valid without renewal; another holder may take it over after.
    pub lease_duration: Duration,
    /// Renew the Lease in the background (every third of its duration) while locked. Off, the
    /// caller renews by calling `lock` again.
    pub renew: bool,
    /// A compaction deletes chunks and segments that no head names (left by a writer that
    /// failed or died between creating them and writing the head) once they are this old. The
    /// age spares a writer that is between those two steps right now: its head write can only
    /// succeed if it read the head after the compaction, so within moments, not minutes.
    pub orphan_age: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(30),
            renew: true,
            orphan_age: Duration::from_secs(600),
        }
    }
}

/// The head object's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Head {
    version: u32,
    last_applied_revision: Option<String>,
    last_applied_at: Option<String>,
    /// The fencing token: raised by every `lock` that takes the Lease.
    fence: u64,
    /// The lock id of the store that raised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder: Option<String>,
    #[serde(default)]
    chunks: Vec<String>,
    #[serde(default)]
    segments: Vec<String>,
    #[serde(default)]
    journal: Vec<JournalEntry>,
}

impl Head {
    fn empty() -> Self {
        Self {
            version: STATE_VERSION,
            ..Self::default()
        }
    }
}

/// The head as this store last read or wrote it.
#[derive(Debug, Clone)]
enum Cached {
    /// There is no head yet: the next write creates it (and fails if someone else did first).
    Absent,
    /// The head and the resourceVersion a replace must carry.
    Present { rv: String, head: Head },
}

impl Cached {
    fn head(&self) -> Head {
        match self {
            Cached::Absent => Head::empty(),
            Cached::Present { head, .. } => head.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    head: Option<Cached>,
    /// The fencing token this store holds since its `lock` took the Lease.
    fence: Option<u64>,
}

/// A head write that lost the optimistic-concurrency race, or failed otherwise.
enum PutError {
    Conflict,
    Other(StateError),
}

/// A fleet's state in Kubernetes. See the crate documentation.
///
/// Every call runs on a task of its own, not in the caller's future: the engine keeps
/// per-resource futures in a `FuturesUnordered` that it does not poll while it awaits a batch of
/// intents, and a future parked there holding (or queued first for) the head would block every
/// other write for good. Spawned, a write always makes progress.
pub struct KubeStateStore {
    core: std::sync::Arc<Core>,
}

impl std::fmt::Debug for KubeStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

/// What a spawned call failed with when the task itself ended abnormally.
fn task_failed(e: tokio::task::JoinError) -> StateError {
    StateError::Remote {
        object: "the state store".into(),
        message: format!("the task running the call ended abnormally: {e}"),
        source: None,
    }
}

impl KubeStateStore {
    /// A store for `location` through `client`. Nothing is read until the first call.
    pub fn new(client: kube::Client, location: Location, options: Options) -> Self {
        Self {
            core: std::sync::Arc::new(Core::new(client, location, options)),
        }
    }

    /// Where this store keeps its state.
    pub fn location(&self) -> &Location {
        &self.core.location
    }

    /// How many journal writes of the head this store made (each is one etcd write), to see
    /// how well concurrent steps are grouped.
    pub fn journal_writes(&self) -> u64 {
        self.core.journal_writes()
    }

    /// The names of every object the current state consists of: the head, then its chunks and
    /// segments (for tests, and to tell an operator what to back up).
    pub async fn objects(&self) -> Result<Vec<String>, StateError> {
        self.core.objects().await
    }

    async fn spawn<T, F>(
        &self,
        call: impl FnOnce(std::sync::Arc<Core>) -> F,
    ) -> Result<T, StateError>
    where
        F: std::future::Future<Output = Result<T, StateError>> + Send + 'static,
        T: Send + 'static,
    {
        tokio::spawn(call(self.core.clone()))
            .await
            .map_err(task_failed)?
    }
}

#[async_trait]
impl StateStore for KubeStateStore {
    async fn lock(&self, info: &LockInfo) -> Result<(), StateError> {
        let info = info.clone();
        self.spawn(|c| async move { c.lock(&info).await }).await
    }

    async fn unlock(&self, info: &LockInfo) -> Result<(), StateError> {
        let info = info.clone();
        self.spawn(|c| async move { c.unlock(&info).await }).await
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        let id = id.to_string();
        self.spawn(|c| async move { c.force_unlock(&id).await })
            .await
    }

    async fn load(&self) -> Result<State, StateError> {
        self.spawn(|c| async move { c.load().await }).await
    }

    async fn record(&self, entry: &JournalEntry) -> Result<(), StateError> {
        let entries = vec![entry.clone()];
        self.spawn(|c| async move { c.append(&entries).await })
            .await
    }

    async fn record_all(&self, entries: &[JournalEntry]) -> Result<(), StateError> {
        let entries = entries.to_vec();
        self.spawn(|c| async move { c.append(&entries).await })
            .await
    }

    async fn compact(&self, state: &State) -> Result<(), StateError> {
        let state = state.clone();
        self.spawn(|c| async move { c.compact(&state).await }).await
    }
}

/// The store's state and calls; [`KubeStateStore`] runs each call on a task of its own.
struct Core {
    secrets: Api<Secret>,
    lease: LeaseHandle,
    location: Location,
    options: Options,
    inner: tokio::sync::Mutex<Inner>,
    /// Steps waiting for the next journal write, each with whom to tell.
    queue: std::sync::Mutex<Vec<Queued>>,
    head_writes: std::sync::atomic::AtomicU64,
    tickets: std::sync::atomic::AtomicU64,
    renewer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

type Queued = (
    u64,
    Vec<JournalEntry>,
    tokio::sync::oneshot::Sender<Result<(), StateError>>,
);

/// The queue's lock; a panic elsewhere while holding it cannot leave it inconsistent (pushes
/// and takes are single calls), so a poisoned lock is used as is.
fn lock_queue(queue: &std::sync::Mutex<Vec<Queued>>) -> std::sync::MutexGuard<'_, Vec<Queued>> {
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The same failure for every caller of a shared write (StateError is not Clone: its sources
/// are kept only in the text).
fn same_error(e: &StateError) -> StateError {
    match e {
        StateError::Conflict { object, message } => StateError::Conflict {
            object: object.clone(),
            message: message.clone(),
        },
        other => StateError::Remote {
            object: "the state head".into(),
            message: format!("a journal write shared with other steps failed: {other}"),
            source: None,
        },
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStateStore")
            .field("location", &self.location)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Ok(mut r) = self.renewer.lock()
            && let Some(task) = r.take()
        {
            task.abort();
        }
    }
}

/// Builds a client from `kubeconfig` (and `context`), or, without one, from the environment:
/// the in-cluster service account, else `$KUBECONFIG` or `~/.kube/config`.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Client, StateError> {
    let what = kubeconfig.map_or("the in-cluster or default kubeconfig".to_string(), |p| {
        format!("kubeconfig {}", p.display())
    });
    let failed = |message: &str, e: Box<dyn std::error::Error + Send + Sync>| StateError::Remote {
        object: what.clone(),
        message: message.into(),
        source: Some(e),
    };
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| failed("cannot read it", Box::new(e)))?;
            let options = kube::config::KubeConfigOptions {
                context: context.map(str::to_string),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| failed("it is unusable", Box::new(e)))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| failed("no usable configuration found", Box::new(e)))?,
    };
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    kube::Client::try_from(config).map_err(|e| failed("cannot build a client", Box::new(e)))
}

impl Core {
    fn new(client: kube::Client, location: Location, options: Options) -> Self {
        let secrets = Api::namespaced(client.clone(), &location.namespace);
        let lease = LeaseHandle {
            api: Api::namespaced(client, &location.namespace),
            name: head_name(&location.fleet),
            namespace: location.namespace.clone(),
            duration: options.lease_duration,
            labels: BTreeMap::new(),
        };
        Self {
            secrets,
            lease,
            location,
            options,
            inner: tokio::sync::Mutex::new(Inner::default()),
            queue: std::sync::Mutex::new(Vec::new()),
            head_writes: std::sync::atomic::AtomicU64::new(0),
            tickets: std::sync::atomic::AtomicU64::new(0),
            renewer: std::sync::Mutex::new(None),
        }
    }

    /// How many journal writes of the head this store made (each is one etcd write), to see
    /// how well concurrent steps are grouped.
    pub fn journal_writes(&self) -> u64 {
        self.head_writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The names of every object the current state consists of: the head, then its chunks and
    /// segments (for tests, and to tell an operator what to back up).
    pub async fn objects(&self) -> Result<Vec<String>, StateError> {
        Ok(match self.read_head().await? {
            Cached::Absent => vec![],
            Cached::Present { head, .. } => std::iter::once(head_name(&self.location.fleet))
                .chain(head.chunks)
                .chain(head.segments)
                .collect(),
        })
    }

    fn object(&self, name: &str) -> String {
        format!("{}/secrets/{name}", self.location.namespace)
    }

    fn remote(&self, name: &str, message: &str) -> impl FnOnce(kube::Error) -> StateError {
        let object = self.object(name);
        let message = message.to_string();
        move |e| StateError::Remote {
            object,
            message,
            source: Some(Box::new(e)),
        }
    }

    fn secret(&self, name: &str, part: &str, key: &str, bytes: Vec<u8>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(self.location.namespace.clone()),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/managed-by".into(), "fleetform".into()),
                    (FLEET_LABEL.into(), self.location.fleet.clone()),
                    ("fleetform.dev/state-part".into(), part.into()),
                ])),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.into()),
            data: Some(BTreeMap::from([(key.into(), ByteString(bytes))])),
            ..Default::default()
        }
    }

    /// The bytes under `key` of Secret `name`; `None` when the object does not exist.
    async fn read_part(&self, name: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let Some(secret) = self
            .secrets
            .get_opt(name)
            .await
            .map_err(self.remote(name, "cannot read it"))?
        else {
            return Ok(None);
        };
        match secret.data.and_then(|mut d| d.remove(key)) {
            Some(ByteString(bytes)) => Ok(Some(bytes)),
            None => Err(self.corrupt(name, key, 1, format!("it has no data key {key:?}"))),
        }
    }

    fn corrupt(&self, name: &str, key: &str, line: usize, message: String) -> StateError {
        StateError::Corrupt {
            path: PathBuf::from(format!("{}/{key}", self.object(name))),
            line,
            message,
        }
    }

    async fn read_head(&self) -> Result<Cached, StateError> {
        let name = head_name(&self.location.fleet);
        let Some(secret) = self
            .secrets
            .get_opt(&name)
            .await
            .map_err(self.remote(&name, "cannot read the state head"))?
        else {
            return Ok(Cached::Absent);
        };
        // Without a resourceVersion a replace would be unconditional: last writer wins.
        let rv = secret
            .metadata
            .resource_version
            .clone()
            .filter(|rv| !rv.is_empty())
            .ok_or_else(|| no_resource_version(self.object(&name)))?;
        let Some(ByteString(bytes)) = secret.data.and_then(|mut d| d.remove("head.json")) else {
            return Err(self.corrupt(&name, "head.json", 1, "the data key is missing".into()));
        };
        let head: Head = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(&name, "head.json", e.line(), e.to_string()))?;
        if head.version > STATE_VERSION {
            return Err(self.corrupt(
                &name,
                "head.json",
                1,
                format!(
                    "state version {} is newer than this fleetform understands ({STATE_VERSION})",
                    head.version
                ),
            ));
        }
        Ok(Cached::Present { rv, head })
    }

    /// Writes `head` over `current`: a create when there is none, else a replace carrying the
    /// resourceVersion `current` was read at. Returns the new resourceVersion.
    async fn put_head(&self, current: &Cached, head: &Head) -> Result<String, PutError> {
        let name = head_name(&self.location.fleet);
        let bytes = serde_json::to_vec(head).map_err(|source| {
            PutError::Other(StateError::Encode {
                path: PathBuf::from(self.object(&name)),
                source,
            })
        })?;
        let mut secret = self.secret(&name, "head", "head.json", bytes);
        let written = match current {
            Cached::Absent => self.secrets.create(&PostParams::default(), &secret).await,
            Cached::Present { rv, .. } => {
                secret.metadata.resource_version = Some(rv.clone());
                self.secrets
                    .replace(&name, &PostParams::default(), &secret)
                    .await
            }
        };
        match written {
            Ok(s) => s
                .metadata
                .resource_version
                .filter(|rv| !rv.is_empty())
                .ok_or_else(|| PutError::Other(no_resource_version(self.object(&name)))),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                Err(PutError::Conflict)
            }
            Err(e) => Err(PutError::Other(self
                .remote(&name, "cannot write the state head")(
                e
            ))),
        }
    }

    /// Why a head write lost: reads the head again to name who holds it now.
    async fn lost(&self, ours: Option<u64>) -> StateError {
        let name = head_name(&self.location.fleet);
        let now = match self.read_head().await {
            Ok(Cached::Present { head, .. }) => format!(
                "it is now at fencing token {} held by lock {}",
                head.fence,
                head.holder.as_deref().unwrap_or("(none)")
            ),
            Ok(Cached::Absent) => "it was deleted".into(),
            Err(e) => format!("and it cannot be read again: {e}"),
        };
        let ours = ours.map_or("this writer holds no lock".into(), |t| {
            format!("this writer holds token {t}")
        });
        StateError::Conflict {
            object: self.object(&name),
            message: format!(
                "another writer changed the state first ({now}; {ours}); load again to see its changes"
            ),
        }
    }

    /// Refuses to write when this store's lock was taken over (its token is not the head's).
    fn check_fence(&self, inner: &Inner, head: &Head) -> Result<(), StateError> {
        match inner.fence {
            Some(t) if t != head.fence => Err(StateError::Conflict {
                object: self.object(&head_name(&self.location.fleet)),
                message: format!(
                    "the state lock was taken over by lock {} (fencing token {}, this writer holds {t})",
                    head.holder.as_deref().unwrap_or("(none)"),
                    head.fence
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Deletes objects no head names any more; a failure only leaves garbage behind.
    async fn delete_all(&self, names: &[String]) {
        futures::stream::iter(names)
            .for_each_concurrent(8, |name| async move {
                match self.secrets.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.is_not_found() => {}
                    Err(e) => tracing::warn!(object = %self.object(name), error = %e,
                        "could not delete an old state object; it is unused and safe to delete"),
                }
            })
            .await;
    }

    /// Deletes this fleet's chunks and segments that are not in `named` and older than
    /// [`Options::orphan_age`]. Best effort: without `list` on Secrets it only warns.
    async fn delete_orphans(&self, named: &[String]) {
        let selector = format!(
            "{FLEET_LABEL}={},fleetform.dev/state-part in (chunk,journal)",
            self.location.fleet
        );
        let list = match self
            .secrets
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(namespace = %self.location.namespace, error = %e,
                    "could not list state objects to delete unused ones");
                return;
            }
        };
        let now = Timestamp::now().as_millisecond();
        let min_age = i64::try_from(self.options.orphan_age.as_millis()).unwrap_or(i64::MAX);
        let orphans: Vec<String> = list
            .items
            .into_iter()
            .filter(|s| s.type_.as_deref() == Some(SECRET_TYPE))
            .filter_map(|s| {
                let name = s.metadata.name?;
                let created = s.metadata.creation_timestamp?.0.as_millisecond();
                (!named.contains(&name) && now - created >= min_age).then_some(name)
            })
            .collect();
        self.delete_all(&orphans).await;
    }

    /// Creates `parts` as new objects; on any failure deletes the ones it made.
    async fn create_all(
        &self,
        part: &str,
        key: &str,
        parts: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StateError> {
        let names: Vec<String> = parts.iter().map(|(n, _)| n.clone()).collect();
        let created = futures::stream::iter(parts)
            .map(|(name, bytes)| async move {
                let secret = self.secret(&name, part, key, bytes);
                self.secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map(|_| ())
                    .map_err(self.remote(&name, &format!("cannot create the state {part}")))
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await;
        if let Err(e) = created {
            self.delete_all(&names).await;
            return Err(e);
        }
        Ok(())
    }

    /// Appends `entries` to the journal. Steps recorded while another write is in flight are
    /// written together by whoever takes the head next (group commit): sixteen resources
    /// finishing at once cost one head write, not sixteen in a row. Each caller returns once
    /// its own steps are in etcd, or with the error that refused them all.
    async fn append(&self, entries: &[JournalEntry]) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let (done, mut written) = tokio::sync::oneshot::channel();
        let ticket = self
            .tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock_queue(&self.queue).push((ticket, entries.to_vec(), done));
        let mut inner = self.inner.lock().await;
        // An earlier holder may have written ours along with its own.
        match written.try_recv() {
            Ok(result) => return result,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                // Taken by a write that was abandoned midway (its task ended): unknown outcome.
                return Err(StateError::Remote {
                    object: self.object(&head_name(&self.location.fleet)),
                    message:
                        "the write carrying this step was abandoned; it may or may not be recorded"
                            .into(),
                    source: None,
                });
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
        }
        let batch: Vec<_> = std::mem::take(&mut *lock_queue(&self.queue));
        let all: Vec<JournalEntry> = batch
            .iter()
            .flat_map(|(_, e, _)| e.iter().cloned())
            .collect();
        let result = self.write_journal(&mut inner, &all).await;
        // Ours is in the batch (it was queued before we took the lock and nobody answered it):
        // this caller gets the error itself, with its cause; the others a copy.
        for (t, _, done) in batch {
            if t != ticket {
                let _ = done.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(same_error(e)),
                });
            }
        }
        result
    }

    /// One head write appending `entries` (moving the journal to a segment first when it has
    /// grown past [`HEAD_JOURNAL_BYTES`]). The caller holds `inner`.
    async fn write_journal(
        &self,
        inner: &mut Inner,
        entries: &[JournalEntry],
    ) -> Result<(), StateError> {
        let current = match inner.head.clone() {
            Some(c) => c,
            None => self.read_head().await?,
        };
        let mut head = current.head();
        self.check_fence(inner, &head)?;
        head.journal.extend(entries.iter().cloned());
        let lines = jsonl(&head.journal).map_err(|source| StateError::Encode {
            path: PathBuf::from(self.object(&head_name(&self.location.fleet))),
            source,
        })?;
        let mut sealed = None;
        if lines.len() > HEAD_JOURNAL_BYTES {
            let name = format!("{}-j{}", head_name(&self.location.fleet), random_suffix());
            self.create_all("journal", "journal.jsonl", vec![(name.clone(), lines)])
                .await?;
            head.segments.push(name.clone());
            head.journal.clear();
            sealed = Some(name);
        }
        match self.put_head(&current, &head).await {
            Ok(rv) => {
                self.head_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                inner.head = Some(Cached::Present { rv, head });
                Ok(())
            }
            Err(e) => {
                if let Some(name) = sealed {
                    self.delete_all(&[name]).await;
                }
                // The cache keeps the old resourceVersion: every later write fails the same way
                // until the caller loads again and sees what the other writer did.
                inner.head = Some(current);
                match e {
                    PutError::Conflict => Err(self.lost(inner.fence).await),
                    PutError::Other(e) => Err(e),
                }
            }
        }
    }

    /// Raises the head's fencing token to make this store the only writer. Retries when a
    /// write of the previous holder lands in between (it is then part of the state we load).
    async fn take_fence(&self, info: &LockInfo) -> Result<(), StateError> {
        let mut inner = self.inner.lock().await;
        for _ in 0..5 {
            let current = self.read_head().await?;
            let mut head = current.head();
            head.fence += 1;
            head.holder = Some(info.id.clone());
            match self.put_head(&current, &head).await {
                Ok(rv) => {
                    inner.fence = Some(head.fence);
                    inner.head = Some(Cached::Present { rv, head });
                    return Ok(());
                }
                Err(PutError::Conflict) => continue,
                Err(PutError::Other(e)) => return Err(e),
            }
        }
        Err(self.lost(None).await)
    }

    fn stop_renewing(&self) {
        if let Ok(mut r) = self.renewer.lock()
            && let Some(task) = r.take()
        {
            task.abort();
        }
    }
}

fn no_resource_version(object: String) -> StateError {
    StateError::Remote {
        object,
        message:
            "the API server returned it without a resourceVersion; refusing to write without one"
                .into(),
        source: None,
    }
}

/// The head's (and the Lease's) name for `fleet`.
pub fn head_name(fleet: &str) -> String {
    format!("fleetform-state-{fleet}")
}

fn random_suffix() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}

fn jsonl(entries: &[JournalEntry]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    for e in entries {
        out.extend(serde_json::to_vec(e)?);
        out.push(b'\n');
    }
    Ok(out)
}

/// The chunk a resource belongs to among `n` (a power of two): a stable hash of its id, the
/// same on every machine and release, so a chunk's content only changes with its resources.
pub fn chunk_of(id: &ResourceId, n: usize) -> usize {
    let digest = sha2::Sha256::digest(id.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // n is at most 4096, so the cast back cannot truncate.
    (u64::from_be_bytes(first) % n as u64) as usize
}

/// Splits an inventory into the fewest chunks (a power of two) of at most `budget` bytes each;
/// the serialised chunks in chunk order, empty chunks left out.
pub fn split(
    resources: &BTreeMap<ResourceId, InventoryEntry>,
    budget: usize,
) -> Result<Vec<Vec<u8>>, String> {
    let mut sizes = Vec::with_capacity(resources.len());
    for (id, entry) in resources {
        let size = serde_json::to_vec(&(id, entry))
            .map_err(|e| format!("resource {id}: {e}"))?
            .len();
        if size > budget {
            return Err(format!(
                "resource {id}: its inventory entry is {size} bytes, over the {budget}-byte object budget"
            ));
        }
        sizes.push((id, size));
    }
    let mut n = 1;
    loop {
        let mut totals = vec![0usize; n];
        for (id, size) in &sizes {
            totals[chunk_of(id, n)] += size;
        }
        if totals.iter().all(|t| *t <= budget) {
            break;
        }
        n *= 2;
        if n > 4096 {
            return Err(format!(
                "the inventory does not fit 4096 objects of {budget} bytes"
            ));
        }
    }
    let mut chunks: Vec<BTreeMap<&ResourceId, &InventoryEntry>> = vec![BTreeMap::new(); n];
    for (id, entry) in resources {
        chunks[chunk_of(id, n)].insert(id, entry);
    }
    chunks
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(|c| serde_json::to_vec(&c).map_err(|e| e.to_string()))
        .collect()
}

#[async_trait]
impl StateStore for Core {
    async fn lock(&self, info: &LockInfo) -> Result<(), StateError> {
        let taken = self.lease.acquire(info).await?;
        let fenced = self.inner.lock().await.fence.is_some();
        if (taken || !fenced)
            && let Err(e) = self.take_fence(info).await
        {
            // Holding the Lease without the token would only block others until it ran out.
            let _ = self.lease.release(Some(&info.id), false).await;
            return Err(e);
        }
        if self.options.renew {
            let lease = self.lease.clone();
            let info = info.clone();
            let every = self.options.lease_duration / 3;
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match lease.renew(&info).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(lease = %lease.name, "the state lock was taken over; this process writes nothing more");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(lease = %lease.name, error = %e, "could not renew the state lock")
                        }
                    }
                }
            });
            if let Ok(mut r) = self.renewer.lock()
                && let Some(old) = r.replace(task)
            {
                old.abort();
            }
        }
        Ok(())
    }

    async fn unlock(&self, info: &LockInfo) -> Result<(), StateError> {
        self.stop_renewing();
        self.lease.release(Some(&info.id), false).await
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        self.lease.release(Some(id), true).await
    }

    async fn load(&self) -> Result<State, StateError> {
        let mut inner = self.inner.lock().await;
        // A compaction between reading the head and reading its chunks deletes them: read again.
        for _ in 0..3 {
            let current = self.read_head().await?;
            let head = current.head();
            let mut state = State {
                version: head.version,
                last_applied_revision: head.last_applied_revision.clone(),
                last_applied_at: head.last_applied_at.clone(),
                resources: BTreeMap::new(),
            };
            let chunks: Vec<Option<Vec<u8>>> = futures::stream::iter(head.chunks.clone())
                .map(|name| async move { self.read_part(&name, "resources.json").await })
                .buffered(8)
                .try_collect()
                .await?;
            if chunks.iter().any(Option::is_none) {
                continue;
            }
            for (name, bytes) in head.chunks.iter().zip(chunks.into_iter().flatten()) {
                let part: BTreeMap<ResourceId, InventoryEntry> = serde_json::from_slice(&bytes)
                    .map_err(|e| self.corrupt(name, "resources.json", e.line(), e.to_string()))?;
                state.resources.extend(part);
            }
            let segments: Vec<Option<Vec<u8>>> = futures::stream::iter(head.segments.clone())
                .map(|name| async move { self.read_part(&name, "journal.jsonl").await })
                .buffered(8)
                .try_collect()
                .await?;
            if segments.iter().any(Option::is_none) {
                continue;
            }
            for (name, bytes) in head.segments.iter().zip(segments.into_iter().flatten()) {
                for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                    if line.is_empty() {
                        continue;
                    }
                    let entry: JournalEntry = serde_json::from_slice(line)
                        .map_err(|e| self.corrupt(name, "journal.jsonl", i + 1, e.to_string()))?;
                    state.replay(&entry);
                }
            }
            for entry in &head.journal {
                state.replay(entry);
            }
            inner.head = Some(current);
            return Ok(state);
        }
        Err(StateError::Conflict {
            object: self.object(&head_name(&self.location.fleet)),
            message: "the state was compacted under three reads in a row; try again".into(),
        })
    }

    async fn record(&self, entry: &JournalEntry) -> Result<(), StateError> {
        self.append(std::slice::from_ref(entry)).await
    }

    async fn record_all(&self, entries: &[JournalEntry]) -> Result<(), StateError> {
        self.append(entries).await
    }

    async fn compact(&self, state: &State) -> Result<(), StateError> {
        let mut inner = self.inner.lock().await;
        let current = match inner.head.clone() {
            Some(c) => c,
            None => self.read_head().await?,
        };
        let old = current.head();
        self.check_fence(&inner, &old)?;
        let base = head_name(&self.location.fleet);
        let chunks =
            split(&state.resources, CHUNK_BYTES).map_err(|message| StateError::Remote {
                object: self.object(&base),
                message,
                source: None,
            })?;
        // Fresh names: a refused compaction must not touch the chunks the head names now.
        let generation = random_suffix();
        let parts: Vec<(String, Vec<u8>)> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| (format!("{base}-{generation}-c{i}"), bytes))
            .collect();
        let names: Vec<String> = parts.iter().map(|(n, _)| n.clone()).collect();
        self.create_all("chunk", "resources.json", parts).await?;
        let head = Head {
            version: state.version,
            last_applied_revision: state.last_applied_revision.clone(),
            last_applied_at: state.last_applied_at.clone(),
            fence: old.fence,
            holder: old.holder.clone(),
            chunks: names.clone(),
            segments: vec![],
            journal: vec![],
        };
        match self.put_head(&current, &head).await {
            Ok(rv) => {
                inner.head = Some(Cached::Present { rv, head });
                drop(inner);
                let unused: Vec<String> = old.chunks.into_iter().chain(old.segments).collect();
                self.delete_all(&unused).await;
                self.delete_orphans(&names).await;
                Ok(())
            }
            Err(e) => {
                self.delete_all(&names).await;
                match e {
                    PutError::Conflict => Err(self.lost(inner.fence).await),
                    PutError::Other(e) => Err(e),
                }
            }
        }
    }
}

/// One Lease used as a lock: acquire, renew, release.
#[derive(Clone)]
pub struct LeaseHandle {
    api: Api<Lease>,
    name: String,
    namespace: String,
    duration: Duration,
    labels: BTreeMap<String, String>,
}

impl LeaseHandle {
    /// A handle on Lease `name` in `namespace`, held for `duration` per renewal.
    pub fn new(client: kube::Client, namespace: &str, name: &str, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            namespace: namespace.into(),
            duration,
            labels: BTreeMap::new(),
        }
    }

    /// Labels written on the Lease whenever this handle takes it (to find it by selector).
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn object(&self) -> String {
        format!("{}/leases/{}", self.namespace, self.name)
    }

    fn remote(&self, message: &str) -> impl FnOnce(kube::Error) -> StateError {
        let object = self.object();
        let message = message.to_string();
        move |e| StateError::Remote {
            object,
            message,
            source: Some(Box::new(e)),
        }
    }

    fn lease(
        &self,
        info: &LockInfo,
        rv: Option<String>,
        transitions: i32,
        acquired: Timestamp,
    ) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: rv,
                labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
                annotations: Some(BTreeMap::from([(
                    LOCK_ANNOTATION.into(),
                    serde_json::to_string(info).unwrap_or_default(),
                )])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(info.id.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(MicroTime(acquired)),
                renew_time: Some(MicroTime(Timestamp::now())),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    /// Takes the Lease for `info`, or renews it when `info` holds it. Ok(true): newly taken
    /// (from nobody, or from a holder whose lease ran out). A live other holder: `Locked`.
    pub async fn acquire(&self, info: &LockInfo) -> Result<bool, StateError> {
        for _ in 0..5 {
            let current = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(self.remote("cannot read the lock"))?;
            let written = match current {
                None => {
                    let lease = self.lease(info, None, 0, Timestamp::now());
                    self.api
                        .create(&PostParams::default(), &lease)
                        .await
                        .map(|_| true)
                }
                Some(current) => {
                    let spec = current.spec.clone().unwrap_or_default();
                    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
                    let mine = holder.as_deref() == Some(info.id.as_str());
                    if holder.is_some() && !mine && !expired(&spec) {
                        return Err(StateError::Locked {
                            holder: Box::new(holder_info(&current)),
                        });
                    }
                    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
                    let acquired = match (mine, spec.acquire_time) {
                        (true, Some(t)) => t.0,
                        _ => Timestamp::now(),
                    };
                    let lease = self.lease(
                        info,
                        current.metadata.resource_version,
                        transitions,
                        acquired,
                    );
                    self.api
                        .replace(&self.name, &PostParams::default(), &lease)
                        .await
                        .map(|_| !mine)
                }
            };
            match written {
                Ok(taken) => return Ok(taken),
                // Someone else wrote it between our read and write: read it again and decide.
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => continue,
                Err(e) => return Err(self.remote("cannot take the lock")(e)),
            }
        }
        Err(StateError::Conflict {
            object: self.object(),
            message: "the lock changed under five attempts to take it".into(),
        })
    }

    /// Renews the Lease while `info` holds it; Ok(false) when another holds it now.
    pub async fn renew(&self, info: &LockInfo) -> Result<bool, StateError> {
        let Some(current) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(self.remote("cannot read the lock"))?
        else {
            return Ok(false);
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(info.id.as_str()) {
            return Ok(false);
        }
        let mut lease = current;
        if let Some(s) = lease.spec.as_mut() {
            s.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(self.remote("cannot renew the lock")(e)),
        }
    }

    /// Clears the holder when it is `id` (`force`: a different holder is an error naming it).
    /// The Lease itself stays, so its transition count keeps growing.
    pub async fn release(&self, id: Option<&str>, force: bool) -> Result<(), StateError> {
        let Some(current) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(self.remote("cannot read the lock"))?
        else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        match holder {
            None => return Ok(()),
            Some(h) if Some(h.as_str()) != id => {
                return if force {
                    Err(StateError::LockMismatch {
                        given: id.unwrap_or_default().into(),
                        current: h,
                    })
                } else {
                    Ok(())
                };
            }
            Some(_) => {}
        }
        let mut lease = current;
        if let Some(s) = lease.spec.as_mut() {
            s.holder_identity = None;
            s.renew_time = None;
        }
        if let Some(a) = lease.metadata.annotations.as_mut() {
            a.remove(LOCK_ANNOTATION);
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() => Err(StateError::Conflict {
                object: self.object(),
                message: "the lock changed while releasing it; it is no longer this process's"
                    .into(),
            }),
            Err(e) => Err(self.remote("cannot release the lock")(e)),
        }
    }

    /// Who holds the Lease now, if anyone holds a live one.
    pub async fn holder(&self) -> Result<Option<LockInfo>, StateError> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(self.remote("cannot read the lock"))?;
        Ok(current.and_then(|l| {
            let spec = l.spec.clone().unwrap_or_default();
            let live = spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty())
                && !expired(&spec);
            live.then(|| holder_info(&l))
        }))
    }
}

/// True when the holder did not renew within the lease duration (or never set one).
pub(crate) fn expired(spec: &LeaseSpec) -> bool {
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(t), Some(d)) => {
            t.0.as_millisecond() + i64::from(d) * 1000 < Timestamp::now().as_millisecond()
        }
        _ => true,
    }
}

/// The holder as its annotation describes it, else as the Lease's fields do.
fn holder_info(lease: &Lease) -> LockInfo {
    if let Some(info) = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOCK_ANNOTATION))
        .and_then(|s| serde_json::from_str::<LockInfo>(s).ok())
    {
        return info;
    }
    let spec = lease.spec.clone().unwrap_or_default();
    let id = spec.holder_identity.unwrap_or_default();
    LockInfo {
        who: id.clone(),
        id,
        operation: "unknown".into(),
        created: spec
            .acquire_time
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        // A Lease's holder is judged by its renew time, not by a local pid.
        host: String::new(),
        pid: 0,
    }
}

/// Moves a fleet's state from one store to another (`fleetform state migrate`): locks both,
/// loads `from` (compacted state plus journal) and writes it to `to` as its compacted state.
/// Refuses when `to` already manages resources, which the copy would otherwise drop. Returns
/// how many resources moved. `from` is left as it was.
pub async fn migrate(
    from: &dyn StateStore,
    to: &dyn StateStore,
    info: &LockInfo,
) -> Result<usize, StateError> {
    from.lock(info).await?;
    let moved = async {
        to.lock(info).await?;
        let copied = async {
            let existing = to.load().await?;
            if !existing.resources.is_empty() {
                return Err(StateError::Conflict {
                    object: "the destination".into(),
                    message: format!(
                        "it already manages {} resource(s); migrating would drop them (remove its state first)",
                        existing.resources.len()
                    ),
                });
            }
            let state = from.load().await?;
            to.compact(&state).await?;
            Ok(state.resources.len())
        }
        .await;
        let released = to.unlock(info).await;
        let n = copied?;
        released.map(|()| n)
    }
    .await;
    let released = from.unlock(info).await;
    let n = moved?;
    released.map(|()| n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_url_parses_and_a_directory_is_not_one() {
        assert_eq!(
            Location::parse("kubernetes://fleetform/prod")
                .unwrap()
                .unwrap(),
            Location {
                namespace: "fleetform".into(),
                fleet: "prod".into()
            }
        );
        assert!(Location::parse("./state").is_none());
        for bad in [
            "kubernetes://ns",
            "kubernetes://NS/prod",
            "kubernetes://ns/a/b",
            "kubernetes:///prod",
        ] {
            let err = Location::parse(bad).unwrap().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    fn entry(n: usize) -> InventoryEntry {
        InventoryEntry {
            spec: Some(serde_json::json!({"n": n, "pad": "x".repeat(40)})),
            spec_digest: Some(format!("sha256:{n:064x}")),
            sensitive: vec![],
            deps: vec![],
            prevent_destroy: false,
            pending: false,
            revision: Some("abc".into()),
        }
    }

    #[test]
    fn a_large_inventory_splits_into_chunks_under_the_budget_and_each_resource_lands_once() {
        let resources: BTreeMap<ResourceId, InventoryEntry> = (0..2000)
            .map(|i| (ResourceId::new("test", format!("r{i}")), entry(i)))
            .collect();
        let chunks = split(&resources, 16 * 1024).unwrap();
        assert!(chunks.len() > 4, "{} chunks", chunks.len());
        let mut seen = BTreeMap::new();
        for c in &chunks {
            assert!(c.len() <= 16 * 1024 + 2, "chunk of {} bytes", c.len());
            let part: BTreeMap<ResourceId, InventoryEntry> = serde_json::from_slice(c).unwrap();
            for (id, e) in part {
                assert!(seen.insert(id, e).is_none());
            }
        }
        assert_eq!(seen, resources);
    }

    #[test]
    fn an_entry_larger_than_an_object_is_refused_by_name() {
        let resources = BTreeMap::from([(ResourceId::new("test", "big"), entry(1))]);
        let err = split(&resources, 50).unwrap_err();
        assert!(err.contains("test.big") || err.contains("big"), "{err}");
    }

    #[test]
    fn the_chunk_of_a_resource_is_stable() {
        // Pinned: a change would reshuffle every stored inventory on upgrade.
        let id = ResourceId::new("kube", "ns/app");
        let n = chunk_of(&id, 1 << 12);
        // The first 8 bytes of sha256("kube:ns/app"), big-endian, modulo 4096 (checked with sha256sum).
        assert_eq!(n, 359, "{}", id.as_str());
        assert_eq!(chunk_of(&id, 1 << 12), n);
        assert_eq!(chunk_of(&id, 2), n % 2);
    }
}
