//! The store's calls: reading and writing the head, chunks and journal segments with
//! optimistic concurrency, group commit of journal steps, fencing, compaction.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use fleetform_engine::resource::ResourceId;
use fleetform_engine::state::{
    InventoryEntry, JournalEntry, LockInfo, STATE_VERSION, State, StateError, StateStore,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use serde::{Deserialize, Serialize};

use crate::chunks::{jsonl, split};
use crate::lease::LeaseHandle;
use crate::{
    CHUNK_BYTES, FLEET_LABEL, HEAD_JOURNAL_BYTES, Location, Options, SECRET_TYPE, head_name,
    random_suffix,
};

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

/// The store's state and calls; [`KubeStateStore`] runs each call on a task of its own.
pub(crate) struct Core {
    secrets: Api<Secret>,
    lease: LeaseHandle,
    pub(crate) location: Location,
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

impl Core {
    pub(crate) fn new(client: kube::Client, location: Location, options: Options) -> Self {
        let secrets = Api::namespaced(client.clone(), &location.namespace);
        let lease = LeaseHandle::new(
            client,
            &location.namespace,
            &head_name(&location.fleet),
            options.lease_duration,
        );
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
    pub(crate) async fn append(&self, entries: &[JournalEntry]) -> Result<(), StateError> {
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
                            tracing::warn!(lease = %lease.name(), "the state lock was taken over; this process writes nothing more");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(lease = %lease.name(), error = %e, "could not renew the state lock")
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
