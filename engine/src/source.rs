//! Source: the fleet manifest at a git revision.
//!
//! [`GitSource::fetch`] keeps one bare repository per URL in a cache
//! directory, fetches the wanted ref (depth 1 where the transport supports
//! it) and resolves it to a [`Revision`]. [`FleetRepo::read_tree`] then reads
//! the manifest files of that commit straight from the object database,
//! without a checkout, so nothing in the repository (hooks, filters,
//! symlinks) ever touches the local filesystem.
//!
//! Around that sit the checks a GitOps engine needs before it trusts a
//! revision: [`GitSource::check_fast_forward`] (was the branch rewritten since
//! the last apply?), [`FleetRepo::verify_commit`] (is the head commit signed
//! by an allowed key?) and [`FleetRepo::diff_paths`] (what does a pull
//! request change in the manifest?).
//!
//! Every error names the URL with its credentials masked (see
//! [`redact_url`]) and never carries a token, password or key.

mod auth;
mod history;
mod tree;
mod url;
mod verify;

use std::path::{Path, PathBuf};
use std::time::Instant;

use git2::{AutotagOption, FetchOptions, Oid, Repository};
use serde::{Deserialize, Serialize};

use crate::secret::{SecretError, SecretRef, SecretResolver};

pub use tree::{ChangeKind, ChangedFile, SourceFile};
pub use url::{Transport, redact_url};
pub use verify::{SignatureKind, Verification, Verified};

/// Which commit of the repository the fleet follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum GitRef {
    /// The head of a branch (`{branch: main}`).
    Branch(String),
    /// A tag, annotated or lightweight (`{tag: v1.2.0}`).
    Tag(String),
    /// A fixed commit, full hex id (`{commit: 4f2a…}`).
    Commit(String),
}

impl std::fmt::Display for GitRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitRef::Branch(b) => write!(f, "branch {b}"),
            GitRef::Tag(t) => write!(f, "tag {t}"),
            GitRef::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

/// How to authenticate to the remote. Only references to secrets are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum GitAuth {
    /// An HTTPS access token (GitHub, GitLab, Gitea…), sent as the password;
    /// the user name is the one in the URL, or `x-access-token`.
    Token {
        /// Where the token is.
        token: SecretRef,
    },
    /// HTTPS user name and password.
    Basic {
        /// The user name (not secret).
        username: String,
        /// Where the password is.
        password: SecretRef,
    },
    /// An SSH private key (OpenSSH or PEM format).
    #[serde(rename_all = "camelCase")]
    SshKey {
        /// Where the private key is (usually `{file: ...}`).
        private_key: SecretRef,
        /// A known_hosts file the server's host key must be listed in. Without
        /// it libgit2 checks `~/.ssh/known_hosts`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        known_hosts: Option<PathBuf>,
        /// The key's passphrase, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<SecretRef>,
    },
}

/// Where the fleet manifest lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    /// Local path, `file://`, `git://`, `https://`, `ssh://` or scp-style `user@host:path`.
    pub url: String,
    /// Branch, tag or commit.
    #[serde(rename = "ref")]
    pub reference: GitRef,
    /// Subdirectory of the repository holding the fleet (`""` = the root).
    #[serde(default)]
    pub path: String,
    /// Credentials, when the remote needs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<GitAuth>,
}

/// A resolved revision of the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Full hex commit id.
    pub commit: String,
    /// The ref it was resolved from.
    pub reference: GitRef,
    /// First line of the commit message.
    pub summary: String,
    /// `Name <email>` of the author.
    pub author: String,
    /// Commit time, seconds since the Unix epoch.
    pub time: i64,
}

/// Bounds on what [`FleetRepo::read_tree`] reads: a manifest repository that
/// grows a 2 GiB file is refused, not loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest single manifest file.
    pub max_file_bytes: u64,
    /// Largest sum of all manifest files.
    pub max_total_bytes: u64,
    /// Most manifest files.
    pub max_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 4 << 20,
            max_total_bytes: 64 << 20,
            max_files: 10_000,
        }
    }
}

