//! The git source against real repositories on the local filesystem (local
//! path and file:// transports): refs, tree reading, symlinks, limits, diffs,
//! force-push detection and commit signatures.
#![allow(clippy::unwrap_used)]

mod source_support;

use std::process::Command;

use fleetform_engine::source::{
    ChangeKind, ChangedFile, GitRef, GitSource, Limits, SignatureKind, SourceError, SourceOptions,
    Verification,
};
use source_support::{WorkRepo, branch, secrets, spec, ssh_key};

fn file_url(repo: &WorkRepo) -> String {
    format!("file://{}", repo.path().display())
}

#[test]
fn local_path_branch_resolves_to_the_branch_head() {
    let work = WorkRepo::new();
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = work.path().to_str().unwrap();
    let rev = source
        .fetch(&spec(url, branch("main")), &secrets())
        .unwrap();
    assert_eq!(rev.commit, work.head());
    assert_eq!(rev.summary, "initial fleet");
    assert_eq!(rev.author, "Alice <alice@example.com>");
    assert_eq!(rev.reference, branch("main"));
    assert!(rev.time > 1_600_000_000);
    // One bare repository per URL, named by a hash of the URL.
    let cached = source.cache_path(url);
    assert!(cached.starts_with(cache.path()));
    assert!(source.open(url).unwrap().git2().is_bare());
}

#[test]
fn file_url_resolves_tags_and_commits() {
    let work = WorkRepo::new();
    let first = work.head();
    work.git(&["tag", "-a", "v1", "-m", "release v1"]);
    work.write("fleet/hosts.yaml", "hosts: [r01-n01, r01-n02]\n");
    let second = work.commit("add r01-n02");
    work.git(&["tag", "light"]);
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);

    let annotated = source
        .fetch(&spec(&url, GitRef::Tag("v1".into())), &secrets())
        .unwrap();
    assert_eq!(
        annotated.commit, first,
        "an annotated tag peels to its commit"
    );
    let light = source
        .fetch(&spec(&url, GitRef::Tag("light".into())), &secrets())
        .unwrap();
    assert_eq!(light.commit, second);
    let by_id = source
        .fetch(&spec(&url, GitRef::Commit(first.clone())), &secrets())
        .unwrap();
    assert_eq!(by_id.commit, first);
    assert_eq!(by_id.summary, "initial fleet");
}

#[test]
fn a_commit_not_yet_in_the_cache_is_fetched_by_id() {
    let work = WorkRepo::new();
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);
    source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    work.git(&["checkout", "-q", "-b", "feature"]);
    work.write("fleet/new.yaml", "x: 1\n");
    let feature = work.commit("feature work");
    let rev = source
        .fetch(&spec(&url, GitRef::Commit(feature.clone())), &secrets())
        .unwrap();
    assert_eq!(rev.commit, feature);
}

#[test]
fn a_missing_branch_is_ref_not_found_naming_the_branch() {
    let work = WorkRepo::new();
    let cache = tempfile::tempdir().unwrap();
    let err = GitSource::new(cache.path())
        .fetch(
            &spec(&file_url(&work), branch("no-such-branch")),
            &secrets(),
        )
        .unwrap_err();
    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains("branch no-such-branch not found"),
        "{err}"
    );
}

