//! Golden runner: every fixtures/invalid/<case>/ is a small fleet with exactly one
//! problem; its rendered diagnostics must equal fixtures/invalid/<case>.expected.
//! `UPDATE_EXPECT=1 cargo test -p fleetform-engine --test validate_fixtures` rewrites them.
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
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures/invalid exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let (diags, files) = check_dir(case);
        if diags.len() != 1 {
            failures.push(format!(
                "{name}: expected exactly one diagnostic, got {}:\n{}",
                diags.len(),
                validate::render_text(&diags, &files)
            ));
            continue;
        }
        let text = validate::render_text(&diags, &files);
        let expected_path = root.join(format!("{name}.expected"));
        if update {
            std::fs::write(&expected_path, &text).expect("write expected");
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(exp) if exp == text => {}
            Ok(exp) => failures.push(format!(
                "{name}: output differs\n--- expected\n{exp}--- actual\n{text}"
            )),
            Err(_) => failures.push(format!(
                "{name}: no {name}.expected (run with UPDATE_EXPECT=1)\n{text}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_example_validates() {
    for ex in ["examples/small", "examples/dsx"] {
        let dir = repo().join(ex);
        if !dir.exists() {
            continue;
        }
        let (diags, files) = check_dir(&dir);
        assert!(
            diags.is_empty(),
            "{ex}:\n{}",
            validate::render_text(&diags, &files)
        );
    }
}
