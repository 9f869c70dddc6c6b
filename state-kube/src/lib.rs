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
//!
//! Files: `store.rs` (the store's reads and writes), `chunks.rs` (splitting the inventory),
//! `lease.rs` (a Lease as a lock), `shard.rs` (tenant shards over replicas).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use fleetform_engine::state::{JournalEntry, LockInfo, State, StateError, StateStore};

mod chunks;
mod lease;
pub mod shard;
mod store;

pub use chunks::{chunk_of, split};
pub use lease::LeaseHandle;
pub(crate) use lease::expired;
use store::Core;

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

/// The head's (and the Lease's) name for `fleet`.
pub fn head_name(fleet: &str) -> String {
    format!("fleetform-state-{fleet}")
}

fn random_suffix() -> String {
    hex::encode(rand::random::<[u8; 4]>())
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
    use std::collections::BTreeMap;

    use fleetform_engine::resource::ResourceId;
    use fleetform_engine::state::InventoryEntry;

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