/// Options of a [`GitSource`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SourceOptions {
    /// Fetch depth on transports that support shallow fetches (git, ssh,
    /// http(s)); `None` fetches full history. Local paths and `file://`
    /// always fetch full history (libgit2's local transport is not shallow).
    pub depth: Option<u32>,
    /// Accept a branch whose new head does not descend from the last applied
    /// commit (a force-push). Off by default.
    pub allow_history_rewrite: bool,
    /// Size bounds for reading the manifest tree.
    pub limits: Limits,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            depth: Some(1),
            allow_history_rewrite: false,
            limits: Limits::default(),
        }
    }
}

/// A libgit2 error with credentials masked out of its message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct GitError {
    /// The (redacted) libgit2 message.
    pub message: String,
    /// libgit2's error code.
    pub code: git2::ErrorCode,
}

impl GitError {
    pub(crate) fn new(e: &git2::Error) -> Self {
        Self {
            message: url::redact_text(e.message()),
            code: e.code(),
        }
    }
}

/// Why the source could not be read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The spec itself is wrong (bad path, bad commit id…).
    #[error("source {url}: {why}")]
    InvalidSpec {
        /// Redacted URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// A credential could not be resolved.
    #[error("source {url}: cannot read credentials")]
    Secret {
        /// Redacted URL.
        url: String,
        /// The resolver's error (names the reference, not the value).
        #[source]
        source: SecretError,
    },
    /// The cache directory could not be prepared.
    #[error("source {url}: cache {}", dir.display())]
    Cache {
        /// Redacted URL.
        url: String,
        /// The cache repository.
        dir: PathBuf,
        /// The I/O or libgit2 error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Fetching from the remote failed (network, auth, missing repository).
    #[error("source {url}: fetching {reference} failed")]
    Fetch {
        /// Redacted URL.
        url: String,
        /// The ref being fetched.
        reference: GitRef,
        /// libgit2's error, redacted.
        #[source]
        source: GitError,
    },
    /// The remote refused the credentials.
    #[error("source {url}: the remote rejected the {method} credentials")]
    AuthRejected {
        /// Redacted URL.
        url: String,
        /// Which kind of credentials.
        method: &'static str,
    },
    /// The SSH server's host key is not in the configured known_hosts file.
    #[error("source {url}: host key of {host} ({key_type}) is not in {}", known_hosts.display())]
    UnknownHostKey {
        /// Redacted URL.
        url: String,
        /// The host as written in the URL (with `[host]:port` for other ports).
        host: String,
        /// The key type the server offered.
        key_type: String,
        /// The known_hosts file consulted.
        known_hosts: PathBuf,
    },
    /// The configured known_hosts file could not be read.
    #[error("source {url}: cannot read known_hosts file {}", known_hosts.display())]
    KnownHosts {
        /// Redacted URL.
        url: String,
        /// The file.
        known_hosts: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The ref does not exist on the remote (or the commit is not in the repository).
    #[error("source {url}: {reference} not found")]
    RefNotFound {
        /// Redacted URL.
        url: String,
        /// The ref.
        reference: GitRef,
    },
    /// A commit id that is not in the local cache (fetch first).
    #[error("source {url}: commit {commit} is not in the fetched repository")]
    CommitMissing {
        /// Redacted URL.
        url: String,
        /// The commit.
        commit: String,
    },
    /// The fleet path does not exist at this commit.
    #[error("source {url}: path `{path}` does not exist at commit {commit}")]
    PathNotFound {
        /// Redacted URL.
        url: String,
        /// The commit.
        commit: String,
        /// The fleet path.
        path: String,
    },
    /// The fleet path is a file, not a directory.
    #[error("source {url}: path `{path}` at commit {commit} is not a directory")]
    NotADirectory {
        /// Redacted URL.
        url: String,
        /// The commit.
        commit: String,
        /// The fleet path.
        path: String,
    },
    /// A symlink in the manifest tree points outside the fleet path.
    #[error(
        "source {url}: symlink `{link}` at commit {commit} points outside `{root}` (to `{target}`)"
    )]
    SymlinkEscape {
        /// Redacted URL.
        url: String,
        /// The commit.
        commit: String,
        /// The symlink, relative to the repository root.
        link: String,
        /// Its target, as stored.
        target: String,
        /// The fleet path.
        root: String,
    },
    /// A manifest file exceeds [`Limits::max_file_bytes`].
    #[error("source {url}: `{path}` at commit {commit} is {size} bytes, over the limit of {limit}")]
    FileTooLarge {
        /// Redacted URL.
        url: String,
        /// The commit.
        commit: String,
        /// The file, relative to the repository root.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The manifest tree exceeds [`Limits::max_total_bytes`] or [`Limits::max_files`].
    #[error("source {url}: manifest tree at commit {commit} is over the limit ({what})")]
    TreeTooLarge {
        /// Redacted URL.
        url: String,
        /// The commit.
        commit: String,
        /// Which limit.
        what: String,
    },
    /// The new head does not descend from the last applied commit.
    #[error(
        "source {url}: history of {reference} was rewritten: last applied commit {last_applied} is not an ancestor of {new} \
         (force-push?); set allowHistoryRewrite to accept it"
    )]
    HistoryRewritten {
        /// Redacted URL.
        url: String,
        /// The ref.
        reference: GitRef,
        /// The commit applied before.
        last_applied: String,
        /// The commit fetched now.
        new: String,
    },
    /// Signature verification is on and the commit carries no signature.
    #[error("commit {commit} is not signed (signature verification is on)")]
    Unsigned {
        /// The commit.
        commit: String,
    },
    /// The commit is signed, but not by an allowed key (or the signature is bad).
    #[error("commit {commit} is signed by {signer}, which is not trusted: {why}")]
    Untrusted {
        /// The commit.
        commit: String,
        /// Who signed it, as far as can be told (key fingerprint, key id, principal).
        signer: String,
        /// Why it is refused.
        why: String,
    },
    /// The signature verifier (ssh-keygen, gpgv) could not be run.
    #[error("commit {commit}: cannot run {tool}")]
    Verifier {
        /// The commit.
        commit: String,
        /// The program.
        tool: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another libgit2 operation on the cached repository failed.
    #[error("source {url}: {op} failed")]
    Git {
        /// Redacted URL.
        url: String,
        /// What was being done.
        op: &'static str,
        /// libgit2's error, redacted.
        #[source]
        source: GitError,
    },
}

