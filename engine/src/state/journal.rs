//! The local store's journal writer: one thread appends lines and shares one fsync among
//! the lines recorded together; crash points abort at a chosen write for crash tests.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

use super::StateError;

/// What the journal's writer thread is asked to do.
#[derive(Debug)]
pub(super) enum JournalOp {
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
pub(super) fn write_journal(path: PathBuf, ops: std::sync::mpsc::Receiver<JournalOp>) {
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

pub(super) fn journal_stopped(path: &Path) -> StateError {
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
    /// A crash point from its spec: `N` aborts just before the Nth journal write, `N+`
    /// just after it is durable. The caller decides where the spec comes from (the crash
    /// tests read `FLEETFORM_CRASH_AT`); the library never reads the environment for it.
    pub fn parse(spec: &str) -> Option<Self> {
        let (n, after) = match spec.strip_suffix('+') {
            Some(n) => (n, true),
            None => (spec, false),
        };
        Some(Self {
            at: n.parse().ok()?,
            after_write: after,
            counter: &CRASH_COUNTER,
        })
    }

    pub(super) fn hit(&self, after: bool) {
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
            eprintln!("fleetform: crash point {} reached, aborting", self.at);
            std::process::abort();
        }
    }

    pub(super) fn count_after(&self) {
        if self.after_write {
            self.counter
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
