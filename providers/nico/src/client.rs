//! A NICo REST client written from the spec (API 1.5.0): bearer-token auth, every list read
//! page by page (`pageNumber`/`pageSize` ≤ 100, total from the `X-Pagination` header),
//! `Retry-After` honoured on 429 and transient 5xx, and a per-site rate limit.

use std::sync::Arc;
use std::time::Duration;

use fleetform_contract::sensitive::Sensitive;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The spec's `pageSize` maximum.
pub const PAGE_SIZE: u32 = 100;
/// Requests per second to one site.
pub const RATE_PER_SECOND: f64 = 10.0;
/// Requests one site may receive at once after a quiet spell.
pub const BURST: f64 = 30.0;
/// Longest `Retry-After` fleetform waits in one call; longer ones end the call as transient.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Retries of one request on 429 / transient 5xx.
const MAX_RETRIES: u32 = 4;
/// Restarts of a paged list whose total changed while it was read.
const MAX_LIST_RESTARTS: u32 = 3;

/// A token bucket: [`RATE_PER_SECOND`] requests per second, bursts of [`BURST`].
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<(f64, Instant)>,
    rate: f64,
    burst: f64,
}

impl RateLimiter {
    /// A bucket refilled at `rate` per second, holding at most `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            state: Mutex::new((burst, Instant::now())),
            rate,
            burst,
        }
    }

    /// Waits for one token.
    pub async fn acquire(&self) {
        let mut s = self.state.lock().await;
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst);
        s.1 = now;
        if s.0 < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - s.0) / self.rate);
            // Holding the lock while sleeping keeps waiters in order.
            tokio::time::sleep(wait).await;
            s.0 = 1.0;
            s.1 = Instant::now();
        }
        s.0 -= 1.0;
    }
}

/// A failed NICo request. Carries no token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// NICo answered with an error status; `message` and `data` are from its
    /// `{source, message, data}` body.
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status {
        /// The method.
        method: String,
        /// The path below the org.
        path: String,
        /// The status code.
        status: u16,
        /// NICo's message (or the body when it was not NICo's error shape).
        message: String,
        /// NICo's `data` (field errors of a 400).
        data: Value,
        /// The `Retry-After` it asked for.
        retry_after: Option<Duration>,
    },
    /// No answer (connection refused or dropped, timeout).
    #[error("{method} {path}: no answer from NICo")]
    Transport {
        /// The method.
        method: String,
        /// The path below the org.
        path: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the spec says.
    #[error("{method} {path}: unexpected answer: {why}")]
    Decode {
        /// The method.
        method: String,
        /// The path below the org.
        path: String,
        /// What was wrong.
        why: String,
    },
    /// The call's deadline passed while waiting to retry.
    #[error("{method} {path}: gave up after the call's deadline ({last})")]
    Deadline {
        /// The method.
        method: String,
        /// The path below the org.
        path: String,
        /// The last failure.
        last: String,
        /// The delay NICo last asked for.
        retry_after: Option<Duration>,
    },
}

impl ApiError {
    /// The HTTP status, when NICo answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when retrying later may succeed (429, 5xx, no answer, deadline).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => is_transient_status(*status),
            ApiError::Transport { .. } | ApiError::Deadline { .. } => true,
            ApiError::Decode { .. } => false,
        }
    }

    /// The delay NICo asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } | ApiError::Deadline { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

fn is_transient_status(status: u16) -> bool {
    status == 429 || matches!(status, 500 | 502 | 503 | 504)
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The JSON body (`Null` when empty).
    pub body: Value,
    /// The parsed `X-Pagination` header, when present.
    pub pagination: Option<Value>,
}

/// A client for one org on one NICo endpoint.
#[derive(Clone)]
pub struct NicoClient {
    http: reqwest::Client,
    base: String,
    token: Arc<Sensitive<String>>,
    limiter: Arc<RateLimiter>,
}

