//! A small client for the parts of the OCI distribution protocol the provider needs: resolve a
//! tag to a digest with a manifest `HEAD`, authenticating with HTTP basic or with the Docker
//! token flow (401 + `WWW-Authenticate: Bearer realm,service,scope` -> token from the realm
//! with basic credentials -> bearer), as nvcr.io does.
//!
//! Written over reqwest rather than oci-client 0.18 because the provider must tell apart
//! what oci-client folds together (see docs/providers/ngc.md): `insufficient_scope` vs bad
//! credentials on a 401, a token endpoint's 401 vs 5xx, `Retry-After`; and it must resolve a
//! digest with `HEAD` only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fleetform_contract::Sensitive;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use tokio::sync::{Mutex, Semaphore};

use crate::spec::RegistrySpec;

/// The manifest media types a `HEAD` must accept: without them distribution answers 404
/// (or converts to schema 1).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Per-request timeout (the whole exchange) and connect timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight to one registry endpoint at once, across tenants.
pub const MAX_CONCURRENT_PER_REGISTRY: usize = 4;

/// Why a registry call failed. Never holds a credential or a server body.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The manifest (tag) does not exist (404).
    #[error("manifest not found")]
    NotFound,
    /// The credentials were rejected (basic 401, or the token endpoint answered 401/403), or
    /// the registry wants credentials and none were given.
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials are valid but do not grant pull on this repository
    /// (`error="insufficient_scope"`, or a token without the requested access).
    #[error("insufficient_scope")]
    InsufficientScope,
    /// 403 or another 4xx that retrying will not fix.
    #[error("registry answered HTTP {status}")]
    Rejected {
        /// The HTTP status.
        status: u16,
    },
    /// 429, 5xx, a timeout or a connection failure: worth retrying.
    #[error("{what}")]
    Transient {
        /// What failed.
        what: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// The transport error, if any.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The spec or the server's answer makes no sense (bad endpoint, bad CA bundle, no digest).
    #[error("{0}")]
    Invalid(String),
}

impl RegistryError {
    fn transport(what: &str, e: reqwest::Error) -> Self {
        // reqwest errors carry the URL (no credentials: they never go in URLs here).
        RegistryError::Transient {
            what: format!("{what}: {}", kind_of(&e)),
            retry_after: None,
            source: Some(e),
        }
    }

    fn status(what: &str, status: StatusCode, headers: &HeaderMap) -> Self {
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            RegistryError::Transient {
                what: format!("{what}: registry answered HTTP {}", status.as_u16()),
                retry_after: retry_after(headers),
                source: None,
            }
        } else {
            RegistryError::Rejected {
                status: status.as_u16(),
            }
        }
    }
}

fn kind_of(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by registries in practice and is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Username and password (or NGC API key) for one registry.
#[derive(Clone)]
pub struct BasicCredentials {
    /// The username (`$oauthtoken` for nvcr.io).
    pub username: String,
    /// The password or API key.
    pub password: Sensitive<String>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// How the last answer told us to authenticate.
#[derive(Clone)]
enum CachedAuth {
    Basic,
    Bearer {
        token: Sensitive<String>,
        until: Instant,
    },
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Default, PartialEq)]
struct Challenge {
    scheme: String,
    params: HashMap<String, String>,
}

/// Parses `Bearer realm="x",service="y",scope="repository:a:pull,push",error="insufficient_scope"`.
fn parse_challenge(h: &str) -> Challenge {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                    .collect::<String>()
                    .trim()
                    .to_string();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    }
}

