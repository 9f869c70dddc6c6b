//! Secrets are masked in the data itself, not at print time.

use std::fmt;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// What every rendering, log and serialisation shows instead of a secret.
pub const MASK: &str = "(sensitive)";

/// A secret value. `Debug`, `Display` and `Serialize` print `(sensitive)`;
/// the value is reachable only through [`Sensitive::expose`], and compared by
/// digest in diffs.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps a secret.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself: call only where it is sent to the system that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: AsRef<[u8]>> Sensitive<T> {
    /// A digest that identifies the value without revealing it (for diffs and state).
    pub fn digest(&self) -> String {
        digest_bytes(self.0.as_ref())
    }
}

/// The hex SHA-256 of some bytes, prefixed so it is never mistaken for the value.
pub fn digest_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> Serialize for Sensitive<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

/// Replaces the value at each JSON pointer with `(sensitive)`, for rendering.
pub fn mask_paths(value: &mut serde_json::Value, pointers: &[String]) {
    for p in pointers {
        if let Some(v) = value.pointer_mut(p) {
            *v = serde_json::Value::String(MASK.to_string());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_shows_in_debug_display_or_json() {
        let s = Sensitive::new("nvapi-supersecret".to_string());
        assert_eq!(format!("{s:?} {s}"), "(sensitive) (sensitive)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"(sensitive)\"");
        assert!(s.digest().starts_with("sha256:"));
    }
}
