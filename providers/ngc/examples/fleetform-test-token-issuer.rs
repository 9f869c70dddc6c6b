//! TEST-ONLY token issuer for a Docker distribution registry in token-auth mode, as nvcr.io
//! works: `GET /token?service=..&scope=repository:<name>:pull` with basic credentials
//! (`$oauthtoken` + an API key) answers `{"token", "access_token", "expires_in"}`, a JWT (RS256,
//! `x5c` = the DER of the registry's `rootcertbundle` certificate) whose `access` claim grants
//! only what the key's tenant may do (a JSON map `key -> {tenant, pull: [prefix], push: [prefix]}`).
//! A scope the tenant may not have is left out of the token, so the registry answers
//! `insufficient_scope`; bad credentials get 401. Started by `tests/peers/registry.sh`; never
//! use it for anything real (no rate limits, keys in a plain file, no key rotation).
//!
//! Usage: fleetform-test-token-issuer --listen 127.0.0.1:PORT --issuer ISS --service SVC
//!        --key-der signing-key.der (PKCS#8) --cert-der signing-cert.der --tenants tenants.json
#![allow(clippy::unwrap_used)] // test support: start-up failures should stop it loudly
#![allow(clippy::result_large_err)] // the Err is the HTTP answer itself; one per request

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Grant {
    tenant: String,
    #[serde(default)]
    pull: Vec<String>,
    #[serde(default)]
    push: Vec<String>,
}

struct Issuer {
    issuer: String,
    service: String,
    key: RsaKeyPair,
    cert_b64: String,
    tenants: HashMap<String, Grant>,
    rng: SystemRandom,
}

fn arg(args: &[String], name: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| panic!("missing {name}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let key_der = std::fs::read(arg(&args, "--key-der")).unwrap();
    let cert_der = std::fs::read(arg(&args, "--cert-der")).unwrap();
    let tenants: HashMap<String, Grant> =
        serde_json::from_slice(&std::fs::read(arg(&args, "--tenants")).unwrap()).unwrap();
    let state = Arc::new(Issuer {
        issuer: arg(&args, "--issuer"),
        service: arg(&args, "--service"),
        key: RsaKeyPair::from_pkcs8(&key_der).unwrap(),
        cert_b64: STANDARD.encode(cert_der),
        tenants,
        rng: SystemRandom::new(),
    });
    let app = axum::Router::new()
        .route("/token", get(token))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(arg(&args, "--listen"))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"fleetform-test-token-issuer\"",
        )],
        axum::Json(json!({"errors": [{"code": "UNAUTHORIZED", "message": why}]})),
    )
        .into_response()
}

/// The tenant grant for the request's basic credentials; `Ok(None)` for anonymous.
fn authenticate<'a>(st: &'a Issuer, headers: &HeaderMap) -> Result<Option<&'a Grant>, Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("bad authorization header"))?;
    let Some(b64) = value.strip_prefix("Basic ") else {
        return Err(unauthorized("basic credentials expected"));
    };
    let decoded = STANDARD
        .decode(b64.trim())
        .map_err(|_| unauthorized("bad basic credentials"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| unauthorized("bad basic credentials"))?;
    let Some((user, key)) = decoded.split_once(':') else {
        return Err(unauthorized("bad basic credentials"));
    };
    if user != "$oauthtoken" {
        return Err(unauthorized("username must be $oauthtoken"));
    }
    match st.tenants.get(key) {
        Some(grant) => Ok(Some(grant)),
        None => Err(unauthorized("invalid API key")),
    }
}

async fn token(
    State(st): State<Arc<Issuer>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let who = match authenticate(&st, &headers) {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let mut service = None;
    let mut access = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "service" => service = Some(v.into_owned()),
            "scope" => {
                // repository:<name>:<actions>; the name may hold no ':' (no port in repo names).
                let mut parts = v.splitn(3, ':');
                let (Some(kind), Some(name), Some(actions)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if kind != "repository" {
                    continue;
                }
                let allowed: Vec<&str> = actions
                    .split(',')
                    .filter(|a| {
                        let prefixes = match (who, *a) {
                            (Some(g), "pull") => &g.pull,
                            (Some(g), "push") => &g.push,
                            _ => return false,
                        };
                        prefixes.iter().any(|p| name.starts_with(p.as_str()))
                    })
                    .collect();
                access.push(json!({"type": "repository", "name": name, "actions": allowed}));
            }
            _ => {}
        }
    }
    if service.as_deref().is_some_and(|s| s != st.service) {
        return (StatusCode::BAD_REQUEST, "unknown service").into_response();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut jti = [0u8; 16];
    ring::rand::SecureRandom::fill(&st.rng, &mut jti).unwrap();
    let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [st.cert_b64]});
    let claims = json!({
        "iss": st.issuer,
        "sub": who.map_or("anonymous", |g| g.tenant.as_str()),
        "aud": st.service,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": hex_encode(&jti),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; st.key.public().modulus_len()];
    st.key
        .sign(
            &RSA_PKCS1_SHA256,
            &st.rng,
            signing_input.as_bytes(),
            &mut sig,
        )
        .unwrap();
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
    axum::Json(json!({"token": jwt, "access_token": jwt, "expires_in": 300})).into_response()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