/// What [`GitSource::fetch_and_read`] returns: a trusted revision and its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The revision.
    pub revision: Revision,
    /// The manifest files under the spec's path.
    pub files: Vec<SourceFile>,
    /// The accepted signature, when verification is on.
    pub verified: Option<Verified>,
}

/// Fetches fleet repositories into a cache directory.
///
/// All calls block (network and disk): from async code, run them in
/// `tokio::task::spawn_blocking`. Calls for the same URL share one cache
/// repository; serialise them per URL (a poll and a webhook at once).
#[derive(Debug, Clone)]
pub struct GitSource {
    cache_dir: PathBuf,
    options: SourceOptions,
}

/// A fetched repository in the cache, ready to read.
pub struct FleetRepo {
    repo: Repository,
    url: String,
    limits: Limits,
}

impl std::fmt::Debug for FleetRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetRepo")
            .field("url", &self.url)
            .field("path", &self.repo.path())
            .finish()
    }
}

impl GitSource {
    /// A source caching bare repositories under `cache_dir`, with default options.
    pub fn new(cache_dir: impl AsRef<Path>) -> Self {
        Self {
            cache_dir: cache_dir.as_ref().to_path_buf(),
            options: SourceOptions::default(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: SourceOptions) -> Self {
        self.options = options;
        self
    }

    /// The options in use.
    pub fn options(&self) -> &SourceOptions {
        &self.options
    }

    /// The bare cache repository used for a URL: `<cache_dir>/<first 16 bytes
    /// of sha256(normalised URL) in hex>.git`.
    pub fn cache_path(&self, url: &str) -> PathBuf {
        let key = url::cache_key(url);
        self.cache_dir.join(format!("{key}.git"))
    }

    /// Fetches the spec's ref and resolves it to a commit.
    ///
    /// A branch or tag is fetched every time (depth [`SourceOptions::depth`]
    /// where the transport allows); a commit id is fetched only when it is not
    /// already in the cache.
    pub fn fetch(
        &self,
        spec: &SourceSpec,
        resolver: &dyn SecretResolver,
    ) -> Result<Revision, SourceError> {
        let started = Instant::now();
        let repo = self.open_or_init(&spec.url)?;
        let oid = match &spec.reference {
            GitRef::Branch(_) | GitRef::Tag(_) => {
                let local = local_ref(&spec.reference);
                let refspec = format!("+{}:{local}", remote_ref(&spec.reference));
                self.fetch_refspecs(&repo, spec, resolver, &[refspec], self.depth_for(&spec.url))?;
                let reference =
                    repo.repo
                        .find_reference(&local)
                        .map_err(|_| SourceError::RefNotFound {
                            url: repo.url.clone(),
                            reference: spec.reference.clone(),
                        })?;
                let commit = reference
                    .peel_to_commit()
                    .map_err(|e| repo.git("resolving the ref", &e))?;
                commit.id()
            }
            GitRef::Commit(hex) => {
                let oid = parse_commit_id(&repo.url, hex)?;
                self.ensure_commit_oid(&repo, spec, resolver, oid)?;
                oid
            }
        };
        let revision = repo.revision(oid, &spec.reference)?;
        tracing::debug!(
            url = %repo.url,
            reference = %spec.reference,
            commit = %revision.commit,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fetched fleet source"
        );
        Ok(revision)
    }

    /// The whole source stage in one call: fetch the ref, refuse a rewritten
    /// history (when `last_applied` is given and the ref is a branch or tag),
    /// verify the head commit's signature (when `verification` is enabled),
    /// then read the manifest tree.
    pub fn fetch_and_read(
        &self,
        spec: &SourceSpec,
        resolver: &dyn SecretResolver,
        last_applied: Option<&str>,
        verification: &Verification,
    ) -> Result<Fetched, SourceError> {
        let revision = self.fetch(spec, resolver)?;
        if let Some(last) = last_applied
            && !matches!(spec.reference, GitRef::Commit(_))
        {
            self.check_fast_forward(spec, resolver, last, &revision.commit)?;
        }
        let repo = self.open(&spec.url)?;
        let verified = if verification.is_enabled() {
            Some(repo.verify_commit(&revision.commit, verification)?)
        } else {
            None
        };
        let files = repo.read_tree(&revision.commit, &spec.path)?;
        Ok(Fetched {
            revision,
            files,
            verified,
        })
    }

    /// Opens the cached repository of a URL (after a [`GitSource::fetch`]).
    pub fn open(&self, url: &str) -> Result<FleetRepo, SourceError> {
        let dir = self.cache_path(url);
        let repo = Repository::open_bare(&dir).map_err(|e| SourceError::Cache {
            url: redact_url(url),
            dir: dir.clone(),
            source: Box::new(GitError::new(&e)),
        })?;
        Ok(FleetRepo {
            repo,
            url: redact_url(url),
            limits: self.options.limits,
        })
    }

    /// Makes sure a commit (e.g. a pull request's base) is in the cache,
    /// fetching it when it is not.
    pub fn ensure_commit(
        &self,
        spec: &SourceSpec,
        resolver: &dyn SecretResolver,
        commit: &str,
    ) -> Result<(), SourceError> {
        let repo = self.open_or_init(&spec.url)?;
        let oid = parse_commit_id(&repo.url, commit)?;
        self.ensure_commit_oid(&repo, spec, resolver, oid)
    }

    /// Refuses a new head that does not descend from the last applied commit,
    /// unless [`SourceOptions::allow_history_rewrite`] is set.
    ///
    /// With shallow fetches the commits between the two may be missing. The
    /// check first walks the parents recorded in the commits that are in the
    /// cache (enough when the branch moved by one fetch's worth of commits
    /// on top of the last applied one); when that walk runs into a missing
    /// commit it fetches the ref's full history once (unshallow) and decides
    /// on the complete graph. It never concludes "rewritten" from a cut history.
    pub fn check_fast_forward(
        &self,
        spec: &SourceSpec,
        resolver: &dyn SecretResolver,
        last_applied: &str,
        new: &str,
    ) -> Result<(), SourceError> {
        let repo = self.open_or_init(&spec.url)?;
        let last = parse_commit_id(&repo.url, last_applied)?;
        let head = parse_commit_id(&repo.url, new)?;
        let mut decided = history::descends_from_local(&repo.repo, head, last);
        if decided.is_none() {
            tracing::info!(url = %repo.url, reference = %spec.reference, "history between last applied and new head is not in the cache; fetching full history");
            let refspecs = match &spec.reference {
                GitRef::Branch(_) | GitRef::Tag(_) => {
                    vec![format!(
                        "+{}:{}",
                        remote_ref(&spec.reference),
                        local_ref(&spec.reference)
                    )]
                }
                GitRef::Commit(_) => all_refspecs(),
            };
            let depth = if repo.repo.is_shallow() {
                Some(FullHistory::Unshallow)
            } else {
                None
            };
            self.fetch_refspecs(&repo, spec, resolver, &refspecs, depth)?;
            decided = history::descends_from_local(&repo.repo, head, last);
        }
        match decided {
            Some(true) => Ok(()),
            // After a full fetch a commit that is still missing is not in the
            // ref's history: that is a rewrite too.
            Some(false) | None if self.options.allow_history_rewrite => {
                tracing::warn!(url = %repo.url, reference = %spec.reference, last_applied, new, "history rewritten; allowed by allowHistoryRewrite");
                Ok(())
            }
            Some(false) | None => Err(SourceError::HistoryRewritten {
                url: repo.url.clone(),
                reference: spec.reference.clone(),
                last_applied: last_applied.to_string(),
                new: new.to_string(),
            }),
        }
    }

    fn depth_for(&self, url: &str) -> Option<FullHistory> {
        match (url::transport(url), self.options.depth) {
            (Transport::Local, _) | (_, None) => None,
            (_, Some(d)) => Some(FullHistory::Depth(d.clamp(1, i32::MAX as u32) as i32)),
        }
    }

    fn open_or_init(&self, url: &str) -> Result<FleetRepo, SourceError> {
        let dir = self.cache_path(url);
        let redacted = redact_url(url);
        let cache_err = |source: Box<dyn std::error::Error + Send + Sync>| SourceError::Cache {
            url: redacted.clone(),
            dir: dir.clone(),
            source,
        };
        let repo = match Repository::open_bare(&dir) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(&self.cache_dir).map_err(|e| cache_err(Box::new(e)))?;
                Repository::init_bare(&dir).map_err(|e| cache_err(Box::new(GitError::new(&e))))?
            }
        };
        Ok(FleetRepo {
            repo,
            url: redacted,
            limits: self.options.limits,
        })
    }

