//! The HTTP side: one client per BMC, bounded concurrency, timeouts, retries
//! for reads, session or basic authentication, and error classification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetform_contract::provider::ProviderError;
use fleetform_contract::resource::ResourceId;
use fleetform_contract::sensitive::Sensitive;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits and timeouts of the provider's HTTP traffic.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Requests in flight to one BMC endpoint at once (BMCs are small computers).
    pub per_bmc_in_flight: usize,
    /// Requests in flight to all BMCs at once.
    pub global_in_flight: usize,
    /// Timeout of one HTTP request (connect + response).
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Extra attempts for GETs on 5xx / connection errors.
    pub get_retries: u32,
    /// First backoff between GET retries (doubles each time).
    pub retry_backoff: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            per_bmc_in_flight: 2,
            global_in_flight: 64,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            get_retries: 2,
            retry_backoff: Duration::from_millis(300),
        }
    }
}

/// What a failed request looked like, before it becomes a `ProviderError`.
#[derive(Debug)]
pub enum HttpError {
    /// Could not connect, or the connection dropped, or timed out: the
    /// request may or may not have reached the BMC.
    Unreachable {
        url: String,
        timed_out: bool,
        source: reqwest::Error,
    },
    /// The BMC answered with an error status.
    Status {
        url: String,
        method: Method,
        status: StatusCode,
        message: String,
    },
    /// The body was not the JSON we expected.
    Body { url: String, why: String },
    /// Local problem (bad URL, bad CA bundle).
    Local(String),
}

impl HttpError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self.status(),
            Some(
                StatusCode::NOT_FOUND
                    | StatusCode::NOT_IMPLEMENTED
                    | StatusCode::METHOD_NOT_ALLOWED
            )
        )
    }

    /// The error as the engine sees it, worded for the host `host` and user `user`.
    pub fn into_provider(self, id: &ResourceId, host: &str, user: &str) -> ProviderError {
        match self {
            HttpError::Unreachable { url, source, .. } if tls_failure(&source) => ProviderError::permanent(
                id,
                format!(
                    "host {host}: TLS verification of the BMC failed ({url}): set bmc.caBundle to its CA \
                     (or, only for lab gear, bmc.insecure: true)"
                ),
            )
            .with_source(source),
            HttpError::Unreachable { url, timed_out, source } => {
                let what = if timed_out { "timed out" } else { "is unreachable" };
                ProviderError::transient(id, format!("host {host}: BMC {what} ({url})")).with_source(source)
            }
            HttpError::Status { status, .. } if status == StatusCode::UNAUTHORIZED => {
                ProviderError::permanent(id, format!("host {host}: BMC rejected the credentials (user {user})"))
            }
            HttpError::Status { status, .. } if status == StatusCode::FORBIDDEN => ProviderError::permanent(
                id,
                format!("host {host}: BMC refused the request: user {user} lacks the privilege (403)"),
            ),
            HttpError::Status { url, method, status, message } => {
                let msg = format!("host {host}: {method} {url} answered {status}{}", fmt_msg(&message));
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    ProviderError::transient(id, msg)
                } else {
                    ProviderError::permanent(id, msg)
                }
            }
            HttpError::Body { url, why } => {
                ProviderError::permanent(id, format!("host {host}: unexpected answer from {url}: {why}"))
            }
            HttpError::Local(why) => ProviderError::permanent(id, format!("host {host}: {why}")),
        }
    }
}

