//! How serve reads a failed reconcile: what failed (the `kind` label of
//! `fleetform_errors_total`), when to try again, and the typed error with its causes, from
//! the session's errors and outcomes, the source's refusals and the apply's report.

use std::sync::Arc;

use super::daemon::BoxError;
use crate::plan::Plan;
use crate::session::{Incomplete, Outcome, Run, SessionError};
use crate::source::SourceError;
use crate::state::StateError;

/// When a failed reconcile is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Soon, with growing delays (up to the poll interval): it may pass by itself.
    Backoff,
    /// At the next poll: it needs a new commit or a change on the host.
    NextPoll,
}

/// A reconcile that failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The stage, also the `kind` label of `fleetform_errors_total`:
    /// state, fetch, history, verify, validate, lock, plan, apply, interrupted, and with
    /// `--shards` precondition (a shard waits for another shard's resource).
    pub kind: &'static str,
    /// The commit concerned, when known.
    pub revision: Option<String>,
    /// What went wrong, for people (never a secret): the top error's own message.
    pub message: String,
    /// When to try again.
    pub retry: Retry,
    /// The typed error the message came from, with its chain of causes (a state file's
    /// I/O error, libgit2's, a provider's); `None` for a failure that is only a message.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl PartialEq for Failure {
    /// Two failures are the same when they say the same: the cause is compared by its chain.
    fn eq(&self, other: &Self) -> bool {
        (self.kind, &self.revision, &self.message, self.retry)
            == (other.kind, &other.revision, &other.message, other.retry)
            && self.causes() == other.causes()
    }
}

impl Eq for Failure {}

