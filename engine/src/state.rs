//! State: the inventory of what fleetform manages, the last applied revision,
//! and a journal that makes an interrupted apply resumable.
//!
//! The embedded default is a local directory:
//! - `state.json`: the compacted state, written atomically (write, fsync, rename, fsync dir);
//! - `journal.jsonl`: one fsynced line per step taken since the last compaction,
//!   replayed on load, so a crash at any point loses nothing; lines recorded at the same
//!   time share one fsync (group commit), so concurrent steps do not queue for the disk;
//! - `lock.json`: an exclusive lock created with `O_EXCL`, naming who holds it.
//!
//! The [`StateStore`] trait is async so a Kubernetes-backed store (a Lease for
//! the lock, objects for state) can replace the directory without changing callers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::resource::{Dependency, ResourceId};

/// The version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// What fleetform remembers about one resource it manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// The spec last applied, with sensitive values replaced by their digest.
    /// `None` while the first apply is in flight (see `pending`).
    pub spec: Option<serde_json::Value>,
    /// Digest of the full spec (sensitive values included) last applied.
    pub spec_digest: Option<String>,
    /// The sensitive paths of the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
    /// Its dependencies when last applied, to delete in reverse order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<Dependency>,
    /// Refuse to delete it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prevent_destroy: bool,
    /// An apply started and has not been confirmed: the resource may or may
    /// not exist. Recorded before the provider is called, so a crash never
    /// forgets something it created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// The revision it was last applied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// Everything in the state store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// File format version.
    pub version: u32,
    /// The last revision whose apply finished without errors.
    pub last_applied_revision: Option<String>,
    /// When that apply finished (RFC 3339).
    pub last_applied_at: Option<String>,
    /// Managed resources.
    pub resources: BTreeMap<ResourceId, InventoryEntry>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            last_applied_revision: None,
            last_applied_at: None,
            resources: BTreeMap::new(),
        }
    }
}

/// One step recorded in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum JournalEntry {
    /// An apply of this resource is about to start.
    Intent {
        /// The resource.
        id: ResourceId,
        /// Its entry as it will be if the apply succeeds, marked pending.
        entry: InventoryEntry,
    },
    /// The apply succeeded.
    Applied {
        /// The resource.
        id: ResourceId,
        /// Its entry now.
        entry: InventoryEntry,
    },
    /// The resource was deleted (or found gone).
    Removed {
        /// The resource.
        id: ResourceId,
    },
    /// A whole apply finished without errors at this revision.
    Revision {
        /// The revision.
        revision: String,
        /// When (RFC 3339).
        at: String,
    },
}

impl State {
    /// Applies one journal entry.
    pub fn replay(&mut self, entry: &JournalEntry) {
        match entry {
            JournalEntry::Intent { id, entry } => {
                // Keep the previous last-applied spec: the new one is not confirmed.
                let e = self
                    .resources
                    .entry(id.clone())
                    .or_insert_with(|| entry.clone());
                e.pending = true;
                e.deps = entry.deps.clone();
                e.prevent_destroy = entry.prevent_destroy;
                e.sensitive = entry.sensitive.clone();
            }
            JournalEntry::Applied { id, entry } => {
                self.resources.insert(id.clone(), entry.clone());
            }
            JournalEntry::Removed { id } => {
                self.resources.remove(id);
            }
            JournalEntry::Revision { revision, at } => {
                self.last_applied_revision = Some(revision.clone());
                self.last_applied_at = Some(at.clone());
            }
        }
    }
}

/// Who holds the lock, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// A random id to pass to `force-unlock`.
    pub id: String,
    /// `user@host (pid N)`.
    pub who: String,
    /// The operation (`apply`, `serve`, ...).
    pub operation: String,
    /// When it was taken (RFC 3339).
    pub created: String,
    /// The holder's host name (empty in locks written before it was recorded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// The holder's process id (0 when not recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pid: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// This machine's host name, as locks record it.
fn this_host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

