//! Notifications: a JSON event POSTed to each configured URL, with a timeout
//! and bounded retries with exponential backoff.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::secret::{SecretError, SecretRef, SecretResolver};

/// The `apiVersion` of events.
pub const API_VERSION: &str = "fleetform.dev/v1alpha1";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventType {
    /// A revision was applied.
    Applied,
    /// A reconcile failed.
    Failed,
    /// Drift was found.
    DriftDetected,
}

/// The body of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always `Event`.
    pub kind: String,
    /// applied | failed | drift-detected.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The fleet's name.
    pub fleet: String,
    /// The commit concerned.
    pub revision: String,
    /// One line for people (never a secret: built from the plan/report).
    pub summary: String,
    /// RFC 3339 UTC time, e.g. `2026-11-26T23:59:00Z`.
    pub time: String,
}

impl Event {
    /// An event at `time`.
    pub fn new(
        event_type: EventType,
        fleet: impl Into<String>,
        revision: impl Into<String>,
        summary: impl Into<String>,
        time: SystemTime,
    ) -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: "Event".into(),
            event_type,
            fleet: fleet.into(),
            revision: revision.into(),
            summary: summary.into(),
            time: rfc3339(time),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a time (UTC, seconds).
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Where and how to send events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationTarget {
    /// The URL to POST to. Shown only as scheme://host in errors and logs, as
    /// chat webhook URLs carry their secret in the path.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// Which event types go to this target (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventType>,
    /// Per-attempt timeout, seconds (default 10).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Attempts in all, first included (default 4).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_timeout() -> u64 {
    10
}

fn default_attempts() -> u32 {
    4
}

impl NotificationTarget {
    /// A target with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            events: Vec::new(),
            timeout_seconds: default_timeout(),
            max_attempts: default_attempts(),
        }
    }

    /// Whether this target wants an event type.
    pub fn wants(&self, t: EventType) -> bool {
        self.events.is_empty() || self.events.contains(&t)
    }
}

/// Why an event was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The HTTP client could not be built.
    #[error("notifications: cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The target's token could not be read.
    #[error("notification to {target}: cannot read the token")]
    Secret {
        /// scheme://host of the target.
        target: String,
        /// The resolver's error.
        #[source]
        source: SecretError,
    },
    /// The target answered with a status that retrying will not change (4xx other than 408/429).
    #[error("notification to {target}: refused with HTTP {status}")]
    Refused {
        /// scheme://host of the target.
        target: String,
        /// The status.
        status: u16,
    },
    /// Every attempt failed with a transient error.
    #[error("notification to {target}: gave up after {attempts} attempts (last: {last})")]
    GaveUp {
        /// scheme://host of the target.
        target: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure (a status or a connection error kind).
        last: String,
    },
}

/// Backoff between attempts: `initial * 2^n`, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Sends events. One HTTP client (rustls) shared by all targets.
#[derive(Debug, Clone)]
pub struct Notifier {
    client: reqwest::Client,
    backoff: Backoff,
}

/// A delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// scheme://host of the target.
    pub target: String,
    /// Attempts it took.
    pub attempts: u32,
    /// The final HTTP status.
    pub status: u16,
}

/// scheme://host[:port] of a URL: what may be shown of a webhook URL.
pub fn url_origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(invalid URL)".into();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    format!("{scheme}://{host}")
}

impl Notifier {
    /// A notifier with the default backoff.
    pub fn new() -> Result<Self, NotifyError> {
        Self::with_backoff(Backoff::default())
    }

    /// A notifier with a given backoff (tests use a short one).
    pub fn with_backoff(backoff: Backoff) -> Result<Self, NotifyError> {
        // reqwest is built without a default rustls provider; pick ring, as the providers do.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("fleetform/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(NotifyError::Client)?;
        Ok(Self { client, backoff })
    }

