//! The pieces of `fleetform serve` that are plain functions and types: the
//! config file, push webhooks, metrics and notifications. The daemon loop
//! (HTTP server, reconcile scheduling) composes them.

pub mod config;
pub mod metrics;
pub mod notify;
pub mod webhook;

pub use config::{DriftConfig, DriftSchedule, ServeConfig, WebhookConfig};
pub use metrics::Metrics;
pub use notify::{Event, EventType, NotificationTarget, Notifier};
pub use webhook::{PushEvent, WebhookEvent, WebhookProvider};