    fn ensure_commit_oid(
        &self,
        repo: &FleetRepo,
        spec: &SourceSpec,
        resolver: &dyn SecretResolver,
        oid: Oid,
    ) -> Result<(), SourceError> {
        if repo.repo.find_commit(oid).is_ok() {
            return Ok(());
        }
        // Servers that allow it (GitHub, GitLab, uploadpack.allowAnySHA1InWant)
        // serve a commit by id; the others need the refs whose history holds it.
        let by_id = format!("+{oid}:refs/fleetform/commits/{oid}");
        let direct = self.fetch_refspecs(repo, spec, resolver, &[by_id], self.depth_for(&spec.url));
        if direct.is_ok() && repo.repo.find_commit(oid).is_ok() {
            return Ok(());
        }
        let depth = if repo.repo.is_shallow() {
            Some(FullHistory::Unshallow)
        } else {
            None
        };
        self.fetch_refspecs(repo, spec, resolver, &all_refspecs(), depth)?;
        if repo.repo.find_commit(oid).is_ok() {
            let _ = repo.repo.reference(
                &format!("refs/fleetform/commits/{oid}"),
                oid,
                true,
                "pin fetched commit",
            );
            Ok(())
        } else {
            Err(SourceError::RefNotFound {
                url: repo.url.clone(),
                reference: GitRef::Commit(oid.to_string()),
            })
        }
    }

