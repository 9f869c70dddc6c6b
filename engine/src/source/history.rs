//! Ancestry on a possibly shallow cache.

use std::collections::{HashSet, VecDeque};

use git2::{ObjectType, Oid, Repository};

/// Commits walked before giving up on the local (shallow) history.
const MAX_LOCAL_WALK: usize = 10_000;

/// Whether `head` descends from (or is) `last`, judged from the objects in the
/// cache. `None` when the answer needs commits the cache does not have (a
/// shallow history cut between them, or `head` itself missing).
pub(super) fn descends_from_local(repo: &Repository, head: Oid, last: Oid) -> Option<bool> {
    if head == last {
        return Some(true);
    }
    let odb = repo.odb().ok()?;
    if !odb.exists(head) {
        return None;
    }
    if !repo.is_shallow() {
        // A full cache holds the whole history of what it fetched: a last
        // applied commit that is not there is not in that history.
        if !odb.exists(last) {
            return Some(false);
        }
        return repo.graph_descendant_of(head, last).ok();
    }
    // Shallow: libgit2 cuts parents at the shallow boundary, so walk the
    // parents written in the commit objects themselves, as far as they exist.
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([head]);
    let mut incomplete = false;
    while let Some(oid) = queue.pop_front() {
        if !seen.insert(oid) {
            continue;
        }
        if seen.len() > MAX_LOCAL_WALK {
            return None;
        }
        let Ok(obj) = odb.read(oid) else {
            incomplete = true;
            continue;
        };
        if obj.kind() != ObjectType::Commit {
            continue;
        }
        for parent in raw_parents(obj.data()) {
            if parent == last {
                return Some(true);
            }
            queue.push_back(parent);
        }
    }
    if incomplete { None } else { Some(false) }
}

/// The `parent` lines of a raw commit object.
fn raw_parents(data: &[u8]) -> Vec<Oid> {
    let mut out = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        if line.is_empty() {
            break; // end of the header
        }
        if let Some(hex) = line.strip_prefix(b"parent ")
            && let Some(oid) = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| Oid::from_str(h.trim()).ok())
        {
            out.push(oid);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn raw_parents_reads_only_the_header() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let raw = format!(
            "tree {}\nparent {a}\nparent {b}\nauthor x\n\nparent {}\n",
            "c".repeat(40),
            "d".repeat(40)
        );
        let ps = raw_parents(raw.as_bytes());
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].to_string(), a);
    }
}