#[test]
fn read_tree_returns_the_yaml_files_under_the_fleet_path_without_a_checkout() {
    let work = WorkRepo::new();
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);
    let rev = source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    let repo = source.open(&url).unwrap();
    let files = repo.read_tree(&rev.commit, "fleet").unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["hosts.yaml", "tenants/acme.yml"]);
    assert_eq!(files[0].bytes, b"hosts: [r01-n01]\n");
    // The whole repository when the path is empty; still only manifests.
    let all = repo.read_tree(&rev.commit, "").unwrap();
    assert_eq!(
        all.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["fleet/hosts.yaml", "fleet/tenants/acme.yml"]
    );
    // Nothing was checked out: the cache holds no copy of the files.
    let mut stack = vec![cache.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            assert_ne!(
                e.file_name(),
                "hosts.yaml",
                "found a checked-out file at {}",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn read_tree_names_a_missing_fleet_path_and_refuses_climbing_out() {
    let work = WorkRepo::new();
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);
    let rev = source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    let repo = source.open(&url).unwrap();
    let err = repo.read_tree(&rev.commit, "clusters").unwrap_err();
    assert!(matches!(err, SourceError::PathNotFound { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("path `clusters` does not exist at commit"),
        "{err}"
    );
    let err = repo.read_tree(&rev.commit, "README.md").unwrap_err();
    assert!(matches!(err, SourceError::NotADirectory { .. }), "{err:?}");
    let err = repo.read_tree(&rev.commit, "fleet/../..").unwrap_err();
    assert!(matches!(err, SourceError::InvalidSpec { .. }), "{err:?}");
}

#[test]
fn a_symlink_pointing_outside_the_fleet_path_is_refused_and_named() {
    let work = WorkRepo::new();
    work.write("secrets.yaml", "token: do-not-read\n");
    std::os::unix::fs::symlink("../secrets.yaml", work.path().join("fleet/escape.yaml")).unwrap();
    let commit = work.commit("sneaky link");
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);
    source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    let err = source
        .open(&url)
        .unwrap()
        .read_tree(&commit, "fleet")
        .unwrap_err();
    assert!(matches!(err, SourceError::SymlinkEscape { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("symlink `fleet/escape.yaml`") && msg.contains("`../secrets.yaml`"),
        "{msg}"
    );
    assert!(!msg.contains("do-not-read"), "{msg}");

    // Absolute targets are refused too, whatever the link is called.
    std::fs::remove_file(work.path().join("fleet/escape.yaml")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", work.path().join("fleet/passwd")).unwrap();
    let commit = work.commit("absolute link");
    source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    let err = source
        .open(&url)
        .unwrap()
        .read_tree(&commit, "fleet")
        .unwrap_err();
    assert!(err.to_string().contains("symlink `fleet/passwd`"), "{err}");
}

#[test]
fn a_symlink_inside_the_fleet_path_is_read_as_the_file_it_names() {
    let work = WorkRepo::new();
    std::os::unix::fs::symlink("tenants/acme.yml", work.path().join("fleet/acme-link.yaml"))
        .unwrap();
    let commit = work.commit("link inside");
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);
    source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    let files = source
        .open(&url)
        .unwrap()
        .read_tree(&commit, "fleet")
        .unwrap();
    let link = files.iter().find(|f| f.path == "acme-link.yaml").unwrap();
    assert_eq!(link.bytes, b"tenant: acme\n");
}

#[test]
fn a_manifest_over_the_size_limit_is_refused_with_its_size() {
    let work = WorkRepo::new();
    work.write("fleet/huge.yaml", &"x: 1\n".repeat(1000));
    let commit = work.commit("huge file");
    let cache = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_file_bytes: 1024,
        ..Limits::default()
    };
    let source = GitSource::new(cache.path()).with_options(SourceOptions {
        limits,
        ..SourceOptions::default()
    });
    let url = file_url(&work);
    source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    let err = source
        .open(&url)
        .unwrap()
        .read_tree(&commit, "fleet")
        .unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::FileTooLarge {
                size: 5000,
                limit: 1024,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("`fleet/huge.yaml`"), "{err}");

    let few = Limits {
        max_files: 1,
        ..Limits::default()
    };
    let err = source
        .open(&url)
        .unwrap()
        .with_limits(few)
        .read_tree(&commit, "fleet")
        .unwrap_err();
    assert!(matches!(err, SourceError::TreeTooLarge { .. }), "{err:?}");
}

#[test]
fn diff_paths_lists_what_a_pull_request_changes_in_the_fleet() {
    let work = WorkRepo::new();
    let base = work.head();
    work.git(&["checkout", "-q", "-b", "pr"]);
    work.write("fleet/hosts.yaml", "hosts: [r01-n01, r02-n01]\n");
    work.write("fleet/tenants/globex.yaml", "tenant: globex\n");
    std::fs::remove_file(work.path().join("fleet/notes.txt")).unwrap();
    work.write("README.md", "# fleet (outside the fleet path)\n");
    let head = work.commit("PR: add r02-n01 and globex");
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);
    let s = spec(&url, branch("pr"));
    source.fetch(&s, &secrets()).unwrap();
    source.ensure_commit(&s, &secrets(), &base).unwrap();
    let changed = source
        .open(&url)
        .unwrap()
        .diff_paths(&base, &head, "fleet")
        .unwrap();
    assert_eq!(
        changed,
        vec![
            ChangedFile {
                path: "hosts.yaml".into(),
                change: ChangeKind::Modified
            },
            ChangedFile {
                path: "notes.txt".into(),
                change: ChangeKind::Deleted
            },
            ChangedFile {
                path: "tenants/globex.yaml".into(),
                change: ChangeKind::Added
            },
        ]
    );
}

#[test]
fn a_force_push_is_detected_and_allowed_only_by_the_flag() {
    let work = WorkRepo::new();
    let c1 = work.head();
    work.write("fleet/hosts.yaml", "hosts: [a]\n");
    let c2 = work.commit("c2");
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);
    let s = spec(&url, branch("main"));
    assert_eq!(source.fetch(&s, &secrets()).unwrap().commit, c2);

    // A fast-forward passes.
    work.write("fleet/hosts.yaml", "hosts: [a, b]\n");
    let c3 = work.commit("c3");
    let new = source.fetch(&s, &secrets()).unwrap().commit;
    assert_eq!(new, c3);
    source.check_fast_forward(&s, &secrets(), &c2, &c3).unwrap();

    // Rewrite main: c3 (last applied) is no longer in its history.
    work.git(&["reset", "-q", "--hard", &c1]);
    work.write("fleet/hosts.yaml", "hosts: [rewritten]\n");
    let c4 = work.commit("c4 rewritten");
    assert_eq!(source.fetch(&s, &secrets()).unwrap().commit, c4);
    let err = source
        .check_fast_forward(&s, &secrets(), &c3, &c4)
        .unwrap_err();
    assert!(
        matches!(err, SourceError::HistoryRewritten { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&c3) && msg.contains(&c4) && msg.contains("branch main"),
        "{msg}"
    );

    let allowing = GitSource::new(cache.path()).with_options(SourceOptions {
        allow_history_rewrite: true,
        ..SourceOptions::default()
    });
    allowing
        .check_fast_forward(&s, &secrets(), &c3, &c4)
        .unwrap();
}

// --- signatures -----------------------------------------------------------

/// Commits signed with an SSH key, as `git -c gpg.format=ssh commit -S` does.
fn signed_commit(work: &WorkRepo, key: &std::path::Path, msg: &str) -> String {
    work.write("fleet/hosts.yaml", &format!("# {msg}\nhosts: [a]\n"));
    work.git(&["add", "-A"]);
    let key = key.to_str().unwrap();
    work.git(&[
        "-c",
        "gpg.format=ssh",
        "-c",
        &format!("user.signingkey={key}"),
        "commit",
        "-q",
        "-S",
        "-m",
        msg,
    ]);
    work.head()
}

#[test]
fn commit_signatures_are_checked_against_the_allowed_signers() {
    let keys = tempfile::tempdir().unwrap();
    let (alice_key, alice_pub) = ssh_key(keys.path(), "alice");
    let (mallory_key, _) = ssh_key(keys.path(), "mallory");
    let (bob_key, bob_pub) = ssh_key(keys.path(), "bob");
    let allowed = keys.path().join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("alice@example.com {alice_pub}\nbob@example.com {bob_pub}\n"),
    )
    .unwrap();
    let verification = Verification {
        allowed_signers: Some(allowed),
        gpg_keyring: None,
    };
    assert!(verification.is_enabled());

    let work = WorkRepo::new();
    let unsigned = work.head();
    let by_alice = signed_commit(&work, &alice_key, "signed by alice");
    let by_mallory = signed_commit(&work, &mallory_key, "signed by mallory");
    // Bob's key is allowed, but only for bob@example.com; the committer is alice.
    let by_bob = signed_commit(&work, &bob_key, "signed by bob as alice");

    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);
    source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    let repo = source.open(&url).unwrap();

    let ok = repo.verify_commit(&by_alice, &verification).unwrap();
    assert_eq!(ok.kind, SignatureKind::Ssh);
    assert_eq!(ok.signer, "alice@example.com");
    assert!(ok.key.starts_with("SHA256:"), "{ok:?}");

    let err = repo.verify_commit(&unsigned, &verification).unwrap_err();
    assert!(matches!(err, SourceError::Unsigned { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("commit {unsigned} is not signed (signature verification is on)")
    );

    let err = repo.verify_commit(&by_mallory, &verification).unwrap_err();
    let SourceError::Untrusted { signer, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(signer.starts_with("SHA256:"), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&by_mallory) && msg.contains("is not in"),
        "{msg}"
    );

    let err = repo.verify_commit(&by_bob, &verification).unwrap_err();
    assert!(matches!(err, SourceError::Untrusted { .. }), "{err:?}");
    assert!(
        err.to_string().contains("allowed for bob@example.com"),
        "{err}"
    );

    // A trust root of the other kind does not accept SSH signatures.
    let pgp_only = Verification {
        allowed_signers: None,
        gpg_keyring: Some(keys.path().join("none.gpg")),
    };
    let err = repo.verify_commit(&by_alice, &pgp_only).unwrap_err();
    assert!(err.to_string().contains("no allowedSigners file"), "{err}");
}

#[test]
fn openpgp_signatures_are_checked_against_the_keyring() {
    let home = tempfile::Builder::new()
        .prefix("ffgpg")
        .tempdir_in("/tmp")
        .unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(home.path())
            .args([
                "--batch",
                "--no-tty",
                "--passphrase",
                "",
                "--pinentry-mode",
                "loopback",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    gpg(&[
        "--quick-gen-key",
        "Alice <alice@example.com>",
        "ed25519",
        "sign",
        "never",
    ]);
    let keyring = home.path().join("trusted.gpg");
    std::fs::write(&keyring, gpg(&["--export", "alice@example.com"])).unwrap();
    let empty_keyring = home.path().join("empty.gpg");
    std::fs::write(&empty_keyring, b"").unwrap();

    let work = WorkRepo::new();
    work.write("fleet/hosts.yaml", "hosts: [pgp]\n");
    work.git(&["add", "-A"]);
    let program = home.path().join("gpg-wrapper");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\nexec gpg --homedir {} \"$@\"\n",
            home.path().display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&program)
        .status()
        .unwrap();
    work.git(&[
        "-c",
        &format!("gpg.program={}", program.display()),
        "-c",
        "user.signingkey=alice@example.com",
        "commit",
        "-q",
        "-S",
        "-m",
        "pgp signed",
    ]);
    let commit = work.head();
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(home.path())
        .args(["--kill", "gpg-agent"])
        .status();

    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);
    source
        .fetch(&spec(&url, branch("main")), &secrets())
        .unwrap();
    let repo = source.open(&url).unwrap();
    let ok = repo
        .verify_commit(
            &commit,
            &Verification {
                allowed_signers: None,
                gpg_keyring: Some(keyring),
            },
        )
        .unwrap();
    assert_eq!(ok.kind, SignatureKind::OpenPgp);
    assert!(ok.signer.contains("alice@example.com"), "{ok:?}");
    let err = repo
        .verify_commit(
            &commit,
            &Verification {
                allowed_signers: None,
                gpg_keyring: Some(empty_keyring),
            },
        )
        .unwrap_err();
    assert!(matches!(err, SourceError::Untrusted { .. }), "{err:?}");
    assert!(err.to_string().contains("OpenPGP key"), "{err}");
}

#[test]
fn a_failed_https_fetch_names_the_url_with_the_password_masked() {
    // Nothing listens on port 1: the fetch fails at connect, and libgit2's message quotes the URL.
    let cache = tempfile::tempdir().unwrap();
    let url = "https://bot:hunter2-secret@127.0.0.1:1/acme/fleet.git";
    let err = GitSource::new(cache.path())
        .fetch(&spec(url, branch("main")), &secrets())
        .unwrap_err();
    let mut rendered = format!("{err} | {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        rendered.push_str(&format!(" | {s}"));
        source = s.source();
    }
    assert!(matches!(err, SourceError::Fetch { .. }), "{rendered}");
    assert!(
        rendered.contains("https://bot:****@127.0.0.1:1/acme/fleet.git"),
        "{rendered}"
    );
    assert!(!rendered.contains("hunter2"), "{rendered}");
    // The cache directory is named by a hash, never by the URL.
    for e in std::fs::read_dir(cache.path()).unwrap() {
        assert!(!e.unwrap().file_name().to_string_lossy().contains("hunter2"));
    }
}

#[test]
fn fetch_and_read_refuses_rewrites_and_unsigned_heads_before_reading() {
    let keys = tempfile::tempdir().unwrap();
    let (alice_key, alice_pub) = ssh_key(keys.path(), "alice");
    let allowed = keys.path().join("allowed_signers");
    std::fs::write(&allowed, format!("alice@example.com {alice_pub}\n")).unwrap();
    let verification = Verification {
        allowed_signers: Some(allowed),
        gpg_keyring: None,
    };

    let work = WorkRepo::new();
    let c1 = work.head();
    let cache = tempfile::tempdir().unwrap();
    let source = GitSource::new(cache.path());
    let url = file_url(&work);
    let s = spec(&url, branch("main"));

    // Verification off: the manifest comes back.
    let got = source
        .fetch_and_read(&s, &secrets(), None, &Verification::default())
        .unwrap();
    assert_eq!(got.revision.commit, c1);
    assert_eq!(got.files.len(), 2);
    assert!(got.verified.is_none());
    // On: the unsigned head is refused.
    let err = source
        .fetch_and_read(&s, &secrets(), None, &verification)
        .unwrap_err();
    assert!(matches!(err, SourceError::Unsigned { .. }), "{err:?}");
    // A signed fast-forward passes.
    let c2 = signed_commit(&work, &alice_key, "signed");
    let got = source
        .fetch_and_read(&s, &secrets(), Some(&c1), &verification)
        .unwrap();
    assert_eq!(got.revision.commit, c2);
    assert_eq!(got.verified.unwrap().signer, "alice@example.com");
    // A signed but rewritten head is refused for the rewrite.
    work.git(&["reset", "-q", "--hard", &c1]);
    signed_commit(&work, &alice_key, "signed, rewritten");
    let err = source
        .fetch_and_read(&s, &secrets(), Some(&c2), &verification)
        .unwrap_err();
    assert!(
        matches!(err, SourceError::HistoryRewritten { .. }),
        "{err:?}"
    );
}
