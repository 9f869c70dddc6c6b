//! The apply's progress as events, for the TTY view, the JSON log (NDJSON) and tests.

use crate::provider::Action;
use crate::resource::ResourceId;
use serde::{Deserialize, Serialize};

/// Progress, as an event stream the TTY view, the JSON log and tests consume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum ApplyEvent {
    /// A provider call started.
    Started {
        /// The resource.
        id: ResourceId,
        /// What is being done.
        action: Action,
    },
    /// A transient error; retrying after `delay_ms`.
    Retrying {
        /// The resource.
        id: ResourceId,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// The error.
        error: String,
        /// Delay before the next attempt.
        delay_ms: u64,
    },
    /// Applied; waiting until the provider says it is healthy.
    WaitingHealthy {
        /// The resource.
        id: ResourceId,
        /// The provider's progress message.
        message: String,
    },
    /// Waiting for room in a rollout group.
    WaitingRollout {
        /// The resource.
        id: ResourceId,
        /// The pool.
        pool: String,
        /// Why: the nodes already down and the changes in flight against the limit.
        #[serde(default)]
        reason: String,
    },
    /// Done.
    Succeeded {
        /// The resource.
        id: ResourceId,
        /// What was done.
        action: Action,
        /// How long it took.
        elapsed_ms: u64,
    },
    /// Failed for good.
    Failed {
        /// The resource.
        id: ResourceId,
        /// The error chain.
        error: String,
    },
    /// Not attempted because something it waits for failed.
    Skipped {
        /// The resource.
        id: ResourceId,
        /// The root cause.
        root: ResourceId,
    },
    /// A node was cordoned (or released) around a disruptive change.
    Maintenance {
        /// The resource whose change disrupts the host.
        id: ResourceId,
        /// The node.
        node: ResourceId,
        /// True when cordoned, false when released.
        cordoned: bool,
    },
}
