//! How the compacted inventory is split over chunk objects (a stable hash of the resource
//! id), and how journal lines are serialised into a segment.

use std::collections::BTreeMap;

use fleetform_engine::resource::ResourceId;
use fleetform_engine::state::{InventoryEntry, JournalEntry};
use sha2::Digest;

pub(crate) fn jsonl(entries: &[JournalEntry]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    for e in entries {
        out.extend(serde_json::to_vec(e)?);
        out.push(b'\n');
    }
    Ok(out)
}

/// The chunk a resource belongs to among `n` (a power of two): a stable hash of its id, the
/// same on every machine and release, so a chunk's content only changes with its resources.
pub fn chunk_of(id: &ResourceId, n: usize) -> usize {
    let digest = sha2::Sha256::digest(id.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // n is at most 4096, so the cast back cannot truncate.
    (u64::from_be_bytes(first) % n as u64) as usize
}

/// Splits an inventory into the fewest chunks (a power of two) of at most `budget` bytes each;
/// the serialised chunks in chunk order, empty chunks left out.
pub fn split(
    resources: &BTreeMap<ResourceId, InventoryEntry>,
    budget: usize,
) -> Result<Vec<Vec<u8>>, String> {
    let mut sizes = Vec::with_capacity(resources.len());
    for (id, entry) in resources {
        let size = serde_json::to_vec(&(id, entry))
            .map_err(|e| format!("resource {id}: {e}"))?
            .len();
        if size > budget {
            return Err(format!(
                "resource {id}: its inventory entry is {size} bytes, over the {budget}-byte object budget"
            ));
        }
        sizes.push((id, size));
    }
    let mut n = 1;
    loop {
        let mut totals = vec![0usize; n];
        for (id, size) in &sizes {
            totals[chunk_of(id, n)] += size;
        }
        if totals.iter().all(|t| *t <= budget) {
            break;
        }
        n *= 2;
        if n > 4096 {
            return Err(format!(
                "the inventory does not fit 4096 objects of {budget} bytes"
            ));
        }
    }
    let mut chunks: Vec<BTreeMap<&ResourceId, &InventoryEntry>> = vec![BTreeMap::new(); n];
    for (id, entry) in resources {
        chunks[chunk_of(id, n)].insert(id, entry);
    }
    chunks
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(|c| serde_json::to_vec(&c).map_err(|e| e.to_string()))
        .collect()
}