impl LockInfo {
    /// A lock description for this process.
    pub fn for_this_process(operation: &str) -> Self {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let host = this_host();
        Self {
            id: hex::encode(rand::random::<[u8; 8]>()),
            who: format!("{user}@{host} (pid {})", std::process::id()),
            operation: operation.into(),
            created: now_rfc3339(),
            host,
            pid: std::process::id(),
        }
    }

    /// True when the lock provably outlived its holder: taken on this host by a process
    /// that no longer runs (no `/proc/<pid>`). A lock from another host, or without a pid,
    /// cannot be judged here and is never called stale; a reused pid keeps it live (the
    /// safe side). fleetform never takes a stale lock over by itself: it says so, and
    /// `force-unlock` removes it.
    pub fn is_stale(&self) -> bool {
        self.pid != 0
            && !self.host.is_empty()
            && self.host == this_host()
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// State store failures. Each names the path or the lock holder.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Someone else holds the lock.
    #[error("state is locked by {} since {} for `{}` (lock id {}); if that process is gone, run `fleetform force-unlock {}`", .holder.who, .holder.created, .holder.operation, .holder.id, .holder.id)]
    Locked {
        /// Who.
        holder: Box<LockInfo>,
    },
    /// The lock's holder ran on this host and is gone ([`LockInfo::is_stale`]).
    #[error("state is locked by {} since {} for `{}` (lock id {}), but that process no longer runs on this host: the lock is stale (its run was cut short; the journal keeps what it did, and the next apply converges). Run `fleetform force-unlock {}`", .holder.who, .holder.created, .holder.operation, .holder.id, .holder.id)]
    StaleLock {
        /// The dead holder.
        holder: Box<LockInfo>,
    },
    /// `force-unlock` with an id that is not the holder's.
    #[error("lock id {given} does not match the current lock ({current})")]
    LockMismatch {
        /// The id given.
        given: String,
        /// The holder's id.
        current: String,
    },
    /// Reading or writing a state file failed.
    #[error("state file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be serialised for a state file; nothing was written.
    #[error("state file {path}: cannot serialise the record")]
    Encode {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A state file is not valid (hand-edited, or written by a newer fleetform).
    #[error("state file {path} is corrupt at line {line}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A remote store (the Kubernetes API) failed a request; nothing is known to be written.
    #[error("state object {object}: {message}")]
    Remote {
        /// The object (`namespace/kind/name`).
        object: String,
        /// What was being done.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Another writer changed the state first (optimistic concurrency) or took the lock over
    /// (fencing): this write was refused and nothing was written.
    #[error("state object {object}: {message}; nothing was written")]
    Conflict {
        /// The object (`namespace/kind/name`).
        object: String,
        /// Who won, as far as known.
        message: String,
    },
}

/// Where state lives. Implementations must make `record` and `record_all` durable before
/// returning; `record_result` may wait for the next sync.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Takes the exclusive lock, or says who holds it.
    async fn lock(&self, info: &LockInfo) -> Result<(), StateError>;
    /// Releases the lock taken by this process.
    async fn unlock(&self, info: &LockInfo) -> Result<(), StateError>;
    /// Removes a lock by id, whoever holds it.
    async fn force_unlock(&self, id: &str) -> Result<(), StateError>;
    /// Reads the current state (compacted state plus journal).
    async fn load(&self) -> Result<State, StateError>;
    /// Durably records one step.
    async fn record(&self, entry: &JournalEntry) -> Result<(), StateError>;
    /// Durably records several steps, in order; a store may make them durable together.
    async fn record_all(&self, entries: &[JournalEntry]) -> Result<(), StateError> {
        for entry in entries {
            self.record(entry).await?;
        }
        Ok(())
    }
    /// Records the result of a call whose intent is already durable. A store may return
    /// before it is durable (it is with the next sync or compaction): lost in a crash, the
    /// resource stays pending in the inventory, and the next plan observes it again.
    async fn record_result(&self, entry: &JournalEntry) -> Result<(), StateError> {
        self.record(entry).await
    }
    /// Writes `state` as the new compacted state and clears the journal.
    async fn compact(&self, state: &State) -> Result<(), StateError>;
}

/// The embedded default: a local state directory.
#[derive(Debug)]
pub struct LocalStateStore {
    dir: PathBuf,
    journal: std::sync::mpsc::Sender<JournalOp>,
    crash: Option<CrashPoint>,
}

/// What the journal's writer thread is asked to do.
#[derive(Debug)]
enum JournalOp {
    /// Append these lines; answer once they are written, and synced when `sync` is true.
    Append {
        lines: Vec<u8>,
        sync: bool,
        done: oneshot::Sender<std::io::Result<()>>,
    },
    /// Close and remove the journal (its steps are in a compacted state now).
    Clear(oneshot::Sender<std::io::Result<()>>),
}

/// The journal's writer: one thread owns the file. It takes every line queued while it was
/// busy, writes them together and syncs once if any caller needs it, then answers each caller
/// (group commit). A caller that asked for a sync still returns only once its own line is
/// durable; sixteen steps finishing together cost one fsync instead of sixteen in a row.
fn write_journal(path: PathBuf, ops: std::sync::mpsc::Receiver<JournalOp>) {
    let mut file: Option<std::fs::File> = None;
    let mut lines = Vec::new();
    let mut waiting = Vec::new();
    let mut sync = false;
    while let Ok(first) = ops.recv() {
        for op in std::iter::once(first).chain(ops.try_iter()) {
            match op {
                JournalOp::Append {
                    lines: more,
                    sync: needs_sync,
                    done,
                } => {
                    lines.extend_from_slice(&more);
                    waiting.push(done);
                    sync |= needs_sync;
                }
                JournalOp::Clear(done) => {
                    write_lines(&path, &mut file, &mut lines, &mut waiting, sync);
                    sync = false;
                    file = None;
                    let removed = match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    };
                    let _ = done.send(removed);
                }
            }
        }
        write_lines(&path, &mut file, &mut lines, &mut waiting, sync);
        sync = false;
    }
}

/// Appends `lines` to the journal, syncs when asked, and tells everyone `waiting` how it went.
fn write_lines(
    path: &Path,
    file: &mut Option<std::fs::File>,
    lines: &mut Vec<u8>,
    waiting: &mut Vec<oneshot::Sender<std::io::Result<()>>>,
    sync: bool,
) {
    if waiting.is_empty() {
        return;
    }
    let written = (|| {
        let f = match file {
            Some(f) => f,
            None => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                // A new journal's directory entry must be durable too.
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                file.insert(f)
            }
        };
        f.write_all(lines)?;
        if sync { f.sync_data() } else { Ok(()) }
    })();
    if written.is_err() {
        *file = None;
    }
    for done in waiting.drain(..) {
        let answer = match &written {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        let _ = done.send(answer);
    }
    lines.clear();
}

fn journal_stopped(path: &Path) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other("the journal writer thread stopped"),
    }
}

