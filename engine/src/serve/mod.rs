//! `fleetform serve`: the config file, push webhooks, metrics and
//! notifications, and the daemon that composes them (HTTP endpoint, poll and
//! drift schedules, one reconcile at a time).

pub mod config;
pub mod daemon;
pub mod failure;
pub mod metrics;
pub mod notify;
pub mod shards;
pub mod webhook;

pub use config::{DriftConfig, DriftSchedule, ServeConfig, WebhookConfig};
pub use daemon::{Daemon, Pipeline, Prepared, Status};
pub use metrics::Metrics;
pub use notify::{Event, EventType, NotificationTarget, Notifier};
pub use webhook::{PushEvent, WebhookEvent, WebhookProvider};