    fn fetch_refspecs(
        &self,
        repo: &FleetRepo,
        spec: &SourceSpec,
        resolver: &dyn SecretResolver,
        refspecs: &[String],
        depth: Option<FullHistory>,
    ) -> Result<(), SourceError> {
        let creds = auth::Credentials::resolve(spec, resolver)?;
        let state = auth::CallbackState::default();
        let callbacks = auth::callbacks(&creds, &state);
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks);
        opts.download_tags(AutotagOption::None);
        opts.update_fetchhead(false);
        match depth {
            Some(FullHistory::Depth(d)) => {
                opts.depth(d);
            }
            Some(FullHistory::Unshallow) => {
                // libgit2's GIT_FETCH_DEPTH_UNSHALLOW.
                opts.depth(i32::MAX);
            }
            None => {}
        }
        let fetch_url = url::fetch_url(&spec.url);
        let mut remote = repo
            .repo
            .remote_anonymous(&fetch_url)
            .map_err(|e| repo.git("creating the remote", &e))?;
        let specs: Vec<&str> = refspecs.iter().map(String::as_str).collect();
        let result = remote.fetch(&specs, Some(&mut opts), None);
        drop(opts);
        if let Some(err) = state.take_error() {
            return Err(err.into_source_error(&repo.url));
        }
        result.map_err(|e| {
            if is_missing_ref(&e) {
                SourceError::RefNotFound {
                    url: repo.url.clone(),
                    reference: spec.reference.clone(),
                }
            } else {
                SourceError::Fetch {
                    url: repo.url.clone(),
                    reference: spec.reference.clone(),
                    source: GitError::new(&e),
                }
            }
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum FullHistory {
    Depth(i32),
    Unshallow,
}

fn is_missing_ref(e: &git2::Error) -> bool {
    let m = e.message();
    e.code() == git2::ErrorCode::NotFound
        || m.contains("couldn't find remote ref")
        || m.contains("no matching remote head")
        || m.contains("not our ref")
}

fn remote_ref(r: &GitRef) -> String {
    match r {
        GitRef::Branch(b) => format!("refs/heads/{b}"),
        GitRef::Tag(t) => format!("refs/tags/{t}"),
        GitRef::Commit(c) => c.clone(),
    }
}

fn local_ref(r: &GitRef) -> String {
    match r {
        GitRef::Branch(b) => format!("refs/fleetform/heads/{b}"),
        GitRef::Tag(t) => format!("refs/fleetform/tags/{t}"),
        GitRef::Commit(c) => format!("refs/fleetform/commits/{c}"),
    }
}

fn all_refspecs() -> Vec<String> {
    vec![
        "+refs/heads/*:refs/fleetform/heads/*".into(),
        "+refs/tags/*:refs/fleetform/tags/*".into(),
    ]
}

fn parse_commit_id(url: &str, hex: &str) -> Result<Oid, SourceError> {
    let ok = hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(SourceError::InvalidSpec {
            url: url.to_string(),
            why: format!("`{hex}` is not a full 40-character commit id"),
        });
    }
    Oid::from_str(hex).map_err(|_| SourceError::InvalidSpec {
        url: url.to_string(),
        why: format!("`{hex}` is not a commit id"),
    })
}

impl FleetRepo {
    /// The redacted URL this repository was fetched from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying libgit2 repository (bare).
    pub fn git2(&self) -> &Repository {
        &self.repo
    }

    /// Replaces the size limits used by [`FleetRepo::read_tree`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The [`Revision`] of a commit in the cache.
    pub fn revision_of(&self, commit: &str, reference: &GitRef) -> Result<Revision, SourceError> {
        let oid = parse_commit_id(&self.url, commit)?;
        self.revision(oid, reference)
    }

    fn revision(&self, oid: Oid, reference: &GitRef) -> Result<Revision, SourceError> {
        let commit = self.find_commit(oid)?;
        let author = commit.author();
        Ok(Revision {
            commit: oid.to_string(),
            reference: reference.clone(),
            summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default())
                .into_owned(),
            author: format!(
                "{} <{}>",
                String::from_utf8_lossy(author.name_bytes()),
                String::from_utf8_lossy(author.email_bytes())
            ),
            time: commit.time().seconds(),
        })
    }

    fn find_commit(&self, oid: Oid) -> Result<git2::Commit<'_>, SourceError> {
        self.repo
            .find_commit(oid)
            .map_err(|_| SourceError::CommitMissing {
                url: self.url.clone(),
                commit: oid.to_string(),
            })
    }

