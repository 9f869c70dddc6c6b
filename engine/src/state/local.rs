//! The local state directory: `state.json`, `journal.jsonl` and `lock.json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::journal::{CrashPoint, JournalOp, journal_stopped, write_journal};
use super::{JournalEntry, LockInfo, STATE_VERSION, State, StateError, StateStore};

/// The embedded default: a local state directory.
#[derive(Debug)]
pub struct LocalStateStore {
    dir: PathBuf,
    journal: std::sync::mpsc::Sender<JournalOp>,
    crash: Option<CrashPoint>,
}

impl LocalStateStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StateError> {
        Self::open_with(dir, None)
    }

    /// [`LocalStateStore::open`] with a crash point: the process aborts at that journal
    /// write (fault injection for crash tests).
    pub fn open_with(dir: impl AsRef<Path>, crash: Option<CrashPoint>) -> Result<Self, StateError> {
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
            crash,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::resource::ResourceId;
    use crate::state::{InventoryEntry, rfc3339};

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
