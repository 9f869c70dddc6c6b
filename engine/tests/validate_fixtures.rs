//! Golden runner: every fixtures/invalid/<case>/ is a small fleet with exactly one
//! problem; its rendered diagnostics must equal the insta snapshot fixtures/invalid/<case>.snap.
//! `INSTA_UPDATE=always cargo test -p fleetform-engine --test validate_fixtures` rewrites them
//! (or `cargo insta review`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fleetform_engine::diag::Diagnostic;
use fleetform_engine::load::{self, SourceFile};
use fleetform_engine::validate;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("engine has a parent")
        .to_path_buf()
}

/// Load + validate a directory; the diagnostics and the files they point into.
pub fn check_dir(dir: &Path) -> (Vec<Diagnostic>, Vec<SourceFile>) {
    let files = match load::read_dir(dir) {
        Ok(f) => f,
        Err(d) => return (d, vec![]),
    };
    let (docs, diags) = load::load(&files);
    if !diags.is_empty() {
        return (diags, files);
    }
    match validate::validate(&docs) {
        Ok(_) => (vec![], files),
        Err(d) => (d, files),
    }
}

#[test]
fn every_invalid_fixture_reports_exactly_its_one_problem() {
    let root = repo().join("fixtures/invalid");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures/invalid exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    // Exactly one diagnostic per case, checked for every case before any golden file.
    let mut rendered = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let (diags, files) = check_dir(case);
        let text = validate::render_text(&diags, &files);
        if diags.len() == 1 {
            rendered.push((name, text));
        } else {
            failures.push(format!(
                "{name}: expected exactly one diagnostic, got {}:\n{text}",
                diags.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The golden files sit beside the cases: fixtures/invalid/<case>.snap.
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&root);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        for (name, text) in &rendered {
            insta::assert_snapshot!(name.as_str(), text);
        }
    });
}

/// Load + validate files already read.
fn check_files(files: Vec<SourceFile>) -> (Vec<Diagnostic>, Vec<SourceFile>) {
    let (docs, diags) = load::load(&files);
    if !diags.is_empty() {
        return (diags, files);
    }
    match validate::validate(&docs) {
        Ok(_) => (vec![], files),
        Err(d) => (d, files),
    }
}

/// `examples/sandbox` is a template scripts/sandbox.sh fills with the peers' addresses
/// (`@NAME@`): filled here with addresses of the same form, so it validates as the demo runs it.
fn sandbox_filled(mut files: Vec<SourceFile>) -> Vec<SourceFile> {
    let fills = [
        ("@REGISTRY_URL@", "http://127.0.0.1:5000"),
        ("@REGISTRY_HOST@", "127.0.0.1:5000"),
        ("@REGISTRY_USER@", "fleetform"),
        ("@CHARTS_DIR@", "/tmp/charts"),
        ("@SUSHY_FAKE_URL@", "http://127.0.0.1:8000"),
        ("@SUSHY_LIBVIRT_URL@", "http://127.0.0.1:8001"),
        ("@SUSHY_USERNAME@", "admin"),
    ];
    for f in &mut files {
        let mut text = String::from_utf8_lossy(&f.bytes).into_owned();
        for (from, to) in fills {
            text = text.replace(from, to);
        }
        assert!(
            !text.contains("@\n") && !text.contains(": @"),
            "{}: a placeholder this test does not fill",
            f.path
        );
        f.bytes = text.into_bytes();
    }
    files
}

#[test]
fn every_example_validates() {
    // Every folder of examples/ that holds a fleet (a Fleet document in a YAML file), found
    // rather than listed, so a new example cannot be left out.
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let dir = entry.unwrap().path();
        let has_fleet = dir.is_dir()
            && std::fs::read_dir(&dir).unwrap().any(|f| {
                let p = f.unwrap().path();
                p.extension().is_some_and(|e| e == "yaml")
                    && std::fs::read_to_string(&p).is_ok_and(|t| t.contains("\nkind: Fleet\n"))
            });
        if !has_fleet {
            continue;
        }
        let ex = dir.strip_prefix(repo()).unwrap().display().to_string();
        checked.push(ex.clone());
        let (diags, files) = check_files(sandbox_filled(load::read_dir(&dir).unwrap()));
        assert!(
            diags.is_empty(),
            "{ex}:\n{}",
            validate::render_text(&diags, &files)
        );
    }
    checked.sort();
    assert_eq!(
        checked,
        ["examples/dsx", "examples/sandbox", "examples/small"],
        "the examples that hold a fleet"
    );
}

/// The literal secrets written in a fixture's files: the scalar after a credential key
/// (unless it is a `{file|env|secret: ...}` reference) and any credential-looking token.
fn secrets_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let Ok(text) = std::fs::read_to_string(e.unwrap().path()) else {
            continue;
        };
        for line in text.lines() {
            for key in ["apiKey:", "password:", "kubeconfig:", "token:"] {
                if let Some((_, rest)) = line.split_once(key) {
                    let v = rest.trim().split([',', '}', '#']).next().unwrap_or("");
                    let v = v.trim().trim_matches(['"', '\'']);
                    if v.len() >= 4 && !v.starts_with(['{', '|', '>']) {
                        out.push(v.to_string());
                    }
                }
            }
            for tok in line.split(|c: char| c.is_whitespace() || ",{}[]\"'".contains(c)) {
                let prefixes = ["nvapi-", "ghp_", "github_pat_", "glpat-", "xoxb-", "AKIA"];
                if tok.len() >= 12 && prefixes.iter().any(|p| tok.starts_with(p)) {
                    out.push(tok.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn no_invalid_fixture_prints_a_secret_it_holds() {
    let root = repo().join("fixtures/invalid");
    let mut with_secrets = 0;
    let mut leaks = Vec::new();
    for e in std::fs::read_dir(&root).unwrap() {
        let case = e.unwrap().path();
        if !case.is_dir() {
            continue;
        }
        let secrets = secrets_in(&case);
        if secrets.is_empty() {
            continue;
        }
        with_secrets += 1;
        let (diags, files) = check_dir(&case);
        let text = validate::render_text(&diags, &files);
        let json = serde_json::to_string(&diags).unwrap();
        for s in &secrets {
            if text.contains(s.as_str()) || json.contains(s.as_str()) {
                leaks.push(format!("{}: prints `{s}`:\n{text}", case.display()));
            }
        }
    }
    assert!(
        with_secrets >= 3,
        "only {with_secrets} fixtures hold secrets"
    );
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}