/// Fault injection for tests: abort the process at the Nth journal write,
/// before (`Before`) or after (`After`) it reaches the disk.
#[derive(Debug, Clone, Copy)]
pub struct CrashPoint {
    /// Which write (1-based).
    pub at: usize,
    /// True: abort after the write is durable; false: just before it.
    pub after_write: bool,
    counter: &'static std::sync::atomic::AtomicUsize,
}

static CRASH_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl CrashPoint {
    /// Reads `FLEETFORM_CRASH_AT=N` or `N+` (after the write) from the environment.
    pub fn from_env() -> Option<Self> {
        let v = std::env::var("FLEETFORM_CRASH_AT").ok()?;
        let (n, after) = match v.strip_suffix('+') {
            Some(n) => (n, true),
            None => (v.as_str(), false),
        };
        Some(Self {
            at: n.parse().ok()?,
            after_write: after,
            counter: &CRASH_COUNTER,
        })
    }

    fn hit(&self, after: bool) {
        if after != self.after_write {
            return;
        }
        let n = if after {
            self.counter.load(std::sync::atomic::Ordering::SeqCst)
        } else {
            self.counter
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1
        };
        if n == self.at {
            eprintln!(
                "fleetform: FLEETFORM_CRASH_AT={} reached, aborting",
                self.at
            );
            std::process::abort();
        }
    }

    fn count_after(&self) {
        if self.after_write {
            self.counter
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl LocalStateStore {
    /// A store in `dir` (created if missing). Honours `FLEETFORM_CRASH_AT` for crash tests.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StateError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| StateError::Io {
            path: dir.clone(),
            source,
        })?;
        let (journal, ops) = std::sync::mpsc::channel();
        let path = dir.join("journal.jsonl");
        std::thread::Builder::new()
            .name("fleetform-journal".into())
            .spawn(move || write_journal(path, ops))
            .map_err(|source| StateError::Io {
                path: dir.clone(),
                source,
            })?;
        Ok(Self {
            dir,
            journal,
            crash: CrashPoint::from_env(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `entries` as journal lines through the writer thread; `sync`: return only once
    /// they are durable. Crash points count each entry as one write.
    async fn append(&self, entries: &[JournalEntry], sync: bool) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        if let Some(c) = &self.crash {
            for _ in entries {
                c.hit(false);
            }
        }
        let jpath = self.path("journal.jsonl");
        let mut lines = Vec::new();
        for entry in entries {
            lines.extend(serde_json::to_vec(entry).map_err(encode(&jpath))?);
            lines.push(b'\n');
        }
        let (done, written) = oneshot::channel();
        self.journal
            .send(JournalOp::Append { lines, sync, done })
            .map_err(|_| journal_stopped(&jpath))?;
        written
            .await
            .map_err(|_| journal_stopped(&jpath))?
            .map_err(io(&jpath))?;
        if let Some(c) = &self.crash {
            for _ in entries {
                c.count_after();
                c.hit(true);
            }
        }
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read_lock(&self) -> Result<Option<LockInfo>, StateError> {
        let path = self.path("lock.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        path,
                        line: e.line(),
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn encode(path: &Path) -> impl FnOnce(serde_json::Error) -> StateError + '_ {
    move |source| StateError::Encode {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file atomically: a temporary file beside it, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state")
    ));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[async_trait]
impl StateStore for LocalStateStore {
    async fn lock(&self, info: &LockInfo) -> Result<(), StateError> {
        let path = self.path("lock.json");
        let body = serde_json::to_vec_pretty(info).map_err(encode(&path))?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(&body)
                    .and_then(|_| f.sync_all())
                    .map_err(io(&path))?;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match self.read_lock()? {
                Some(holder) if holder.is_stale() => Err(StateError::StaleLock {
                    holder: Box::new(holder),
                }),
                Some(holder) => Err(StateError::Locked {
                    holder: Box::new(holder),
                }),
                // Removed between our attempt and the read: try once more.
                None => self.lock(info).await,
            },
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    async fn unlock(&self, info: &LockInfo) -> Result<(), StateError> {
        match self.read_lock()? {
            Some(h) if h.id == info.id => {
                std::fs::remove_file(self.path("lock.json")).map_err(io(&self.path("lock.json")))
            }
            _ => Ok(()),
        }
    }

    async fn force_unlock(&self, id: &str) -> Result<(), StateError> {
        match self.read_lock()? {
            Some(h) if h.id == id => {
                std::fs::remove_file(self.path("lock.json")).map_err(io(&self.path("lock.json")))
            }
            Some(h) => Err(StateError::LockMismatch {
                given: id.into(),
                current: h.id,
            }),
            None => Ok(()),
        }
    }

    async fn load(&self) -> Result<State, StateError> {
        let spath = self.path("state.json");
        let mut state = match std::fs::read(&spath) {
            Ok(bytes) => {
                serde_json::from_slice::<State>(&bytes).map_err(|e| StateError::Corrupt {
                    path: spath.clone(),
                    line: e.line(),
                    message: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => {
                return Err(StateError::Io {
                    path: spath,
                    source,
                });
            }
        };
        if state.version > STATE_VERSION {
            return Err(StateError::Corrupt {
                path: spath,
                line: 1,
                message: format!(
                    "state version {} is newer than this fleetform understands ({STATE_VERSION})",
                    state.version
                ),
            });
        }
        let jpath = self.path("journal.jsonl");
        match std::fs::read_to_string(&jpath) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                for (i, line) in lines.iter().enumerate() {
                    match serde_json::from_str::<JournalEntry>(line) {
                        Ok(entry) => state.replay(&entry),
                        // A torn last line is a write the crash interrupted: it never happened.
                        Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
                        Err(e) => {
                            return Err(StateError::Corrupt {
                                path: jpath,
                                line: i + 1,
                                message: e.to_string(),
                            });
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Io {
                    path: jpath,
                    source,
                });
            }
        }
        Ok(state)
    }

    async fn record(&self, entry: &JournalEntry) -> Result<(), StateError> {
        self.append(std::slice::from_ref(entry), true).await
    }

    async fn record_all(&self, entries: &[JournalEntry]) -> Result<(), StateError> {
        self.append(entries, true).await
    }

    async fn record_result(&self, entry: &JournalEntry) -> Result<(), StateError> {
        self.append(std::slice::from_ref(entry), false).await
    }

    async fn compact(&self, state: &State) -> Result<(), StateError> {
        // An inventory that cannot be written must not clear the journal that still holds it.
        let spath = self.path("state.json");
        let bytes = serde_json::to_vec_pretty(state).map_err(encode(&spath))?;
        write_atomic(&spath, &bytes)?;
        let jpath = self.path("journal.jsonl");
        let (done, cleared) = oneshot::channel();
        self.journal
            .send(JournalOp::Clear(done))
            .map_err(|_| journal_stopped(&jpath))?;
        cleared
            .await
            .map_err(|_| journal_stopped(&jpath))?
            .map_err(io(&jpath))
    }
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats seconds since the epoch as RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn rfc3339(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::<chrono::Utc>::from_timestamp(s, 0))
        .unwrap_or_default();
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_cannot_be_serialised_is_an_error_naming_the_file() {
        // serde_json cannot fail on the state's own types; any serde_json error stands in.
        let cause = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let err = encode(Path::new("/state/state.json"))(cause);
        assert_eq!(
            err.to_string(),
            "state file /state/state.json: cannot serialise the record"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    fn entry(spec: serde_json::Value) -> InventoryEntry {
        InventoryEntry {
            spec: Some(spec),
            spec_digest: None,
            sensitive: vec![],
            deps: vec![],
            prevent_destroy: false,
            pending: false,
            revision: None,
        }
    }

    #[tokio::test]
    async fn a_second_lock_names_the_holder_and_force_unlock_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateStore::open(dir.path()).unwrap();
        let first = LockInfo::for_this_process("apply");
        store.lock(&first).await.unwrap();
        let err = store
            .lock(&LockInfo::for_this_process("plan"))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&first.id) && msg.contains("force-unlock") && msg.contains("apply"),
            "{msg}"
        );
        assert!(matches!(
            store.force_unlock("nope").await,
            Err(StateError::LockMismatch { .. })
        ));
        store.force_unlock(&first.id).await.unwrap();
        store
            .lock(&LockInfo::for_this_process("plan"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_lock_left_by_a_process_that_died_on_this_host_is_named_stale_and_force_unlock_works()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateStore::open(dir.path()).unwrap();
        // A process that ran and exited: its pid is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mut holder = LockInfo::for_this_process("apply");
        holder.pid = dead;
        store.lock(&holder).await.unwrap();
        let err = store
            .lock(&LockInfo::for_this_process("plan"))
            .await
            .unwrap_err();
        assert!(matches!(err, StateError::StaleLock { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("force-unlock {}", holder.id)),
            "{err}"
        );
        // A live holder (this process) is a plain lock, not stale.
        store.force_unlock(&holder.id).await.unwrap();
        let live = LockInfo::for_this_process("apply");
        store.lock(&live).await.unwrap();
        let err = store
            .lock(&LockInfo::for_this_process("plan"))
            .await
            .unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        // Another host's lock cannot be judged here.
        let other = LockInfo {
            host: "elsewhere".into(),
            pid: dead,
            ..live.clone()
        };
        assert!(!other.is_stale());
    }

    #[tokio::test]
    async fn journal_survives_without_compaction_and_a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateStore::open(dir.path()).unwrap();
        let id = ResourceId::new("test", "a");
        store
            .record(&JournalEntry::Intent {
                id: id.clone(),
                entry: entry(serde_json::json!({"v": 1})),
            })
            .await
            .unwrap();
        store
            .record(&JournalEntry::Applied {
                id: id.clone(),
                entry: entry(serde_json::json!({"v": 1})),
            })
            .await
            .unwrap();
        // Simulate a crash mid-write of a third line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("journal.jsonl"))
            .unwrap();
        f.write_all(b"{\"op\":\"removed\",\"id\":\"te").unwrap();
        let state = LocalStateStore::open(dir.path())
            .unwrap()
            .load()
            .await
            .unwrap();
        assert_eq!(state.resources[&id].spec, Some(serde_json::json!({"v": 1})));
        assert!(!state.resources[&id].pending);
    }

    #[tokio::test]
    async fn an_intent_without_confirmation_stays_pending_and_keeps_the_previous_spec() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateStore::open(dir.path()).unwrap();
        let id = ResourceId::new("test", "a");
        store
            .record(&JournalEntry::Applied {
                id: id.clone(),
                entry: entry(serde_json::json!({"v": 1})),
            })
            .await
            .unwrap();
        store
            .record(&JournalEntry::Intent {
                id: id.clone(),
                entry: entry(serde_json::json!({"v": 2})),
            })
            .await
            .unwrap();
        let state = store.load().await.unwrap();
        assert!(state.resources[&id].pending);
        assert_eq!(state.resources[&id].spec, Some(serde_json::json!({"v": 1})));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn records_made_at_once_are_all_durable_and_the_journal_reopens_after_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStateStore::open(dir.path()).unwrap());
        let writes = (0..200).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record(&JournalEntry::Applied {
                        id: ResourceId::new("test", format!("r{i:03}")),
                        entry: entry(serde_json::json!({"i": i})),
                    })
                    .await
            })
        });
        for w in futures::future::join_all(writes).await {
            w.unwrap().unwrap();
        }
        // Every line is whole and on disk: a second store reads them all.
        let lines = std::fs::read_to_string(dir.path().join("journal.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 200);
        let state = LocalStateStore::open(dir.path())
            .unwrap()
            .load()
            .await
            .unwrap();
        assert_eq!(state.resources.len(), 200);
        store.compact(&state).await.unwrap();
        assert!(!dir.path().join("journal.jsonl").exists());
        store
            .record(&JournalEntry::Removed {
                id: ResourceId::new("test", "r000"),
            })
            .await
            .unwrap();
        assert_eq!(store.load().await.unwrap().resources.len(), 199);
    }

    #[tokio::test]
    async fn compaction_writes_state_and_clears_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateStore::open(dir.path()).unwrap();
        let id = ResourceId::new("test", "a");
        store
            .record(&JournalEntry::Applied {
                id: id.clone(),
                entry: entry(serde_json::json!({})),
            })
            .await
            .unwrap();
        let state = store.load().await.unwrap();
        store.compact(&state).await.unwrap();
        assert!(!dir.path().join("journal.jsonl").exists());
        assert_eq!(store.load().await.unwrap(), state);
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_737_600), "2026-11-27T00:00:00Z");
    }
}
