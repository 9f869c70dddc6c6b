//! Reading the manifest tree of a commit from the object database, and
//! listing what changed between two commits.

use git2::{Delta, DiffFindOptions, DiffOptions, ObjectType, Oid, Tree};
use serde::{Deserialize, Serialize};

use super::{FleetRepo, SourceError};
pub use crate::load::SourceFile;

/// How a file changed between two commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ChangeKind {
    /// New in head.
    Added,
    /// Gone in head.
    Deleted,
    /// Content or mode changed.
    Modified,
    /// Moved (and maybe changed); `from` is relative to the fleet path when it
    /// was inside it, else relative to the repository root.
    Renamed {
        /// The old path.
        from: String,
    },
    /// Became a symlink, or stopped being one.
    TypeChanged,
}

/// A file that differs between two commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedFile {
    /// Path relative to the fleet path (the new path for renames).
    pub path: String,
    /// What happened to it.
    pub change: ChangeKind,
}

const MODE_LINK: i32 = 0o120000;
const MAX_LINK_HOPS: usize = 8;

fn is_manifest(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// `a/./b/../c/` → `["a", "c"]`; `None` when it climbs above the start.
fn normalise(parts: impl IntoIterator<Item = impl AsRef<str>>) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for part in parts {
        for seg in part.as_ref().split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    out.pop()?;
                }
                s => out.push(s.to_string()),
            }
        }
    }
    Some(out)
}

/// The fleet path as components; refuses absolute paths and `..`.
fn fleet_root(repo: &FleetRepo, path: &str) -> Result<Vec<String>, SourceError> {
    if path.starts_with('/') || path.split('/').any(|s| s == "..") {
        return Err(SourceError::InvalidSpec {
            url: repo.url.clone(),
            why: format!(
                "fleet path `{path}` must be relative to the repository root, without `..`"
            ),
        });
    }
    Ok(normalise([path]).unwrap_or_default())
}

fn commit_tree(repo: &FleetRepo, oid: Oid) -> Result<Tree<'_>, SourceError> {
    let commit = repo.find_commit(oid)?;
    commit
        .tree()
        .map_err(|e| repo.git("reading the commit's tree", &e))
}

pub(super) fn read_tree(
    repo: &FleetRepo,
    oid: Oid,
    path: &str,
) -> Result<Vec<SourceFile>, SourceError> {
    let root = fleet_root(repo, path)?;
    let root_str = root.join("/");
    let commit_str = oid.to_string();
    let top = commit_tree(repo, oid)?;
    let fleet_tree = if root.is_empty() {
        top.clone()
    } else {
        let entry = top.get_path(std::path::Path::new(&root_str)).map_err(|_| {
            SourceError::PathNotFound {
                url: repo.url.clone(),
                commit: commit_str.clone(),
                path: root_str.clone(),
            }
        })?;
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(SourceError::NotADirectory {
                url: repo.url.clone(),
                commit: commit_str,
                path: root_str,
            });
        }
        repo.repo
            .find_tree(entry.id())
            .map_err(|e| repo.git("reading the fleet directory", &e))?
    };

    let mut reader = Reader {
        repo,
        top: &top,
        root: &root,
        commit: &commit_str,
        files: Vec::new(),
        total: 0,
    };
    // Depth-first over the fleet directory; `rel` is relative to the fleet path.
    let mut stack: Vec<(Tree<'_>, Vec<String>)> = vec![(fleet_tree, Vec::new())];
    while let Some((tree, rel)) = stack.pop() {
        for entry in tree.iter() {
            let Ok(name) = entry.name() else {
                tracing::warn!(commit = %commit_str, "skipping a tree entry whose name is not UTF-8");
                continue;
            };
            let mut child = rel.clone();
            child.push(name.to_string());
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = repo
                        .repo
                        .find_tree(entry.id())
                        .map_err(|e| repo.git("reading a directory", &e))?;
                    stack.push((sub, child));
                }
                Some(ObjectType::Blob) if entry.filemode() == MODE_LINK => {
                    reader.symlink(entry.id(), &rel, &child)?
                }
                Some(ObjectType::Blob) if is_manifest(name) => {
                    reader.blob(entry.id(), child.join("/"))?
                }
                // Other files, and submodules (commits), are not part of the manifest.
                _ => {}
            }
        }
    }
    let mut files = reader.files;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

struct Reader<'r> {
    repo: &'r FleetRepo,
    top: &'r Tree<'r>,
    root: &'r [String],
    commit: &'r str,
    files: Vec<SourceFile>,
    total: u64,
}