/// True when a connection failed on certificate verification (not worth retrying).
fn tls_failure(e: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if s.contains("certificate")
            || s.contains("UnknownIssuer")
            || s.contains("invalid peer certificate")
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn fmt_msg(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

/// The Redfish error message of a body (`error.@Message.ExtendedInfo[].Message` or `error.message`).
fn redfish_message(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return body
            .chars()
            .take(200)
            .collect::<String>()
            .trim()
            .to_string();
    };
    let err = v.get("error").unwrap_or(&v);
    let mut parts = Vec::new();
    if let Some(infos) = err.get("@Message.ExtendedInfo").and_then(Value::as_array) {
        for i in infos {
            if let Some(m) = i.get("Message").and_then(Value::as_str) {
                parts.push(m.to_string());
            }
        }
    }
    if parts.is_empty()
        && let Some(m) = err.get("message").and_then(Value::as_str)
    {
        parts.push(m.to_string());
    }
    parts.join("; ")
}

/// A successful response.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// How requests authenticate.
#[derive(Clone)]
enum Auth {
    Basic {
        user: String,
        password: Sensitive<String>,
    },
    Token(Sensitive<String>),
}

/// Process-wide limits: one semaphore per endpoint and one global.
pub struct Limits {
    config: ClientConfig,
    global: Arc<Semaphore>,
    per_endpoint: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Limits {
    pub fn new(config: ClientConfig) -> Self {
        Self {
            global: Arc::new(Semaphore::new(config.global_in_flight.max(1))),
            per_endpoint: Mutex::new(HashMap::new()),
            config,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn endpoint(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self.per_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_bmc_in_flight.max(1))))
            .clone()
    }
}

/// One BMC endpoint's HTTP client (TLS settings baked in).
pub struct BmcHttp {
    base: url::Url,
    http: reqwest::Client,
    limits: Arc<Limits>,
    endpoint_sem: Arc<Semaphore>,
}

impl BmcHttp {
    /// Builds the client. `ca_pem` replaces the trusted roots; `insecure` disables verification.
    pub fn new(
        endpoint: &str,
        ca_pem: Option<&[u8]>,
        insecure: bool,
        limits: Arc<Limits>,
    ) -> Result<Self, HttpError> {
        install_crypto_provider();
        let base = url::Url::parse(endpoint.trim_end_matches('/')).map_err(|e| {
            HttpError::Local(format!("BMC endpoint `{endpoint}` is not a URL: {e}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(HttpError::Local(format!(
                "BMC endpoint `{endpoint}` must be http:// or https://"
            )));
        }
        let cfg = limits.config().clone();
        let mut b = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.connect_timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .pool_max_idle_per_host(cfg.per_bmc_in_flight.max(1))
            .user_agent(concat!("fleetform-redfish/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| HttpError::Local(format!("CA bundle is not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(HttpError::Local("CA bundle holds no certificate".into()));
            }
            b = b.tls_certs_only(certs);
        }
        if insecure {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let http = b
            .build()
            .map_err(|e| HttpError::Local(format!("cannot build the HTTP client: {e}")))?;
        let endpoint_sem = limits.endpoint(base.as_str());
        Ok(Self {
            base,
            http,
            limits,
            endpoint_sem,
        })
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// Resolves an `@odata.id` (absolute path) or a full URL against the endpoint.
    pub fn url(&self, path: &str) -> Result<url::Url, HttpError> {
        self.base
            .join(path)
            .map_err(|e| HttpError::Local(format!("bad Redfish path `{path}`: {e}")))
    }

    async fn permits(&self) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        // Endpoint first: a slow BMC must not hold global slots while it waits.
        #[allow(clippy::expect_used)]
        let e = self
            .endpoint_sem
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        #[allow(clippy::expect_used)]
        let g = self
            .limits
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        (e, g)
    }

    async fn once(
        &self,
        auth: Option<&Auth>,
        method: &Method,
        url: &url::Url,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Response, HttpError> {
        let _permits = self.permits().await;
        let mut rq = self
            .http
            .request(method.clone(), url.clone())
            .header("Accept", "application/json");
        match auth {
            Some(Auth::Basic { user, password }) => {
                rq = rq.basic_auth(user, Some(password.expose()))
            }
            Some(Auth::Token(t)) => rq = rq.header("X-Auth-Token", t.expose().as_str()),
            None => {}
        }
        if let Some(b) = body {
            rq = rq.json(b);
        }
        if let Some(tag) = if_match {
            rq = rq.header("If-Match", tag);
        }
        let resp = rq.send().await.map_err(|e| HttpError::Unreachable {
            url: url.to_string(),
            timed_out: e.is_timeout(),
            source: e,
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| HttpError::Unreachable {
            url: url.to_string(),
            timed_out: e.is_timeout(),
            source: e,
        })?;
        if !status.is_success() {
            return Err(HttpError::Status {
                url: url.to_string(),
                method: method.clone(),
                status,
                message: redfish_message(&text),
            });
        }
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| HttpError::Body {
                url: url.to_string(),
                why: format!("not JSON: {e}"),
            })?
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn install_crypto_provider() {
    // reqwest is built without a default provider; ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An authenticated conversation with one BMC for one operation. A Redfish
/// session (when the BMC has a SessionService) is deleted when the
/// conversation ends: by `close`, or by `Drop` on every other path.
pub struct Conn {
    http: Arc<BmcHttp>,
    auth: Auth,
    session: Option<SessionGuard>,
    /// The service root (`/redfish/v1`).
    pub root: Value,
    pub user: String,
}

struct SessionGuard {
    http: Arc<BmcHttp>,
    location: url::Url,
    token: Sensitive<String>,
    closed: bool,
}

impl SessionGuard {
    async fn delete(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let auth = Auth::Token(self.token.clone());
        if let Err(e) = self
            .http
            .once(Some(&auth), &Method::DELETE, &self.location, None, None)
            .await
        {
            tracing::warn!(session = %self.location, error = ?e, "could not delete the Redfish session");
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let http = self.http.clone();
        let location = self.location.clone();
        let auth = Auth::Token(self.token.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = http.once(Some(&auth), &Method::DELETE, &location, None, None).await {
                    tracing::warn!(session = %location, error = ?e, "could not delete the Redfish session");
                }
            });
        } else {
            tracing::warn!(session = %location, "no runtime to delete the Redfish session; it will time out on the BMC");
        }
    }
}

/// How the conversation authenticated (reported in docs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Session,
    Basic,
}

impl Conn {
    /// Reads the service root and logs in: a session when the root links a
    /// SessionService (`Links.Sessions` or `SessionService/Sessions`), basic auth otherwise.
    pub async fn open(
        http: Arc<BmcHttp>,
        user: &str,
        password: Sensitive<String>,
    ) -> Result<Self, HttpError> {
        let basic = Auth::Basic {
            user: user.to_string(),
            password: password.clone(),
        };
        let root_url = http.url("/redfish/v1/")?;
        // The root is open on most BMCs; some want credentials even there.
        let root = match get_with_retries(&http, None, &root_url).await {
            Ok(r) => r.body,
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {
                get_with_retries(&http, Some(&basic), &root_url).await?.body
            }
            Err(e) => return Err(e),
        };
        let sessions = odata_id(root.pointer("/Links/Sessions")).map(str::to_string);
        let sessions = match sessions {
            Some(s) => Some(s),
            None => match odata_id(root.get("SessionService")) {
                Some(ss) => {
                    let u = http.url(ss)?;
                    match get_with_retries(&http, Some(&basic), &u).await {
                        Ok(r) => odata_id(r.body.get("Sessions")).map(str::to_string),
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(e),
                    }
                }
                None => None,
            },
        };
        let Some(sessions) = sessions else {
            return Ok(Self {
                http,
                auth: basic,
                session: None,
                root,
                user: user.to_string(),
            });
        };
        let url = http.url(&sessions)?;
        let body = json!({"UserName": user, "Password": password.expose()});
        let resp = http
            .once(None, &Method::POST, &url, Some(&body), None)
            .await?;
        let token = resp.header("X-Auth-Token").ok_or_else(|| HttpError::Body {
            url: url.to_string(),
            why: "session created without an X-Auth-Token header".into(),
        })?;
        let location = resp.header("Location").or_else(|| {
            odata_id(resp.body.get("@odata.id").map(|_| &resp.body)).map(str::to_string)
        });
        let token = Sensitive::new(token);
        let session = match location {
            Some(loc) => Some(SessionGuard {
                http: http.clone(),
                location: http.url(&loc)?,
                token: token.clone(),
                closed: false,
            }),
            None => {
                tracing::warn!(endpoint = %http.base(), "session created without a Location: cannot delete it");
                None
            }
        };
        Ok(Self {
            http,
            auth: Auth::Token(token),
            session,
            root,
            user: user.to_string(),
        })
    }

    pub fn auth_mode(&self) -> AuthMode {
        match self.auth {
            Auth::Token(_) => AuthMode::Session,
            Auth::Basic { .. } => AuthMode::Basic,
        }
    }

    pub fn http(&self) -> &BmcHttp {
        &self.http
    }

    /// Ends the conversation (deletes the session, if any).
    pub async fn close(mut self) {
        if let Some(mut s) = self.session.take() {
            s.delete().await;
        }
    }

    /// GET with retries (5xx, 429, connection errors) and backoff.
    pub async fn get(&self, path: &str) -> Result<Response, HttpError> {
        let url = self.http.url(path)?;
        get_with_retries(&self.http, Some(&self.auth), &url).await
    }

    /// PATCH once (with `If-Match` when an ETag is known).
    pub async fn patch(
        &self,
        path: &str,
        body: &Value,
        etag: Option<&str>,
    ) -> Result<Response, HttpError> {
        let url = self.http.url(path)?;
        self.http
            .once(Some(&self.auth), &Method::PATCH, &url, Some(body), etag)
            .await
    }

    /// POST once: never retried (actions are not idempotent).
    pub async fn post(&self, path: &str, body: &Value) -> Result<Response, HttpError> {
        let url = self.http.url(path)?;
        self.http
            .once(Some(&self.auth), &Method::POST, &url, Some(body), None)
            .await
    }
}

async fn get_with_retries(
    http: &BmcHttp,
    auth: Option<&Auth>,
    url: &url::Url,
) -> Result<Response, HttpError> {
    let cfg = http.limits.config();
    let mut delay = cfg.retry_backoff;
    let mut attempt = 0;
    loop {
        match http.once(auth, &Method::GET, url, None, None).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                let retryable = match &e {
                    HttpError::Unreachable { .. } => true,
                    HttpError::Status { status, .. } => {
                        (status.is_server_error() && *status != StatusCode::NOT_IMPLEMENTED)
                            || *status == StatusCode::TOO_MANY_REQUESTS
                    }
                    _ => false,
                };
                if !retryable || attempt >= cfg.get_retries {
                    return Err(e);
                }
                attempt += 1;
                tracing::debug!(url = %url, attempt, "retrying GET after {e:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// `{"@odata.id": "..."}` -> the path.
pub fn odata_id(v: Option<&Value>) -> Option<&str> {
    v?.get("@odata.id")?.as_str()
}

/// The `@odata.id` of every member of a Redfish collection, in order.
pub fn members(collection: &Value) -> Vec<String> {
    collection
        .get("Members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| odata_id(Some(m)).map(str::to_string))
        .collect()
}
