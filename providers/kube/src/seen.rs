//! What observe learned about an object beyond its projected state, typed: how it was read,
//! and what diff needs from that reading. It travels in `Observed.private` as JSON (the plan
//! file carries it), in the same shape as before it was typed, so saved plans still load.

use fleetform_contract::provider::{Observed, ProviderError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How an observed object was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub(crate) enum Seen {
    /// Read only: not desired, so nothing was dry-run.
    Get {
        /// The live object.
        live: Value,
        /// Its `metadata.managedFields`.
        #[serde(rename = "managedFields")]
        managed_fields: Value,
    },
    /// Last applied exactly and untouched since: diff answers NoOp without a dry-run.
    Unchanged,
    /// The server's dry-run of the desired object against the live one.
    DryRun {
        /// The live object.
        live: Value,
        /// The dry-run's answer: the object as it would be after the apply.
        #[serde(rename = "dryRun")]
        dry_run: Value,
        /// Its `metadata.managedFields`.
        #[serde(rename = "managedFields")]
        managed_fields: Value,
    },
    /// The server refused the change to immutable fields: only a replace gets there.
    Replace {
        /// The live object.
        live: Value,
        /// Its `metadata.managedFields`.
        #[serde(rename = "managedFields")]
        managed_fields: Value,
        /// The immutable fields the server named.
        replace: Vec<String>,
        /// The server's message.
        reason: String,
    },
}

impl Seen {
    /// As `Observed.private`.
    pub(crate) fn into_private(self) -> Option<Value> {
        // A plain enum of JSON values always serialises.
        serde_json::to_value(self).ok()
    }

    /// Read back from an observation this provider made; `None` for one without (a resource
    /// observed by an older fleetform reads as "compare the projection").
    pub(crate) fn of(observed: &Observed) -> Result<Option<Seen>, ProviderError> {
        let Some(private) = &observed.private else {
            return Ok(None);
        };
        serde_json::from_value(private.clone())
            .map(Some)
            .map_err(|e| {
                ProviderError::permanent(
                    &observed.id,
                    "observation of another shape than the kube provider writes",
                )
                .with_source(e)
            })
    }

    /// The live object and its managed fields, where the reading has them.
    pub(crate) fn live(&self) -> (Value, Value) {
        match self {
            Seen::Get {
                live,
                managed_fields,
            }
            | Seen::DryRun {
                live,
                managed_fields,
                ..
            }
            | Seen::Replace {
                live,
                managed_fields,
                ..
            } => (live.clone(), managed_fields.clone()),
            Seen::Unchanged => (Value::Null, Value::Null),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_reading_keeps_the_json_shape_saved_plans_carry() {
        let dry = Seen::DryRun {
            live: json!({"a": 1}),
            dry_run: json!({"a": 2}),
            managed_fields: json!([]),
        };
        assert_eq!(
            dry.clone().into_private().unwrap(),
            json!({"mode": "dry-run", "live": {"a": 1}, "dryRun": {"a": 2}, "managedFields": []})
        );
        let unchanged = json!({"mode": "unchanged"});
        assert_eq!(
            serde_json::from_value::<Seen>(unchanged).unwrap(),
            Seen::Unchanged
        );
        let replace = json!({"mode": "replace", "live": {}, "managedFields": [], "replace": ["spec.selector"], "reason": "field is immutable"});
        assert!(matches!(
            serde_json::from_value::<Seen>(replace).unwrap(),
            Seen::Replace { replace, .. } if replace == ["spec.selector"]
        ));
    }
}