impl Reader<'_> {
    fn repo_path(&self, rel: &[String]) -> String {
        self.root
            .iter()
            .chain(rel)
            .cloned()
            .collect::<Vec<_>>()
            .join("/")
    }

    fn blob(&mut self, id: Oid, rel_path: String) -> Result<(), SourceError> {
        let limits = self.repo.limits;
        let odb = self
            .repo
            .repo
            .odb()
            .map_err(|e| self.repo.git("opening the object database", &e))?;
        let (size, _) = odb
            .read_header(id)
            .map_err(|e| self.repo.git("reading a blob header", &e))?;
        let size = size as u64;
        if size > limits.max_file_bytes {
            return Err(SourceError::FileTooLarge {
                url: self.repo.url.clone(),
                commit: self.commit.to_string(),
                path: self.repo_path(&[rel_path]),
                size,
                limit: limits.max_file_bytes,
            });
        }
        self.total += size;
        if self.total > limits.max_total_bytes {
            return Err(self.too_large(format!(
                "more than {} bytes of manifests",
                limits.max_total_bytes
            )));
        }
        if self.files.len() >= limits.max_files {
            return Err(self.too_large(format!("more than {} manifest files", limits.max_files)));
        }
        let blob = self
            .repo
            .repo
            .find_blob(id)
            .map_err(|e| self.repo.git("reading a blob", &e))?;
        self.files.push(SourceFile {
            path: rel_path,
            bytes: blob.content().to_vec(),
        });
        Ok(())
    }

    fn too_large(&self, what: String) -> SourceError {
        SourceError::TreeTooLarge {
            url: self.repo.url.clone(),
            commit: self.commit.to_string(),
            what,
        }
    }

    /// A symlink at `rel_link` (in directory `rel_dir`, both relative to the
    /// fleet path). Refused when it, or any link it leads to, points outside
    /// the fleet path; followed to a file when its name is a manifest's.
    fn symlink(
        &mut self,
        id: Oid,
        rel_dir: &[String],
        rel_link: &[String],
    ) -> Result<(), SourceError> {
        let link_repo_path = self.repo_path(rel_link);
        let mut target_id = id;
        let mut dir: Vec<String> = self.root.iter().chain(rel_dir).cloned().collect();
        for _ in 0..MAX_LINK_HOPS {
            let blob = self
                .repo
                .repo
                .find_blob(target_id)
                .map_err(|e| self.repo.git("reading a symlink", &e))?;
            let target = String::from_utf8_lossy(blob.content()).into_owned();
            let escape = || SourceError::SymlinkEscape {
                url: self.repo.url.clone(),
                commit: self.commit.to_string(),
                link: link_repo_path.clone(),
                target: target.clone(),
                root: if self.root.is_empty() {
                    ".".into()
                } else {
                    self.root.join("/")
                },
            };
            if target.starts_with('/') {
                return Err(escape());
            }
            let resolved = normalise(dir.iter().map(String::as_str).chain([target.as_str()]))
                .ok_or_else(escape)?;
            if !resolved.starts_with(self.root) {
                return Err(escape());
            }
            let Some(last) = rel_link.last() else {
                return Ok(());
            };
            let Ok(entry) = self.top.get_path(std::path::Path::new(&resolved.join("/"))) else {
                tracing::warn!(commit = self.commit, link = %link_repo_path, %target, "skipping a dangling symlink");
                return Ok(());
            };
            match entry.kind() {
                Some(ObjectType::Blob) if entry.filemode() == MODE_LINK => {
                    target_id = entry.id();
                    dir = resolved[..resolved.len().saturating_sub(1)].to_vec();
                }
                Some(ObjectType::Blob) if is_manifest(last) => {
                    return self.blob(entry.id(), rel_link.join("/"));
                }
                // A link to a directory inside the fleet path: its files are
                // read where they really are.
                _ => return Ok(()),
            }
        }
        Err(SourceError::InvalidSpec {
            url: self.repo.url.clone(),
            why: format!(
                "symlink `{link_repo_path}` at commit {}: more than {MAX_LINK_HOPS} links in a chain",
                self.commit
            ),
        })
    }
}

pub(super) fn diff_paths(
    repo: &FleetRepo,
    base: Oid,
    head: Oid,
    path: &str,
) -> Result<Vec<ChangedFile>, SourceError> {
    let root = fleet_root(repo, path)?;
    let prefix = if root.is_empty() {
        String::new()
    } else {
        format!("{}/", root.join("/"))
    };
    let base_tree = commit_tree(repo, base)?;
    let head_tree = commit_tree(repo, head)?;
    let mut opts = DiffOptions::new();
    if !prefix.is_empty() {
        opts.pathspec(&prefix);
    }
    let mut diff = repo
        .repo
        .diff_tree_to_tree(Some(&base_tree), Some(&head_tree), Some(&mut opts))
        .map_err(|e| repo.git("comparing trees", &e))?;
    let mut find = DiffFindOptions::new();
    find.renames(true);
    diff.find_similar(Some(&mut find))
        .map_err(|e| repo.git("finding renames", &e))?;
    let strip = |p: &std::path::Path| -> Option<String> {
        let s = p.to_str()?.to_string();
        if prefix.is_empty() {
            Some(s)
        } else {
            s.strip_prefix(&prefix).map(str::to_string)
        }
    };
    let mut out = Vec::new();
    for delta in diff.deltas() {
        let new_path = delta.new_file().path().and_then(strip);
        let old_path = delta
            .old_file()
            .path()
            .and_then(|p| strip(p).or_else(|| p.to_str().map(str::to_string)));
        let (path, change) = match delta.status() {
            Delta::Added | Delta::Copied => (new_path, ChangeKind::Added),
            Delta::Deleted => (delta.old_file().path().and_then(strip), ChangeKind::Deleted),
            Delta::Modified => (new_path, ChangeKind::Modified),
            Delta::Typechange => (new_path, ChangeKind::TypeChanged),
            // Moved out of the fleet path: gone from the manifest.
            Delta::Renamed if new_path.is_none() => {
                (delta.old_file().path().and_then(strip), ChangeKind::Deleted)
            }
            Delta::Renamed => (
                new_path,
                ChangeKind::Renamed {
                    from: old_path.unwrap_or_default(),
                },
            ),
            _ => continue,
        };
        if let Some(path) = path {
            out.push(ChangedFile { path, change });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalise_refuses_climbing_above_the_start() {
        assert_eq!(
            normalise(["a/./b/../c/"]),
            Some(vec!["a".to_string(), "c".to_string()])
        );
        assert_eq!(normalise(["a", "../../x"]), None);
    }
}