    fn git(&self, op: &'static str, e: &git2::Error) -> SourceError {
        SourceError::Git {
            url: self.url.clone(),
            op,
            source: GitError::new(e),
        }
    }

    /// Reads the `*.yaml` / `*.yml` files under `path` at `commit`, from the
    /// object database (no checkout). Paths in the result are relative to
    /// `path`, sorted. Symlinks pointing outside `path` are refused; symlinks
    /// inside it are followed to the file they name.
    pub fn read_tree(&self, commit: &str, path: &str) -> Result<Vec<SourceFile>, SourceError> {
        let oid = parse_commit_id(&self.url, commit)?;
        tree::read_tree(self, oid, path)
    }

    /// The files under `path` that differ between two commits (both must be
    /// in the cache; see [`GitSource::ensure_commit`]), relative to `path`.
    pub fn diff_paths(
        &self,
        base: &str,
        head: &str,
        path: &str,
    ) -> Result<Vec<ChangedFile>, SourceError> {
        let base = parse_commit_id(&self.url, base)?;
        let head = parse_commit_id(&self.url, head)?;
        tree::diff_paths(self, base, head, path)
    }

    /// Whether `new` descends from (or equals) `last_applied`, from what is in
    /// the cache; `None` when the history between them is not there.
    pub fn descends_from(
        &self,
        new: &str,
        last_applied: &str,
    ) -> Result<Option<bool>, SourceError> {
        let head = parse_commit_id(&self.url, new)?;
        let last = parse_commit_id(&self.url, last_applied)?;
        Ok(history::descends_from_local(&self.repo, head, last))
    }

