//! The directory walk: every YAML file under a fleet directory, sorted, inside it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Limits, SourceFile};
use crate::diag::{Diagnostic, Span};

/// Reads every `*.yaml` / `*.yml` under `dir` (recursively, sorted by path; hidden
/// entries skipped). A symlink that resolves outside `dir`, a file over the size
/// limit or an empty directory is an error.
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, Vec<Diagnostic>> {
    read_dir_with(dir, &Limits::default())
}

/// [`read_dir`] with explicit limits.
pub fn read_dir_with(dir: &Path, limits: &Limits) -> Result<Vec<SourceFile>, Vec<Diagnostic>> {
    let root = match dir.canonicalize() {
        Ok(r) => r,
        Err(e) => {
            return Err(vec![Diagnostic::error(
                "read",
                format!("cannot open fleet directory {}: {e}", dir.display()),
            )]);
        }
    };
    let mut files = Vec::new();
    let mut diags = Vec::new();
    let mut seen = HashSet::new();
    walk(&root, &root, "", limits, &mut files, &mut diags, &mut seen);
    if files.is_empty() && diags.is_empty() {
        diags.push(
            Diagnostic::error(
                "empty-fleet",
                format!("no *.yaml or *.yml files in {}", dir.display()),
            )
            .hint("a fleet needs at least a Fleet document; see examples/small"),
        );
    }
    if diags.is_empty() {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    } else {
        crate::diag::sort(&mut diags);
        Err(diags)
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    rel: &str,
    limits: &Limits,
    files: &mut Vec<SourceFile>,
    diags: &mut Vec<Diagnostic>,
    seen: &mut HashSet<PathBuf>,
) {
    if !seen.insert(dir.to_path_buf()) {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::error(
                "read",
                format!("cannot read directory {}: {e}", show(rel)),
            ));
            return;
        }
    };
    let mut names: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let Some(name) = name.to_str().map(str::to_string) else {
            diags.push(Diagnostic::error(
                "read",
                format!("a file name in {} is not UTF-8", show(rel)),
            ));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let rel_path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let path = dir.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        let target = if meta.file_type().is_symlink() {
            match path.canonicalize() {
                Ok(t) if t.starts_with(root) => t,
                Ok(_) => {
                    diags.push(
                        Diagnostic::error(
                            "path-escape",
                            format!(
                                "{rel_path} is a symlink that points outside the fleet directory"
                            ),
                        )
                        .at(Some(Span {
                            file: rel_path.clone(),
                            line: 1,
                            column: 1,
                        }))
                        .hint(
                            "copy the file into the fleet directory, or point the link inside it",
                        ),
                    );
                    continue;
                }
                Err(_) => {
                    if is_yaml {
                        diags.push(Diagnostic::error(
                            "read",
                            format!("{rel_path} is a dangling symlink"),
                        ));
                    }
                    continue;
                }
            }
        } else {
            path.clone()
        };
        let Ok(tmeta) = std::fs::metadata(&target) else {
            continue;
        };
        if tmeta.is_dir() {
            walk(root, &target, &rel_path, limits, files, diags, seen);
        } else if tmeta.is_file() && is_yaml {
            if tmeta.len() > limits.max_file_bytes as u64 {
                diags.push(too_large(&rel_path, tmeta.len(), limits));
                continue;
            }
            match std::fs::read(&target) {
                Ok(bytes) => files.push(SourceFile {
                    path: rel_path,
                    bytes,
                }),
                Err(e) => diags.push(Diagnostic::error(
                    "read",
                    format!("cannot read {rel_path}: {e}"),
                )),
            }
        }
    }
}

fn show(rel: &str) -> &str {
    if rel.is_empty() { "." } else { rel }
}

pub(super) fn too_large(path: &str, len: u64, limits: &Limits) -> Diagnostic {
    Diagnostic::error(
        "file-too-large",
        format!(
            "{path} is {len} bytes; the limit is {} bytes",
            limits.max_file_bytes
        ),
    )
    .at(Some(Span {
        file: path.to_string(),
        line: 1,
        column: 1,
    }))
    .hint("split the fleet into several files (one per rack or tenant)")
}