impl std::fmt::Display for Failure {
    /// `KIND failed: MESSAGE: CAUSE: CAUSE…`, each cause once, outermost first.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.kind, self.message)?;
        for cause in self.causes() {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Failure {
    /// A failure that is only a message (nothing underneath it).
    pub(super) fn new(kind: &'static str, retry: Retry, message: impl ToString) -> Self {
        Self {
            kind,
            revision: None,
            message: message.to_string(),
            retry,
            cause: None,
        }
    }

    /// A failure from a typed error: its message, and the error kept for its causes.
    pub(super) fn caused(kind: &'static str, retry: Retry, error: impl Into<BoxError>) -> Self {
        let error: BoxError = error.into();
        Self {
            kind,
            revision: None,
            message: error.to_string(),
            retry,
            cause: Some(Arc::from(error)),
        }
    }

    pub(super) fn at(mut self, revision: &str) -> Self {
        self.revision = Some(revision.to_string());
        self
    }

    /// The causes under the message, outermost first (the sources of the typed error).
    pub fn causes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = self.cause.as_deref().and_then(|e| e.source());
        while let Some(e) = cur {
            out.push(e.to_string());
            cur = e.source();
        }
        out
    }
}

/// A plan with problems is not applied; the first few are quoted.
pub(super) fn check_plan(plan: &Plan) -> Result<(), Failure> {
    if plan.problems.is_empty() {
        return Ok(());
    }
    let retry = if plan.problems.iter().all(|p| p.transient) {
        Retry::Backoff
    } else {
        Retry::NextPoll
    };
    let quoted: Vec<String> = plan
        .problems
        .iter()
        .take(3)
        .map(|p| match &p.id {
            Some(id) => format!("{id}: {}", p.message),
            None => p.message.clone(),
        })
        .collect();
    Err(Failure::new(
        "plan",
        retry,
        format!(
            "the plan has {} problem(s): {}{}",
            plan.problems.len(),
            quoted.join("; "),
            if plan.problems.len() > 3 { "; …" } else { "" }
        ),
    ))
}

/// A session that stopped before an outcome, as a serve failure: a lock held elsewhere
/// and a state store that failed pass by themselves; live state that moved under a heal is
/// checked again at the next drift check.
pub(super) fn session_failure(e: SessionError) -> Failure {
    match e {
        SessionError::State(StateError::Locked { .. }) => {
            Failure::caused("lock", Retry::Backoff, e)
        }
        SessionError::State(_) => Failure::caused("state", Retry::Backoff, e),
        SessionError::Plan(_) => Failure::caused("plan", Retry::NextPoll, e),
        SessionError::Hook(_) => Failure::caused("plan", Retry::Backoff, e),
        SessionError::Moved { .. } => Failure::caused("plan", Retry::Backoff, e),
        SessionError::Apply(a) => apply_failure(a),
    }
}

/// An apply's outcome as a serve failure: interrupted, failed resources, or resources
/// skipped because they could not be observed (the rest was applied).
pub(super) fn outcome_failure(run: &Run) -> Result<(), Failure> {
    match run.outcome {
        Outcome::Clean | Outcome::Changes => Ok(()),
        Outcome::Interrupted => Err(Failure::new(
            "interrupted",
            Retry::Backoff,
            "shut down before the apply finished; calls in flight were recorded",
        )),
        Outcome::Incomplete(Incomplete::Problems(_)) => check_plan(&run.plan),
        Outcome::Incomplete(Incomplete::Failed) => Err(Failure::new(
            "apply",
            Retry::Backoff,
            run.report.as_ref().map(root_causes).unwrap_or_default(),
        )),
        Outcome::Incomplete(Incomplete::Skipped(n)) => {
            // The rest was applied; what could not be observed (a BMC down) is retried.
            let quoted: Vec<String> = run
                .plan
                .skipped
                .iter()
                .filter(|s| s.root.is_none())
                .take(3)
                .map(|s| s.reason.clone())
                .collect();
            Err(Failure::new(
                "plan",
                Retry::Backoff,
                format!(
                    "applied the rest; {n} resource(s) skipped: {}",
                    quoted.join("; ")
                ),
            ))
        }
    }
}

/// How serve retries an apply that could not start, decided by the error, not by the
/// configuration: destroy without consent and a plan with problems wait for a new commit
/// (or a person); a state store that failed is retried with backoff, since the next attempt
/// may well succeed and waiting a whole poll interval would only delay the fleet.
pub(super) fn apply_failure(e: crate::apply::ApplyError) -> Failure {
    use crate::apply::ApplyError;
    let retry = match &e {
        ApplyError::DestroyNotApproved { .. } | ApplyError::PlanHasProblems(_) => Retry::NextPoll,
        ApplyError::State(_) => Retry::Backoff,
    };
    Failure::caused("apply", retry, e)
}

pub(super) fn root_causes(report: &crate::apply::ApplyReport) -> String {
    let causes = report.root_causes();
    let quoted: Vec<String> = causes
        .iter()
        .take(3)
        .map(|(id, (error, skipped))| {
            let mut s = format!("{id}: {}", crate::report::without_id(id, error));
            if !skipped.is_empty() {
                s.push_str(&format!(" ({} waiting resource(s) skipped)", skipped.len()));
            }
            s
        })
        .collect();
    format!(
        "{} resource(s) failed: {}{}",
        causes.len(),
        quoted.join("; "),
        if causes.len() > 3 { "; …" } else { "" }
    )
}

pub(super) fn source_failure(e: SourceError) -> Failure {
    let (kind, retry) = match &e {
        SourceError::HistoryRewritten { .. } => ("history", Retry::NextPoll),
        SourceError::Unsigned { .. }
        | SourceError::Untrusted { .. }
        | SourceError::Verifier { .. } => ("verify", Retry::NextPoll),
        SourceError::InvalidSpec { .. }
        | SourceError::PathNotFound { .. }
        | SourceError::NotADirectory { .. }
        | SourceError::SymlinkEscape { .. }
        | SourceError::FileTooLarge { .. }
        | SourceError::TreeTooLarge { .. } => ("validate", Retry::NextPoll),
        _ => ("fetch", Retry::Backoff),
    };
    let revision = match &e {
        SourceError::HistoryRewritten { new, .. } => Some(new.clone()),
        SourceError::Unsigned { commit, .. } | SourceError::Untrusted { commit, .. } => {
            Some(commit.clone())
        }
        _ => None,
    };
    Failure {
        revision,
        ..Failure::caused(kind, retry, e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::resource::ResourceId;
    use crate::source::GitRef;

    #[test]
    fn an_apply_that_could_not_start_is_retried_by_what_failed_not_by_the_config() {
        use crate::apply::ApplyError;
        let state = ApplyError::State(crate::state::StateError::Io {
            path: "state/journal".into(),
            source: std::io::Error::other("disk busy"),
        });
        assert_eq!(apply_failure(state).retry, Retry::Backoff);
        let consent = ApplyError::DestroyNotApproved {
            count: 1,
            first: ResourceId::new("test", "a"),
        };
        assert_eq!(apply_failure(consent).retry, Retry::NextPoll);
        assert_eq!(
            apply_failure(ApplyError::PlanHasProblems(2)).retry,
            Retry::NextPoll
        );
    }

    #[test]
    fn a_failure_keeps_the_typed_error_and_shows_its_causes() {
        use crate::apply::ApplyError;
        let state = ApplyError::State(crate::state::StateError::Io {
            path: "state/journal".into(),
            source: std::io::Error::other("No space left on device"),
        });
        let f = apply_failure(state);
        assert_eq!(
            f.causes(),
            vec![
                "state file state/journal".to_string(),
                "No space left on device".to_string()
            ]
        );
        let shown = f.to_string();
        assert!(
            shown.starts_with("apply failed: state store failed"),
            "{shown}"
        );
        assert!(
            shown.ends_with(": state file state/journal: No space left on device"),
            "{shown}"
        );
        let typed = f.cause.as_deref().unwrap();
        assert!(typed.downcast_ref::<ApplyError>().is_some());
    }

    #[test]
    fn source_refusals_wait_for_a_new_commit_and_network_errors_back_off() {
        let rewritten = source_failure(SourceError::HistoryRewritten {
            url: "u".into(),
            reference: GitRef::Branch("main".into()),
            last_applied: "a".repeat(40),
            new: "b".repeat(40),
        });
        assert_eq!(
            (rewritten.kind, rewritten.retry),
            ("history", Retry::NextPoll)
        );
        assert_eq!(rewritten.revision, Some("b".repeat(40)));
        let missing = source_failure(SourceError::RefNotFound {
            url: "u".into(),
            reference: GitRef::Branch("main".into()),
        });
        assert_eq!((missing.kind, missing.retry), ("fetch", Retry::Backoff));
    }
}