impl std::fmt::Debug for NicoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NicoClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Builds the HTTP client every site shares.
pub fn http_client() -> reqwest::Client {
    // reqwest is built without a default rustls provider; use ring, as the other providers do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("fleetform-nico/", env!("CARGO_PKG_VERSION")))
        // The token must not follow a redirect to another host.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

impl NicoClient {
    /// A client for `org` at `endpoint` (`https://nico-rest-api…`), sharing `limiter` with
    /// every other client of the same site.
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        org: &str,
        token: Sensitive<String>,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        Self {
            http,
            base: format!("{}/v2/org/{org}/nico", endpoint.trim_end_matches('/')),
            token: Arc::new(token),
            limiter,
        }
    }

    /// One request, retried on 429 and transient 5xx (honouring `Retry-After`) until
    /// `deadline`. A POST is retried only on 429: a 5xx or a dropped connection may mean
    /// the object was created, so the caller looks it up by name before posting again.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Answer, ApiError> {
        let mut attempt = 0;
        loop {
            let err = match self.once(method.clone(), path, query, body).await {
                Ok(a) => return Ok(a),
                Err(e) => e,
            };
            let retriable = match &err {
                ApiError::Status { status, .. } if *status == 429 => true,
                ApiError::Status { status, .. } => {
                    method != Method::POST && is_transient_status(*status)
                }
                ApiError::Transport { .. } => method != Method::POST,
                _ => false,
            };
            attempt += 1;
            if !retriable || attempt > MAX_RETRIES {
                return Err(err);
            }
            let wait = err
                .retry_after()
                .unwrap_or(Duration::from_millis(200 << attempt.min(5)));
            if wait > MAX_RETRY_AFTER || Instant::now() + wait > deadline {
                return Err(ApiError::Deadline {
                    method: method.to_string(),
                    path: path.to_string(),
                    last: err.to_string(),
                    retry_after: err.retry_after(),
                });
            }
            tracing::debug!(%method, path, ?wait, "nico: retrying after {err}");
            tokio::time::sleep(wait).await;
        }
    }

    async fn once(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, ApiError> {
        self.limiter.acquire().await;
        let url = format!("{}/{}", self.base, path);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.token.expose())
            .header("Accept", "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|source| ApiError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            source,
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let pagination = resp
            .headers()
            .get("X-Pagination")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| serde_json::from_str::<Value>(v).ok());
        let bytes = resp.bytes().await.map_err(|source| ApiError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            source,
        })?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&bytes).chars().take(500).collect())
            })
        };
        if status.is_success() {
            return Ok(Answer {
                status: status.as_u16(),
                body,
                pagination,
            });
        }
        Err(status_error(&method, path, status, body, retry_after))
    }

    /// Every object of a collection, read page by page. Objects are keyed by `id`, so one
    /// that moves between pages while the list is read is not counted twice; when the
    /// total changes under the reader, the read starts again (a bounded number of times).
    pub async fn list(&self, collection: &str, deadline: Instant) -> Result<Vec<Value>, ApiError> {
        self.search(collection, None, deadline).await
    }

    /// [`NicoClient::list`] narrowed by the spec's `query` parameter (matched against the
    /// name and other fields, so a superset: callers filter exact names themselves).
    pub async fn search(
        &self,
        collection: &str,
        query: Option<&str>,
        deadline: Instant,
    ) -> Result<Vec<Value>, ApiError> {
        let mut restarts = 0;
        'read: loop {
            let mut seen = std::collections::BTreeSet::new();
            let mut out = Vec::new();
            let mut first_total = None;
            for page in 1u32.. {
                let mut params = vec![
                    ("pageNumber", page.to_string()),
                    ("pageSize", PAGE_SIZE.to_string()),
                    ("orderBy", "CREATED_ASC".to_string()),
                ];
                if let Some(q) = query {
                    params.push(("query", q.to_string()));
                }
                let a = self
                    .request(Method::GET, collection, &params, None, deadline)
                    .await?;
                let Value::Array(items) = a.body else {
                    return Err(ApiError::Decode {
                        method: "GET".into(),
                        path: collection.into(),
                        why: "a list answered with something other than an array".into(),
                    });
                };
                let total = a
                    .pagination
                    .as_ref()
                    .and_then(|p| p.get("total"))
                    .and_then(Value::as_u64);
                if page == 1 {
                    first_total = total;
                } else if total != first_total && restarts < MAX_LIST_RESTARTS {
                    restarts += 1;
                    continue 'read;
                }
                let n = items.len();
                for item in items {
                    let id = item
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    if seen.insert(id) {
                        out.push(item);
                    }
                }
                let done = match total {
                    Some(t) => (page as u64) * (PAGE_SIZE as u64) >= t,
                    None => n < PAGE_SIZE as usize,
                };
                if done || n == 0 {
                    return Ok(out);
                }
            }
            return Ok(out);
        }
    }
}

fn status_error(
    method: &Method,
    path: &str,
    status: StatusCode,
    body: Value,
    retry_after: Option<Duration>,
) -> ApiError {
    let (message, data) = match &body {
        Value::Object(m) => (
            m.get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .to_string(),
            m.get("data").cloned().unwrap_or(Value::Null),
        ),
        Value::String(s) => (s.clone(), Value::Null),
        _ => ("(no message)".to_string(), Value::Null),
    };
    ApiError::Status {
        method: method.to_string(),
        path: path.to_string(),
        status: status.as_u16(),
        message,
        data,
        retry_after,
    }
}