/// The token endpoint's answer (`token` per the Docker spec, `access_token` per OAuth 2).
#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// One registry endpoint as one set of credentials sees it. Caches how to authenticate
/// (basic, or a bearer token per repository until it expires).
pub struct RegistryClient {
    http: reqwest::Client,
    scheme: String,
    host: String,
    credentials: Option<BasicCredentials>,
    auth: Mutex<HashMap<String, CachedAuth>>,
    limit: Arc<Semaphore>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("endpoint", &format_args!("{}://{}", self.scheme, self.host))
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// Builds the HTTP client for a registry spec (TLS roots, `insecure`, timeouts).
pub fn http_client(registry: &RegistrySpec) -> Result<reqwest::Client, RegistryError> {
    // reqwest is built without a default rustls provider; use ring (no C toolchain needed).
    // Installing fails harmlessly when a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("fleetform-ngc/", env!("CARGO_PKG_VERSION")))
        // Registries redirect blob GETs to storage; a manifest HEAD is not redirected in
        // practice, and credentials must not follow a redirect to another host.
        .redirect(reqwest::redirect::Policy::none());
    if registry.insecure {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    if let Some(path) = &registry.ca_bundle {
        let pem = std::fs::read(path).map_err(|e| {
            RegistryError::Invalid(format!("cannot read caBundle {}: {e}", path.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
            RegistryError::Invalid(format!(
                "caBundle {} holds no valid PEM certificate",
                path.display()
            ))
        })?;
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| {
        RegistryError::Invalid(format!("cannot build an HTTP client: {}", kind_of(&e)))
    })
}

impl RegistryClient {
    /// A client for `registry` with `credentials`; `limit` bounds requests in flight to this
    /// registry (share it between clients of the same endpoint).
    pub fn new(
        registry: &RegistrySpec,
        credentials: Option<BasicCredentials>,
        limit: Arc<Semaphore>,
    ) -> Result<Self, RegistryError> {
        let (scheme, host) = registry.parse_endpoint().map_err(RegistryError::Invalid)?;
        Ok(Self {
            http: http_client(registry)?,
            scheme: scheme.to_string(),
            host: host.to_string(),
            credentials,
            auth: Mutex::new(HashMap::new()),
            limit,
        })
    }

    /// `host[:port]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Resolves `repository:tag` (or `repository@digest`) to the manifest digest with a
    /// `HEAD` request, falling back to a `GET` (hashing the body) only if the registry sends
    /// no `Docker-Content-Digest`.
    pub async fn resolve_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<String, RegistryError> {
        let url = format!(
            "{}://{}/v2/{repository}/manifests/{reference}",
            self.scheme, self.host
        );
        let (status, headers, _) = self.send(Method::HEAD, &url, repository, "pull").await?;
        match status {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Err(RegistryError::NotFound),
            s => return Err(RegistryError::status("manifest HEAD", s, &headers)),
        }
        if let Some(d) = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            return Ok(d.trim().to_string());
        }
        let (status, headers, body) = self.send(Method::GET, &url, repository, "pull").await?;
        match status {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Err(RegistryError::NotFound),
            s => return Err(RegistryError::status("manifest GET", s, &headers)),
        }
        use sha2::Digest as _;
        Ok(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(&body))
        ))
    }

    /// Sends one request, authenticating as the registry asks; returns status, headers and
    /// body (empty for HEAD). 401 outcomes become errors here; other statuses are the caller's.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        repository: &str,
        actions: &str,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), RegistryError> {
        self.send_with_body(method, url, repository, actions, None, None)
            .await
    }

