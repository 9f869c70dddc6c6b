//! The git source over the network transports, against the peers of
//! tests/peers/git.sh: `git daemon` (git://, shallow fetches) and OpenSSH
//! (ssh://, key auth and host-key checks). Skipped when the peers are not
//! running, failed when FLEETFORM_REQUIRE_PEERS=1.
#![allow(clippy::unwrap_used)]

mod source_support;

use std::path::PathBuf;
use std::time::Instant;

use fleetform_engine::secret::SecretRef;
use fleetform_engine::source::{GitAuth, GitRef, GitSource, SourceError, SourceSpec};
use source_support::{WorkRepo, branch, git, secrets, spec, ssh_key, unique};

/// A work repo pushed to a new bare repository in the peers' base directory.
struct Served {
    work: WorkRepo,
    name: String,
    bare: PathBuf,
}

impl Served {
    fn new(base: &str) -> Self {
        let work = WorkRepo::new();
        let name = format!("{}.git", unique("fleet"));
        let bare = PathBuf::from(base).join(&name);
        git(std::path::Path::new(base), &["init", "-q", "--bare", &name]);
        let s = Self { work, name, bare };
        s.push(false);
        s
    }

    fn push(&self, force: bool) {
        let bare = self.bare.to_str().unwrap();
        let mut args = vec!["push", "-q", bare, "HEAD:refs/heads/main"];
        if force {
            args.insert(2, "--force");
        }
        self.work.git(&args);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bare);
    }
}

fn ssh_spec(url: String, key_var: &str) -> Option<SourceSpec> {
    let key = source_support::peer_env(key_var)?;
    let known_hosts = source_support::peer_env("FLEETFORM_GIT_SSH_KNOWN_HOSTS")?;
    Some(SourceSpec {
        auth: Some(GitAuth::SshKey {
            private_key: SecretRef::File(key.into()),
            known_hosts: Some(known_hosts.into()),
            passphrase: None,
        }),
        ..spec(&url, branch("main"))
    })
}

#[test]
fn git_daemon_fetch_is_shallow_and_the_tree_is_read() {
    let Some([base, daemon]) =
        source_support::peer_envs(["FLEETFORM_GIT_BASE", "FLEETFORM_GIT_DAEMON_URL"])
    else {
        return;
    };
    let served = Served::new(&base);
    served.work.write("fleet/hosts.yaml", "hosts: [b]\n");
    let head = served.work.commit("second");
    served.push(false);
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = format!("{daemon}/{}", served.name);
    let started = Instant::now();
    let rev = source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    eprintln!(
        "measure: git:// depth-1 fetch (cold cache) took {:?}",
        started.elapsed()
    );
    assert_eq!(rev.commit, head);
    let repo = source.open(&url).unwrap();
    assert!(
        repo.git2().is_shallow(),
        "depth 1 over git:// should leave a shallow cache"
    );
    let files = repo.read_tree(&rev.commit, "fleet").unwrap();
    assert_eq!(
        files.iter().find(|f| f.path == "hosts.yaml").unwrap().bytes,
        b"hosts: [b]\n"
    );
    let started = Instant::now();
    source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    eprintln!(
        "measure: git:// fetch with nothing new took {:?}",
        started.elapsed()
    );
}

