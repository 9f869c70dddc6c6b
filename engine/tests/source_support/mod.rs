//! Helpers shared by the source tests: real repositories made with the git CLI.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use fleetform_engine::secret::LocalSecrets;
use fleetform_engine::source::{GitRef, SourceSpec};

/// Runs git in `dir` with no user or system config, as alice.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "tag.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A working repository with a fleet under `fleet/`.
pub struct WorkRepo {
    pub dir: tempfile::TempDir,
}

impl WorkRepo {
    /// main: fleet/hosts.yaml, fleet/tenants/acme.yml, fleet/notes.txt, README.md.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        let repo = Self { dir };
        repo.write("fleet/hosts.yaml", "hosts: [r01-n01]\n");
        repo.write("fleet/tenants/acme.yml", "tenant: acme\n");
        repo.write("fleet/notes.txt", "not a manifest\n");
        repo.write("README.md", "# fleet\n");
        repo.commit("initial fleet");
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Stages everything and commits; returns the commit id.
    pub fn commit(&self, msg: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", msg]);
        self.head()
    }

    pub fn head(&self) -> String {
        git(self.path(), &["rev-parse", "HEAD"])
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(self.path(), args)
    }
}

pub fn spec(url: &str, reference: GitRef) -> SourceSpec {
    SourceSpec {
        url: url.to_string(),
        reference,
        path: "fleet".into(),
        auth: None,
    }
}

pub fn branch(b: &str) -> GitRef {
    GitRef::Branch(b.into())
}

pub fn secrets() -> LocalSecrets {
    LocalSecrets::default()
}

/// A name unique in this process and across runs, for repositories in shared peer dirs.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// An ed25519 key pair made with ssh-keygen; returns (private key path, public key line).
pub fn ssh_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(key.with_extension("pub"))
        .unwrap_or_else(|_| std::fs::read_to_string(format!("{}.pub", key.display())).unwrap());
    (key, public.trim().to_string())
}

/// The value of a peer variable, or None after printing the skip line (or
/// panicking when FLEETFORM_REQUIRE_PEERS=1).
pub fn peer_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!(
                    "{var} is not set: run tests/peers/git.sh start and source $FLEETFORM_PEERS_DIR/git.env"
                );
            }
            eprintln!("skipped: git not running (tests/peers/git.sh start)");
            None
        }
    }
}

/// Several peer variables at once; one skip line when any is missing.
pub fn peer_envs<const N: usize>(vars: [&str; N]) -> Option<[String; N]> {
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, var) in out.iter_mut().zip(vars) {
        *slot = peer_env(var)?;
    }
    Some(out)
}