    /// [`Self::send`] with a request body and content type (used by tests to push).
    pub async fn send_with_body(
        &self,
        method: Method,
        url: &str,
        repository: &str,
        actions: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), RegistryError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| RegistryError::Invalid("client closed".into()))?;
        let cache_key = format!("{repository}:{actions}");
        let cached = self
            .auth
            .lock()
            .await
            .get(&cache_key)
            .cloned()
            .filter(|a| match a {
                CachedAuth::Bearer { until, .. } => *until > Instant::now(),
                CachedAuth::Basic => true,
            });
        let mut sent_fresh = false;
        let mut auth = cached;
        // At most: unauthenticated/cached try, then one with fresh auth.
        for _ in 0..2 {
            let mut req = self
                .http
                .request(method.clone(), url)
                .header(ACCEPT, MANIFEST_ACCEPT);
            if let Some(ct) = content_type {
                req = req.header(reqwest::header::CONTENT_TYPE, ct);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let sent_auth = auth.clone();
            match &auth {
                Some(CachedAuth::Basic) => {
                    if let Some(c) = &self.credentials {
                        req = req.basic_auth(&c.username, Some(c.password.expose()));
                    }
                }
                Some(CachedAuth::Bearer { token, .. }) => {
                    req = req.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
                }
                None => {}
            }
            let resp = req
                .send()
                .await
                .map_err(|e| RegistryError::transport("registry request", e))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            if status != StatusCode::UNAUTHORIZED {
                let body = if method == Method::HEAD {
                    Vec::new()
                } else {
                    resp.bytes()
                        .await
                        .map_err(|e| RegistryError::transport("reading the registry's answer", e))?
                        .to_vec()
                };
                return Ok((status, headers, body));
            }
            tracing::debug!(registry = %self.host, %method, repository, "registry answered 401");
            let challenge = headers
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(parse_challenge)
                .unwrap_or_default();
            if challenge
                .params
                .get("error")
                .is_some_and(|e| e == "insufficient_scope")
                && matches!(sent_auth, Some(CachedAuth::Bearer { .. }))
            {
                return Err(RegistryError::InsufficientScope);
            }
            if sent_fresh {
                // Fresh credentials were just refused.
                self.auth.lock().await.remove(&cache_key);
                return Err(match sent_auth {
                    Some(CachedAuth::Bearer { .. })
                        if challenge.params.get("error").is_some_and(|e| e == "invalid_token") =>
                    {
                        RegistryError::Invalid(
                            "the registry refused the token its own token service issued (invalid_token)".into(),
                        )
                    }
                    // A freshly issued token was refused without an error code: the issuer
                    // granted nothing usable for this repository.
                    Some(CachedAuth::Bearer { .. }) => RegistryError::InsufficientScope,
                    _ => RegistryError::Unauthorized("basic authentication failed (HTTP 401)".into()),
                });
            }
            auth = Some(match challenge.scheme.as_str() {
                "bearer" => {
                    let scope = challenge
                        .params
                        .get("scope")
                        .cloned()
                        .unwrap_or_else(|| format!("repository:{repository}:{actions}"));
                    self.fetch_token(&challenge, &scope).await?
                }
                "basic" => {
                    if self.credentials.is_none() {
                        return Err(RegistryError::Unauthorized(
                            "the registry requires credentials and none are configured".into(),
                        ));
                    }
                    CachedAuth::Basic
                }
                other => {
                    return Err(RegistryError::Invalid(format!(
                        "registry answered 401 with an unsupported authentication scheme `{other}`"
                    )));
                }
            });
            sent_fresh = true;
            if let Some(a) = &auth {
                self.auth.lock().await.insert(cache_key.clone(), a.clone());
            }
        }
        Err(RegistryError::Unauthorized(
            "authentication failed (HTTP 401)".into(),
        ))
    }

    /// Asks the challenge's realm for a token for `scope`, with basic credentials if any.
    async fn fetch_token(
        &self,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<CachedAuth, RegistryError> {
        let Some(realm) = challenge.params.get("realm").filter(|r| !r.is_empty()) else {
            return Err(RegistryError::Invalid(
                "registry sent a Bearer challenge without a realm".into(),
            ));
        };
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(RegistryError::Invalid(format!(
                "token realm `{realm}` is not an http(s) URL"
            )));
        }
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(service) = challenge.params.get("service") {
            query.push(("service", service));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some(c) = &self.credentials {
            req = req.basic_auth(&c.username, Some(c.password.expose()));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| RegistryError::transport("token request", e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized(if self.credentials.is_some() {
                format!("its token service refused them (HTTP {})", status.as_u16())
            } else {
                "the token service requires credentials and none are configured".into()
            }));
        }
        if !status.is_success() {
            return Err(RegistryError::status("token request", status, &headers));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| RegistryError::transport("reading the token", e))?;
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            RegistryError::Invalid(
                "the token service answered something that is not a token".into(),
            )
        })?;
        let Some(token) = t.token.or(t.access_token).filter(|t| !t.is_empty()) else {
            return Err(RegistryError::Invalid(
                "the token service answered without a token".into(),
            ));
        };
        // Default lifetime per the Docker token spec is 60 s; keep a margin.
        let ttl = Duration::from_secs(t.expires_in.unwrap_or(60).saturating_sub(10).max(1));
        tracing::debug!(registry = %self.host, scope, ttl_s = ttl.as_secs(), "registry token issued");
        Ok(CachedAuth::Bearer {
            token: Sensitive::new(token),
            until: Instant::now() + ttl,
        })
    }
}

/// `Basic base64(user:pass)`, as used in `.dockerconfigjson` `auth`.
pub(crate) fn basic_auth_value(username: &str, password: &Sensitive<String>) -> Sensitive<String> {
    Sensitive::new(STANDARD.encode(format!("{username}:{}", password.expose())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_quoted_commas_parses() {
        let c = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:5001/token",service="reg",scope="repository:acme/x:pull,push",error="insufficient_scope""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "http://127.0.0.1:5001/token");
        assert_eq!(c.params["service"], "reg");
        assert_eq!(c.params["scope"], "repository:acme/x:pull,push");
        assert_eq!(c.params["error"], "insufficient_scope");
    }

    #[test]
    fn basic_challenge_parses() {
        let c = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "basic-realm");
    }

    #[test]
    fn retry_after_seconds_are_read() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let e = RegistryError::status("x", StatusCode::SERVICE_UNAVAILABLE, &h);
        assert!(
            matches!(e, RegistryError::Transient { retry_after: Some(d), .. } if d == Duration::from_secs(7))
        );
        assert!(matches!(
            RegistryError::status("x", StatusCode::FORBIDDEN, &h),
            RegistryError::Rejected { status: 403 }
        ));
    }
}
