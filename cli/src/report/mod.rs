//! Views of what the engine reports, for people and programs: apply progress as text lines
//! (coloured on a TTY) or as NDJSON (one `ApplyEvent` object per line, for CI and UIs).
//! Plans, drift and apply summaries render through `fleetform_engine::report`.

use std::time::Instant;

use fleetform_engine::apply::ApplyEvent;
use fleetform_engine::report;

use crate::cmd::color;

/// How apply progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Events {
    // Plain `//` comments: doc comments on the values would switch clap's help for the whole
    // command to its long layout.
    // Lines for people on stderr (coloured on a TTY); the plan and the summary on stdout.
    Text,
    // One JSON object per apply event on stdout (`{"event": "started", "id": ..}`; the
    // engine's `ApplyEvent`), flushed per line; the plan and the summary go to stderr.
    Ndjson,
}

/// Prints apply progress in the chosen view until the sender is dropped.
pub(crate) fn progress(
    view: Events,
) -> (
    tokio::sync::mpsc::UnboundedSender<ApplyEvent>,
    tokio::task::JoinHandle<()>,
) {
    match view {
        Events::Text => text_progress(),
        Events::Ndjson => ndjson_progress(),
    }
}

/// One line of NDJSON for an event: its `event` tag and fields, as the engine serialises it.
pub(crate) fn ndjson_line(e: &ApplyEvent) -> String {
    // An event is plain data (strings, numbers, addresses): serialising it cannot fail, but
    // if it ever did the stream says so in its own format rather than dropping the event.
    serde_json::to_string(e).unwrap_or_else(|err| {
        serde_json::json!({ "event": "unserialisable", "error": err.to_string() }).to_string()
    })
}

fn ndjson_progress() -> (
    tokio::sync::mpsc::UnboundedSender<ApplyEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ApplyEvent>();
    let handle = tokio::spawn(async move {
        use std::io::Write;
        while let Some(e) = rx.recv().await {
            let mut out = std::io::stdout().lock();
            // A closed pipe (the reader went away) must not stop the apply itself.
            let _ = writeln!(out, "{}", ndjson_line(&e)).and_then(|()| out.flush());
        }
    });
    (tx, handle)
}

/// Prints apply progress as plain lines (coloured on a TTY).
fn text_progress() -> (
    tokio::sync::mpsc::UnboundedSender<ApplyEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tty = color();
    let paint = move |code: &str, s: String| {
        if tty {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s
        }
    };
    let handle = tokio::spawn(async move {
        let start = Instant::now();
        while let Some(e) = rx.recv().await {
            let t = format!("[{:>6.1}s]", start.elapsed().as_secs_f64());
            let line = match e {
                ApplyEvent::Started { id, action } => format!("{t} {:?} {id} ...", action),
                ApplyEvent::Retrying {
                    id,
                    attempt,
                    error,
                    delay_ms,
                } => paint(
                    "33",
                    format!("{t} retry {id} after attempt {attempt} in {delay_ms} ms: {error}"),
                ),
                ApplyEvent::WaitingHealthy { id, message } => {
                    format!("{t} waiting for {id} to be healthy: {message}")
                }
                ApplyEvent::WaitingRollout { id, pool, reason } => {
                    format!("{t} {id} waits for room in rollout group {pool}: {reason}")
                }
                ApplyEvent::Succeeded { id, elapsed_ms, .. } => paint(
                    "32",
                    format!("{t} done {id} ({:.1}s)", elapsed_ms as f64 / 1000.0),
                ),
                ApplyEvent::Failed { id, error } => paint(
                    "31",
                    format!("{t} FAILED {id}: {}", report::without_id(&id, &error)),
                ),
                ApplyEvent::Skipped { id, root } => {
                    paint("2", format!("{t} skipped {id} (waits for failed {root})"))
                }
                ApplyEvent::Maintenance { id, node, cordoned } => {
                    if cordoned {
                        format!("{t} cordoned {node} while {id} changes")
                    } else {
                        format!("{t} released the cordon on {node}")
                    }
                }
            };
            eprintln!("{line}");
        }
    });
    (tx, handle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use fleetform_engine::{Action, ResourceId};

    #[test]
    fn an_ndjson_event_is_one_line_of_json_tagged_with_its_kind() {
        let line = ndjson_line(&ApplyEvent::Succeeded {
            id: ResourceId::new("kube", "acme/v1/Namespace//gpu-operator"),
            action: Action::Create,
            elapsed_ms: 12,
        });
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "succeeded");
        assert_eq!(v["id"], "kube:acme/v1/Namespace//gpu-operator");
        assert_eq!(v["elapsed_ms"], 12);
        let back: ApplyEvent = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, ApplyEvent::Succeeded { elapsed_ms: 12, .. }));
    }
}