    /// Sends one event to one target, retrying transient failures (connection
    /// errors, timeouts, 408, 429, 5xx) up to `max_attempts` in all.
    pub async fn send(
        &self,
        target: &NotificationTarget,
        event: &Event,
        resolver: &dyn SecretResolver,
    ) -> Result<Delivery, NotifyError> {
        let origin = url_origin(&target.url);
        let token = match &target.token {
            Some(r) => Some(resolver.resolve(r).map_err(|source| NotifyError::Secret {
                target: origin.clone(),
                source,
            })?),
            None => None,
        };
        let attempts = target.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let mut req = self
                .client
                .post(&target.url)
                .timeout(Duration::from_secs(target.timeout_seconds.max(1)))
                .json(event);
            if let Some(t) = &token {
                req = req.bearer_auth(t.expose());
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    return Ok(Delivery {
                        target: origin,
                        attempts: attempt,
                        status: resp.status().as_u16(),
                    });
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if !(status == 408 || status == 429 || status >= 500) {
                        return Err(NotifyError::Refused {
                            target: origin,
                            status,
                        });
                    }
                    last = format!("HTTP {status}");
                }
                // reqwest errors quote the URL; keep only the kind.
                Err(e) if e.is_timeout() => last = "timeout".into(),
                Err(e) if e.is_connect() => last = "connection failed".into(),
                Err(_) => last = "request failed".into(),
            }
            tracing::warn!(target = %origin, attempt, attempts, %last, "notification failed");
            if attempt < attempts {
                tokio::time::sleep(self.backoff.delay(attempt)).await;
            }
        }
        Err(NotifyError::GaveUp {
            target: origin,
            attempts,
            last,
        })
    }

    /// Sends an event to every target that wants its type; one result per such target.
    pub async fn send_all(
        &self,
        targets: &[NotificationTarget],
        event: &Event,
        resolver: &dyn SecretResolver,
    ) -> Vec<Result<Delivery, NotifyError>> {
        let wanted = targets.iter().filter(|t| t.wants(event.event_type));
        futures::future::join_all(wanted.map(|t| self.send(t, event, resolver))).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn event_serialises_with_the_documented_fields() {
        let e = Event::new(
            EventType::DriftDetected,
            "prod",
            "4f2a9c0e",
            "2 resources drifted",
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "fleetform.dev/v1alpha1", "kind": "Event", "type": "drift-detected",
                "fleet": "prod", "revision": "4f2a9c0e", "summary": "2 resources drifted",
                "time": "2023-11-14T22:13:20Z"
            })
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(350));
        assert_eq!(b.delay(40), Duration::from_millis(350));
    }

    #[test]
    fn only_the_origin_of_a_webhook_url_is_shown() {
        assert_eq!(
            url_origin("https://hooks.slack.com/services/T0/B0/XXXX"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            url_origin("http://user:pw@127.0.0.1:8080/x?y"),
            "http://127.0.0.1:8080"
        );
    }

    /// A receiver on 127.0.0.1 that answers the given statuses in turn (200
    /// once they run out) and keeps the bodies and Authorization headers.
    /// What the receiver saw: (body, Authorization header) per request.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

    async fn receiver(statuses: Vec<u16>) -> (String, Seen) {
        use axum::http::{HeaderMap, StatusCode};
        use std::sync::{Arc, Mutex};
        let seen: Seen = Arc::default();
        let plan = Arc::new(Mutex::new(statuses));
        let seen2 = seen.clone();
        let app = axum::Router::new().route(
            "/hooks/secret-path",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (seen, plan) = (seen2.clone(), plan.clone());
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    seen.lock().unwrap().push((body, auth));
                    let mut plan = plan.lock().unwrap();
                    let code = if plan.is_empty() { 200 } else { plan.remove(0) };
                    StatusCode::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hooks/secret-path"), seen)
    }

    fn quick() -> Notifier {
        Notifier::with_backoff(Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        })
        .unwrap()
    }

    fn applied() -> Event {
        Event::new(
            EventType::Applied,
            "prod",
            "5e3b0d1f",
            "3 changes applied",
            SystemTime::now(),
        )
    }

    #[tokio::test]
    async fn an_event_is_retried_after_a_failure_and_then_delivered() {
        let (url, seen) = receiver(vec![503]).await;
        let mut target = NotificationTarget::new(url);
        target.token = Some(SecretRef::Env("FLEETFORM_TEST_NOTIFY_TOKEN_UNSET".into()));
        // The token is resolved before anything is sent.
        let err = quick()
            .send(&target, &applied(), &crate::secret::LocalSecrets::default())
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Secret { .. }), "{err:?}");
        assert!(seen.lock().unwrap().is_empty());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
        target.token = Some(SecretRef::File(dir.path().join("token")));
        let secrets = crate::secret::LocalSecrets::new(dir.path());
        let delivery = quick().send(&target, &applied(), &secrets).await.unwrap();
        assert_eq!(delivery.attempts, 2);
        assert_eq!(delivery.status, 200);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let body: serde_json::Value = serde_json::from_str(&seen[1].0).unwrap();
        assert_eq!(body["apiVersion"], "fleetform.dev/v1alpha1");
        assert_eq!(body["kind"], "Event");
        assert_eq!(body["type"], "applied");
        assert_eq!(body["fleet"], "prod");
        assert_eq!(body["revision"], "5e3b0d1f");
        assert_eq!(seen[1].1.as_deref(), Some("Bearer t0ken"));
    }

    #[tokio::test]
    async fn a_client_error_is_not_retried_and_the_url_path_is_not_shown() {
        let (url, seen) = receiver(vec![400]).await;
        let err = quick()
            .send(
                &NotificationTarget::new(url),
                &applied(),
                &crate::secret::LocalSecrets::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, NotifyError::Refused { status: 400, .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains("secret-path"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let (url, seen) = receiver(vec![500, 502, 503, 504, 500]).await;
        let mut target = NotificationTarget::new(url);
        target.max_attempts = 3;
        let err = quick()
            .send(&target, &applied(), &crate::secret::LocalSecrets::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, NotifyError::GaveUp { attempts: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("HTTP 503"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn targets_get_only_the_event_types_they_asked_for() {
        let (url, seen) = receiver(vec![]).await;
        let mut only_failures = NotificationTarget::new(url);
        only_failures.events = vec![EventType::Failed];
        let results = quick()
            .send_all(
                &[only_failures],
                &applied(),
                &crate::secret::LocalSecrets::default(),
            )
            .await;
        assert!(results.is_empty());
        assert!(seen.lock().unwrap().is_empty());
    }
}
