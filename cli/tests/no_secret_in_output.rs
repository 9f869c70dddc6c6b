//! No secret a fixture holds reaches the output of `validate` or `plan`: every
//! fixtures/invalid/ case is run through both commands (text and JSON) and the
//! output is scanned for the secret values written in the fixture's files.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Fields that hold credentials, wherever they appear.
const SECRET_KEYS: &[&str] = &["apiKey", "password", "kubeconfig", "token"];

/// Prefixes of credentials that are secrets anywhere in a file.
const SECRET_PREFIXES: &[&str] = &["nvapi-", "ghp_", "github_pat_", "glpat-", "xoxb-", "AKIA"];

/// The literal secret values written in a fixture: the scalar after a secret key
/// (when it is not a `{file|env|secret: ...}` reference) and any key-like token.
pub fn secrets_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines() {
            for key in SECRET_KEYS {
                let pat = format!("{key}:");
                if let Some((_, rest)) = line.split_once(&pat) {
                    let v = rest
                        .trim()
                        .split([',', '}', '#'])
                        .next()
                        .unwrap_or("")
                        .trim()
                        .trim_matches(['"', '\'']);
                    if v.len() >= 4
                        && !v.starts_with('{')
                        && !v.starts_with('|')
                        && !v.starts_with('>')
                    {
                        out.push(v.to_string());
                    }
                }
            }
            for tok in line.split(|c: char| c.is_whitespace() || ",{}[]\"'".contains(c)) {
                if SECRET_PREFIXES.iter().any(|p| tok.starts_with(p)) && tok.len() >= 12 {
                    out.push(tok.to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn run(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetform"))
        .current_dir(cwd)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("FLEETFORM_FLEET")
        .env_remove("FLEETFORM_REPO")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn validate_and_plan_never_print_a_secret_of_any_invalid_fixture() {
    let root = repo().join("fixtures/invalid");
    let work = tempfile::tempdir().unwrap();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut with_secrets = 0;
    let mut leaks = Vec::new();
    for case in &cases {
        let secrets = secrets_in(case);
        if secrets.is_empty() {
            continue;
        }
        with_secrets += 1;
        let dir = case.to_str().unwrap();
        for args in [
            vec!["validate", dir],
            vec!["validate", dir, "--format", "json"],
            vec!["plan", "--fleet", dir],
            vec!["plan", "--fleet", dir, "--format", "json"],
            vec!["graph", "--fleet", dir],
        ] {
            let out = run(work.path(), &args);
            for s in &secrets {
                if out.contains(s.as_str()) {
                    leaks.push(format!(
                        "`fleetform {}` prints `{s}`:\n{out}",
                        args.join(" ")
                    ));
                }
            }
        }
    }
    // The scan is not vacuous: the inline-secret and secret-literal cases hold secrets.
    assert!(
        with_secrets >= 3,
        "only {with_secrets} fixtures hold secrets"
    );
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

#[test]
fn the_scan_finds_the_secrets_the_fixtures_hold() {
    let root = repo().join("fixtures/invalid");
    assert!(secrets_in(&root.join("inline-secret")).contains(&"hunter2".to_string()));
    assert!(
        secrets_in(&root.join("inline-secret-ngc-key"))
            .iter()
            .any(|s| s.starts_with("nvapi-"))
    );
}
