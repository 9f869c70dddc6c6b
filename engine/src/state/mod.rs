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
//!
//! Takes journal entries as apply records them, gives the [`State`] the next plan reads.
//! Files: local.rs is the local directory store, journal.rs its journal writer (group
//! commit) and the crash points tests inject through [`LocalStateStore::open_with`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::resource::{Dependency, ResourceId};

mod journal;
mod local;

pub use journal::CrashPoint;
pub use local::{LocalStateStore, write_atomic};

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