    /// Verifies the signature of a commit against the allow-lists in
    /// `verification`. An unsigned commit is [`SourceError::Unsigned`]; a
    /// signature by a key not allowed for the committer, or a bad signature,
    /// is [`SourceError::Untrusted`].
    pub fn verify_commit(
        &self,
        commit: &str,
        verification: &Verification,
    ) -> Result<Verified, SourceError> {
        let oid = parse_commit_id(&self.url, commit)?;
        verify::verify_commit(self, oid, verification)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spec_reads_from_yaml_shaped_json() {
        let spec: SourceSpec = serde_json::from_value(serde_json::json!({
            "url": "git@github.com:acme/fleet.git",
            "ref": {"branch": "main"},
            "path": "fleet",
            "auth": {"type": "sshKey", "privateKey": {"file": "/run/secrets/deploy"}, "knownHosts": "/etc/ssh/known_hosts"}
        }))
        .unwrap();
        assert_eq!(spec.reference, GitRef::Branch("main".into()));
        assert!(matches!(
            spec.auth,
            Some(GitAuth::SshKey {
                known_hosts: Some(_),
                passphrase: None,
                ..
            })
        ));
        let token: GitAuth = serde_json::from_value(
            serde_json::json!({"type": "token", "token": {"env": "GH_TOKEN"}}),
        )
        .unwrap();
        assert_eq!(
            token,
            GitAuth::Token {
                token: SecretRef::Env("GH_TOKEN".into())
            }
        );
    }

    #[test]
    fn unknown_auth_fields_are_refused() {
        let r: Result<GitAuth, _> = serde_json::from_value(
            serde_json::json!({"type": "token", "token": {"env": "X"}, "password": "oops"}),
        );
        assert!(r.is_err());
    }

    #[test]
    fn short_commit_ids_are_refused() {
        let err = parse_commit_id("u", "abc123").unwrap_err();
        assert!(
            err.to_string()
                .contains("not a full 40-character commit id"),
            "{err}"
        );
    }

    #[test]
    fn history_rewritten_names_both_commits_and_masks_the_url() {
        let e = SourceError::HistoryRewritten {
            url: redact_url("https://bot:ghp_secret@example.com/acme/fleet.git"),
            reference: GitRef::Branch("main".into()),
            last_applied: "a".repeat(40),
            new: "b".repeat(40),
        };
        let s = e.to_string();
        assert!(
            s.contains(&"a".repeat(40)) && s.contains(&"b".repeat(40)),
            "{s}"
        );
        assert!(!s.contains("ghp_secret"), "{s}");
        assert!(
            s.contains("https://bot:****@example.com/acme/fleet.git"),
            "{s}"
        );
    }
}
