//! `Rack.spec`: a rack or NVL72 domain, its fault domain and location labels.

use serde::{Deserialize, Serialize};

/// `Rack.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RackSpec {
    /// `rack` (default) or `nvl72` (one NVLink domain: a fault takes the whole rack).
    #[serde(default)]
    pub fault_domain: FaultDomainKind,
    /// Where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// The kind of fault domain a rack is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FaultDomainKind {
    /// An ordinary rack.
    #[default]
    Rack,
    /// A GB200/GB300 NVL72 NVLink domain.
    Nvl72,
}

/// A physical location. Each field becomes a Node label value (compile/labels.rs), so each
/// must be a Kubernetes label value; the schema's `pattern` says the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Location {
    /// Site / data centre.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "label_value"
    )]
    pub site: Option<String>,
    /// Room or hall.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "label_value"
    )]
    pub room: Option<String>,
    /// Row.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "label_value"
    )]
    pub row: Option<String>,
    /// Position in the row.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "label_value"
    )]
    pub position: Option<String>,
}

/// Whether `v` is a Kubernetes label value: at most 63 characters of `[A-Za-z0-9-_.]`,
/// starting and ending with an alphanumeric (or empty).
pub fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    let ok = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    v.len() <= 63
        && b.iter().all(ok)
        && b.first().is_none_or(u8::is_ascii_alphanumeric)
        && b.last().is_none_or(u8::is_ascii_alphanumeric)
}

fn label_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = String::deserialize(d)?;
    if is_label_value(&v) {
        Ok(Some(v))
    } else {
        Err(serde::de::Error::custom(format!(
            "`{v}` is not a Kubernetes label value (at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::is_label_value;

    #[test]
    fn label_values_follow_kubernetes_syntax() {
        for ok in ["", "A", "hall-1", "row_2.b", "01", &"x".repeat(63)] {
            assert!(is_label_value(ok), "{ok:?}");
        }
        for bad in ["Hall 1", "-a", "a-", ".a", "a/b", &"x".repeat(64)] {
            assert!(!is_label_value(bad), "{bad:?}");
        }
    }
}