#[test]
fn git_daemon_fast_forward_is_proven_by_unshallowing_and_a_rewrite_is_caught() {
    let Some([base, daemon]) =
        source_support::peer_envs(["FLEETFORM_GIT_BASE", "FLEETFORM_GIT_DAEMON_URL"])
    else {
        return;
    };
    let served = Served::new(&base);
    let c1 = served.work.head();
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = format!("{daemon}/{}", served.name);
    let s = spec(&url, branch("main"));
    assert_eq!(source.fetch(&s, &secrets()).unwrap().commit, c1);

    // Two commits on top: the depth-1 fetch has c3 but not c2, so the check
    // must fetch more history before it can say "fast-forward".
    served.work.write("fleet/hosts.yaml", "hosts: [c2]\n");
    served.work.commit("c2");
    served.work.write("fleet/hosts.yaml", "hosts: [c3]\n");
    let c3 = served.work.commit("c3");
    served.push(false);
    assert_eq!(source.fetch(&s, &secrets()).unwrap().commit, c3);
    let repo = source.open(&url).unwrap();
    assert_eq!(
        repo.descends_from(&c3, &c1).unwrap(),
        None,
        "the shallow cache cannot tell yet"
    );
    let started = Instant::now();
    source.check_fast_forward(&s, &secrets(), &c1, &c3).unwrap();
    eprintln!(
        "measure: fast-forward check with unshallow over git:// took {:?}",
        started.elapsed()
    );
    assert!(
        !source.open(&url).unwrap().git2().is_shallow(),
        "the check fetched the full history"
    );
    assert_eq!(
        source.open(&url).unwrap().descends_from(&c3, &c1).unwrap(),
        Some(true)
    );

    // Force-push a rewritten main.
    served.work.git(&["reset", "-q", "--hard", &c1]);
    served
        .work
        .write("fleet/hosts.yaml", "hosts: [rewritten]\n");
    let c4 = served.work.commit("c4 rewritten");
    served.push(true);
    assert_eq!(source.fetch(&s, &secrets()).unwrap().commit, c4);
    let err = source
        .check_fast_forward(&s, &secrets(), &c3, &c4)
        .unwrap_err();
    assert!(
        matches!(err, SourceError::HistoryRewritten { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&c3) && err.to_string().contains(&c4),
        "{err}"
    );
}

#[test]
fn an_older_commit_is_fetched_by_id_even_when_the_daemon_refuses_ids() {
    let Some([base, daemon]) =
        source_support::peer_envs(["FLEETFORM_GIT_BASE", "FLEETFORM_GIT_DAEMON_URL"])
    else {
        return;
    };
    let served = Served::new(&base);
    let old = served.work.head();
    served.work.write("fleet/hosts.yaml", "hosts: [newer]\n");
    served.work.commit("newer");
    served.push(false);
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = format!("{daemon}/{}", served.name);
    // git daemon does not serve unadvertised ids (uploadpack.allowReachableSHA1InWant is off),
    // so this falls back to fetching the branches and tags with their history.
    let rev = source
        .fetch(&spec(&url, GitRef::Commit(old.clone())), &secrets())
        .unwrap();
    assert_eq!(rev.commit, old);
    assert_eq!(rev.summary, "initial fleet");
    let files = source.open(&url).unwrap().read_tree(&old, "fleet").unwrap();
    assert_eq!(
        files.iter().find(|f| f.path == "hosts.yaml").unwrap().bytes,
        b"hosts: [r01-n01]\n"
    );
}

#[test]
fn ssh_fetch_authenticates_with_a_key_and_checks_the_host_key() {
    let Some([base, ssh]) =
        source_support::peer_envs(["FLEETFORM_GIT_BASE", "FLEETFORM_GIT_SSH_URL"])
    else {
        return;
    };
    let served = Served::new(&base);
    let url = format!("{ssh}{}", served.bare.display());
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    for key_var in ["FLEETFORM_GIT_SSH_KEY", "FLEETFORM_GIT_SSH_KEY_PEM"] {
        let Some(s) = ssh_spec(url.clone(), key_var) else {
            return;
        };
        let started = Instant::now();
        let rev = source.fetch(&s, &secrets()).unwrap();
        eprintln!(
            "measure: ssh:// depth-1 fetch ({key_var}) took {:?}",
            started.elapsed()
        );
        assert_eq!(rev.commit, served.work.head());
        let files = source
            .open(&url)
            .unwrap()
            .read_tree(&rev.commit, "fleet")
            .unwrap();
        assert_eq!(files.len(), 2);
    }
}

#[test]
fn ssh_fetch_works_with_a_passphrase_protected_key() {
    let Some([base, ssh, pass_file]) = source_support::peer_envs([
        "FLEETFORM_GIT_BASE",
        "FLEETFORM_GIT_SSH_URL",
        "FLEETFORM_GIT_SSH_KEY_PASSPHRASE_FILE",
    ]) else {
        return;
    };
    let served = Served::new(&base);
    let url = format!("{ssh}{}", served.bare.display());
    let Some(mut s) = ssh_spec(url, "FLEETFORM_GIT_SSH_KEY_PASS") else {
        return;
    };
    if let Some(GitAuth::SshKey { passphrase, .. }) = &mut s.auth {
        *passphrase = Some(SecretRef::File(pass_file.into()));
    }
    let cache = tempfile::tempdir().unwrap();
    let rev = GitSource::new(cache.path()).fetch(&s, &secrets()).unwrap();
    assert_eq!(rev.commit, served.work.head());
}

#[test]
fn ssh_host_key_not_in_known_hosts_is_refused_naming_the_host() {
    let Some([base, ssh]) =
        source_support::peer_envs(["FLEETFORM_GIT_BASE", "FLEETFORM_GIT_SSH_URL"])
    else {
        return;
    };
    let served = Served::new(&base);
    let url = format!("{ssh}{}", served.bare.display());
    let Some(mut s) = ssh_spec(url, "FLEETFORM_GIT_SSH_KEY") else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let (_, other_pub) = ssh_key(keys.path(), "impostor");
    let port = ssh.rsplit(':').next().unwrap();
    let known = keys.path().join("known_hosts");
    let key_fields: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{port} {}\n", key_fields.join(" ")),
    )
    .unwrap();
    if let Some(GitAuth::SshKey { known_hosts, .. }) = &mut s.auth {
        *known_hosts = Some(known.clone());
    }
    let cache = tempfile::tempdir().unwrap();
    let err = GitSource::new(cache.path())
        .fetch(&s, &secrets())
        .unwrap_err();
    assert!(matches!(err, SourceError::UnknownHostKey { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("[127.0.0.1]:{port}")),
        "{err}"
    );

    // A known_hosts file that cannot be read is an error too, never "accept any key".
    if let Some(GitAuth::SshKey { known_hosts, .. }) = &mut s.auth {
        *known_hosts = Some(keys.path().join("missing_known_hosts"));
    }
    let err = GitSource::new(cache.path())
        .fetch(&s, &secrets())
        .unwrap_err();
    assert!(matches!(err, SourceError::KnownHosts { .. }), "{err:?}");
}

#[test]
fn ssh_key_not_authorized_is_rejected_without_printing_the_key() {
    let Some([base, ssh]) =
        source_support::peer_envs(["FLEETFORM_GIT_BASE", "FLEETFORM_GIT_SSH_URL"])
    else {
        return;
    };
    let served = Served::new(&base);
    let url = format!("{ssh}{}", served.bare.display());
    let Some(mut s) = ssh_spec(url, "FLEETFORM_GIT_SSH_KEY") else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let (stranger, _) = ssh_key(keys.path(), "stranger");
    let key_text = std::fs::read_to_string(&stranger).unwrap();
    if let Some(GitAuth::SshKey { private_key, .. }) = &mut s.auth {
        *private_key = SecretRef::File(stranger);
    }
    let cache = tempfile::tempdir().unwrap();
    let err = GitSource::new(cache.path())
        .fetch(&s, &secrets())
        .unwrap_err();
    let rendered = format!("{err} {err:?}");
    eprintln!("rejected key: {err}");
    assert!(
        matches!(
            err,
            SourceError::AuthRejected { .. } | SourceError::Fetch { .. }
        ),
        "{rendered}"
    );
    let body = key_text.lines().nth(1).unwrap();
    assert!(!rendered.contains(body), "the key leaked into the error");
}

#[test]
fn http_fetch_sends_a_token_or_basic_credentials_and_a_wrong_one_is_rejected_once() {
    let Some([base, http, password_file]) = source_support::peer_envs([
        "FLEETFORM_GIT_BASE",
        "FLEETFORM_GIT_HTTP_URL",
        "FLEETFORM_GIT_HTTP_PASSWORD_FILE",
    ]) else {
        return;
    };
    let served = Served::new(&base);
    let url = format!("{http}/{}", served.name);
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());

    let token = SourceSpec {
        auth: Some(GitAuth::Token {
            token: SecretRef::File(password_file.clone().into()),
        }),
        ..spec(&url, branch("main"))
    };
    let started = Instant::now();
    let rev = source.fetch(&token, &secrets()).unwrap();
    eprintln!(
        "measure: http:// depth-1 fetch with a token took {:?}",
        started.elapsed()
    );
    assert_eq!(rev.commit, served.work.head());
    assert!(
        source.open(&url).unwrap().git2().is_shallow(),
        "smart HTTP fetches are shallow too"
    );

    let basic = SourceSpec {
        auth: Some(GitAuth::Basic {
            username: "fleetform".into(),
            password: SecretRef::File(password_file.into()),
        }),
        ..spec(&url, branch("main"))
    };
    source.fetch(&basic, &secrets()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wrong"), "not-the-password-canary").unwrap();
    let wrong = SourceSpec {
        auth: Some(GitAuth::Token {
            token: SecretRef::File(dir.path().join("wrong")),
        }),
        ..spec(&url, branch("main"))
    };
    let err = GitSource::new(cache.path())
        .fetch(&wrong, &secrets())
        .unwrap_err();
    assert!(matches!(err, SourceError::AuthRejected { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("canary"), "{err:?}");

    let none = spec(&url, branch("main"));
    let err = GitSource::new(cache.path())
        .fetch(&none, &secrets())
        .unwrap_err();
    assert!(err.to_string().contains(&url), "{err}");
}
