//! A NICo stand-in for the provider tests: an axum server on loopback that serves the
//! paths fleetform uses, checks every request against the spec (`openapi.yaml` read from the
//! shared directory, never copied) and every answer it gives too. A request the real API would
//! reject gets the spec's error shape `{source, message, data}`; an answer outside the spec is
//! recorded as a violation, and every test asserts there are none.
//!
//! It keeps state, enforces name uniqueness (409), pages lists (`pageNumber`, `pageSize` ≤ 100,
//! `X-Pagination`), answers DELETE with 202 and removes the object a little later, moves new
//! objects from their first status to ready (or to Error), checks a locally signed JWT (HS256)
//! and its roles, and injects faults.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

/// The key the stand-in signs and checks tokens with.
const KEY: &[u8] = b"nico-standin-test-key";
/// The org every test uses.
pub const ORG: &str = "acme";
/// The site id every test uses.
pub const SITE_ID: &str = "8d97fa69-9199-49ff-bcf3-168c62d3874e";
/// The tenant id every test uses.
pub const TENANT_ID: &str = "f97df110-f4de-492e-8849-4a6af68026b0";
/// Status codes an operation's entry in the spec does not list but NICo answers: 409 on a
/// duplicate name and 401 on a bad token (the issue's facts), 404 for an id that is gone
/// (the spec defines `NotFoundError` but lists it on few operations), and what any HTTP
/// server may answer (429, 500, 503). Always with the spec's error shape.
const UNLISTED_OK: &[u16] = &[401, 404, 409, 429, 500, 503];

/// One stand-in collection.
#[derive(Debug, Clone, Copy)]
struct Coll {
    path: &'static str,
    object: &'static str,
    create: &'static str,
    update: &'static str,
    first: &'static str,
    ready: &'static str,
    deleting: &'static str,
    role: &'static str,
}

const COLLS: &[Coll] = &[
    Coll {
        path: "instance/type",
        object: "InstanceType",
        create: "InstanceTypeCreateRequest",
        update: "InstanceTypeUpdateRequest",
        first: "Pending",
        ready: "Ready",
        deleting: "Deleting",
        role: "PROVIDER_ADMIN",
    },
    Coll {
        path: "allocation",
        object: "Allocation",
        create: "AllocationCreateRequest",
        update: "AllocationUpdateRequest",
        first: "Pending",
        ready: "Registered",
        deleting: "Deleting",
        role: "PROVIDER_ADMIN",
    },
    Coll {
        path: "vpc",
        object: "VPC",
        create: "VpcCreateRequest",
        update: "VpcUpdateRequest",
        first: "Pending",
        ready: "Ready",
        deleting: "Deleting",
        role: "TENANT_ADMIN",
    },
    Coll {
        path: "subnet",
        object: "Subnet",
        create: "SubnetCreateRequest",
        update: "SubnetUpdateRequest",
        first: "Pending",
        ready: "Ready",
        deleting: "Deleting",
        role: "TENANT_ADMIN",
    },
    Coll {
        path: "sshkeygroup",
        object: "SshKeyGroup",
        create: "SshKeyGroupCreateRequest",
        update: "SshKeyGroupUpdateRequest",
        first: "Syncing",
        ready: "Synced",
        deleting: "Deleting",
        role: "TENANT_ADMIN",
    },
    Coll {
        path: "operating-system",
        object: "OperatingSystem",
        create: "OperatingSystemCreateRequest",
        update: "OperatingSystemUpdateRequest",
        first: "Pending",
        ready: "Ready",
        deleting: "Deleting",
        role: "TENANT_ADMIN",
    },
    Coll {
        path: "instance",
        object: "Instance",
        create: "InstanceCreateRequest",
        update: "InstanceUpdateRequest",
        first: "Pending",
        ready: "Ready",
        deleting: "Terminating",
        role: "TENANT_ADMIN",
    },
    // NICo's own machines: listed, read and patched, never created (no `create` schema).
    Coll {
        path: "machine",
        object: "Machine",
        create: "",
        update: "MachineUpdateRequest",
        first: "Ready",
        ready: "Ready",
        deleting: "Decommissioned",
        role: "PROVIDER_ADMIN",
    },
];

/// A fault, consumed by the first request it matches.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status (500, 503) with the generic error body.
    Status(u16),
    /// Answer 429 with `Retry-After: <secs>`.
    RateLimited(u64),
    /// Carry out the request, then drop the connection without answering.
    DropAfterCommit,
    /// The next object created moves to Error instead of its ready status.
    ErrorTransition,
    /// After page 1 of a list is served, remove the first object of the collection.
    ShiftDuringList,
}

struct Armed {
    method: Method,
    path: &'static str,
    fault: Fault,
}

struct Obj {
    value: Value,
    ready_at: Option<Instant>,
    fail: bool,
    gone_at: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<&'static str, Vec<Obj>>,
    next_id: u64,
    faults: VecDeque<Armed>,
    violations: Vec<String>,
    requests: Vec<(String, String)>,
}

/// The stand-in; cheap to clone.
#[derive(Clone)]
pub struct Standin {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

/// The spec as JSON and a validator per component schema (compiled once per test binary).
struct Spec {
    doc: Value,
    validators: Mutex<BTreeMap<String, Arc<jsonschema::Validator>>>,
}

fn spec() -> &'static Spec {
    static S: OnceLock<Spec> = OnceLock::new();
    S.get_or_init(|| {
        let path = fleetform_contract::testing::shared_fixture(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
            "nico",
        )
        .join("openapi.yaml");
        // The engine's YAML loader (spans, limits, YAML 1.2) wants fleet documents, which
        // start with `apiVersion` and `kind`: two keys are put before the spec's own.
        let mut bytes = b"apiVersion: openapi\nkind: OpenAPI\n".to_vec();
        bytes.extend(std::fs::read(&path).unwrap());
        let (docs, diags) = fleetform_engine::load::load(&[fleetform_engine::load::SourceFile {
            path: "openapi.yaml".into(),
            bytes,
        }]);
        assert!(diags.is_empty(), "{diags:?}");
        Spec {
            doc: docs.into_iter().next().unwrap().value,
            validators: Mutex::new(BTreeMap::new()),
        }
    })
}

/// Checks `value` against `#/components/schemas/<name>`; the errors, if any.
pub fn check(name: &str, value: &Value) -> Vec<String> {
    let s = spec();
    let v = {
        let mut m = s.validators.lock().unwrap();
        m.entry(name.to_string())
            .or_insert_with(|| {
                let schema = json!({
                    "$ref": format!("#/components/schemas/{name}"),
                    "components": s.doc["components"],
                });
                Arc::new(jsonschema::draft202012::new(&schema).unwrap())
            })
            .clone()
    };
    v.iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The response codes the spec lists for one operation.
fn listed(path_template: &str, method: &Method) -> Vec<u16> {
    let op = &spec().doc["paths"][path_template][method.as_str().to_lowercase()];
    op["responses"]
        .as_object()
        .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default()
}

/// A signed HS256 token with `roles`, expiring `ttl_secs` from now (negative: expired).
pub fn token(roles: &[&str], ttl_secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let h = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let c =
        B64.encode(json!({"sub": "fleetform", "roles": roles, "exp": now + ttl_secs}).to_string());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY);
    let sig = ring::hmac::sign(&key, format!("{h}.{c}").as_bytes());
    format!("{h}.{c}.{}", B64.encode(sig.as_ref()))
}

fn verify(headers: &HeaderMap) -> Result<Vec<String>, &'static str> {
    let t = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("missing bearer token")?;
    let mut parts = t.split('.');
    let (h, c, s) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(c), Some(s)) => (h, c, s),
        _ => return Err("malformed token"),
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY);
    let sig = B64.decode(s).map_err(|_| "malformed token")?;
    ring::hmac::verify(&key, format!("{h}.{c}").as_bytes(), &sig).map_err(|_| "bad signature")?;
    let claims: Value = serde_json::from_slice(&B64.decode(c).map_err(|_| "malformed token")?)
        .map_err(|_| "malformed token")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if claims["exp"].as_i64().unwrap_or(0) <= now {
        return Err("token expired");
    }
    Ok(claims["roles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Decodes one `application/x-www-form-urlencoded` value.
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(x) => {
                        out.push(x);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

const TIME: &str = "2026-08-01T00:00:00Z";

impl Standin {
    /// Starts one on a loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let s = Standin {
            inner: Arc::new(Mutex::new(Inner::default())),
            endpoint,
        };
        let app = Router::new().fallback(handle).with_state(s.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        s
    }

    /// Arms a fault for the next `method` request on collection `path` (`instance/type`).
    pub fn fault(&self, method: Method, path: &str, fault: Fault) {
        let path = COLLS.iter().find(|c| c.path == path).unwrap().path;
        self.inner.lock().unwrap().faults.push_back(Armed {
            method,
            path,
            fault,
        });
    }

    /// Puts an object straight into the state (someone else created it), ready at once.
    pub fn seed(&self, path: &str, mut value: Value) -> String {
        let c = *COLLS.iter().find(|c| c.path == path).unwrap();
        let mut g = self.inner.lock().unwrap();
        g.next_id += 1;
        // A given id is kept (machines have NICo's own ids).
        let id = value["id"]
            .as_str()
            .map_or_else(|| uuid(g.next_id), str::to_string);
        value["id"] = json!(id);
        value["status"] = json!(c.ready);
        value["statusHistory"] =
            json!([{"status": c.ready, "message": "seeded", "created": TIME, "updated": TIME}]);
        value["created"] = json!(TIME);
        value["updated"] = json!(TIME);
        let errs = check(c.object, &value);
        assert!(
            errs.is_empty(),
            "seeded object is outside the spec: {errs:?}"
        );
        g.objects.entry(c.path).or_default().push(Obj {
            value,
            ready_at: None,
            fail: false,
            gone_at: None,
        });
        id
    }

    /// The live objects of a collection named `name`.
    pub fn named(&self, path: &str, name: &str) -> Vec<Value> {
        let mut g = self.inner.lock().unwrap();
        settle(&mut g);
        g.objects
            .get(path)
            .map(|v| {
                v.iter()
                    .filter(|o| o.value["name"] == json!(name))
                    .map(|o| o.value.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The object of a collection with this id.
    pub fn named_by_id(&self, path: &str, id: &str) -> Value {
        let g = self.inner.lock().unwrap();
        g.objects[path]
            .iter()
            .find(|o| o.value["id"] == json!(id))
            .unwrap()
            .value
            .clone()
    }

    /// Every answer that was outside the spec.
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }

    /// The requests served, as (method, path?query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().requests.clone()
    }
}

/// Applies the time-driven transitions: ready (or Error), and removal after a delete.
fn settle(g: &mut Inner) {
    let now = Instant::now();
    for (path, objs) in g.objects.iter_mut() {
        let c = COLLS.iter().find(|c| c.path == *path).unwrap();
        objs.retain(|o| o.gone_at.is_none_or(|t| t > now));
        for o in objs.iter_mut() {
            if let Some(t) = o.ready_at
                && t <= now
            {
                o.ready_at = None;
                let (st, msg) = if o.fail {
                    ("Error", "Machine failed to provision: DPU did not come up")
                } else {
                    (c.ready, "ready")
                };
                o.value["status"] = json!(st);
                o.value["statusHistory"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"status": st, "message": msg, "created": TIME, "updated": TIME}));
            }
        }
    }
}

fn error(status: u16, message: &str, data: Value) -> (u16, Value) {
    (
        status,
        json!({"source": "nico", "message": message, "data": data}),
    )
}

async fn handle(
    State(s): State<Standin>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    s.inner
        .lock()
        .unwrap()
        .requests
        .push((method.to_string(), uri.to_string()));
    let prefix = format!("/v2/org/{ORG}/nico/");
    let Some(rest) = path.strip_prefix(&prefix) else {
        return (StatusCode::NOT_FOUND, "").into_response();
    };
    // Longest collection first: `instance/type` before `instance`.
    let mut colls: Vec<&Coll> = COLLS.iter().collect();
    colls.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
    let found = colls.iter().find_map(|c| {
        if rest == c.path {
            Some((**c, None))
        } else {
            rest.strip_prefix(c.path)
                .and_then(|r| r.strip_prefix('/'))
                .filter(|id| !id.contains('/'))
                .map(|id| (**c, Some(id.to_string())))
        }
    });
    let Some((c, id)) = found else {
        return (StatusCode::NOT_FOUND, "").into_response();
    };
    let template = match &id {
        None => format!("/v2/org/{{org}}/nico/{}", c.path),
        Some(_) => {
            let p = &spec().doc["paths"];
            let base = format!("/v2/org/{{org}}/nico/{}/{{", c.path);
            p.as_object()
                .unwrap()
                .keys()
                .find(|k| {
                    k.starts_with(&base) && k.matches('/').count() == base.matches('/').count()
                })
                .cloned()
                .unwrap()
        }
    };
    let fault = {
        let mut g = s.inner.lock().unwrap();
        let i = g
            .faults
            .iter()
            .position(|a| a.method == method && a.path == c.path);
        i.and_then(|i| g.faults.remove(i)).map(|a| a.fault)
    };
    let (status, body, extra) = serve(
        &s,
        &method,
        c,
        id.as_deref(),
        &uri,
        &headers,
        &body,
        fault.clone(),
    );
    // The stand-in's own answers are checked against the spec like the requests are.
    let listed = listed(&template, &method);
    let mut v = Vec::new();
    if !listed.contains(&status) && !UNLISTED_OK.contains(&status) {
        v.push(format!(
            "{method} {path}: status {status} is not listed in the spec ({listed:?})"
        ));
    }
    let schema_errs = if status >= 400 {
        check("NICoAPIError", &body)
    } else if status == 202 || status == 204 {
        Vec::new()
    } else if body.is_array() {
        body.as_array()
            .unwrap()
            .iter()
            .flat_map(|o| check(c.object, o))
            .collect()
    } else {
        check(c.object, &body)
    };
    v.extend(
        schema_errs
            .into_iter()
            .map(|e| format!("{method} {path} answer: {e}")),
    );
    if !v.is_empty() {
        s.inner.lock().unwrap().violations.extend(v);
    }
    if matches!(fault, Some(Fault::DropAfterCommit)) {
        // The request was carried out; the client never hears about it.
        std::panic::resume_unwind(Box::new("dropping the connection"));
    }
    let mut resp = if status == 202 || status == 204 {
        StatusCode::from_u16(status).unwrap().into_response()
    } else {
        (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
    };
    for (k, val) in extra {
        resp.headers_mut()
            .insert(k, HeaderValue::from_str(&val).unwrap());
    }
    resp
}

#[allow(clippy::too_many_arguments)]
fn serve(
    s: &Standin,
    method: &Method,
    c: Coll,
    id: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    fault: Option<Fault>,
) -> (u16, Value, Vec<(&'static str, String)>) {
    let roles = match verify(headers) {
        Ok(r) => r,
        Err(why) => {
            let (st, b) = error(401, &format!("Unauthorized: {why}"), Value::Null);
            return (st, b, vec![]);
        }
    };
    if !roles.iter().any(|r| r == c.role) {
        let (st, b) = error(
            403,
            "User is not allowed to perform this action",
            json!({"requiredRole": c.role}),
        );
        return (st, b, vec![]);
    }
    match fault {
        Some(Fault::Status(code)) => {
            let (st, b) = error(code, "Error handling API request", Value::Null);
            return (st, b, vec![]);
        }
        Some(Fault::RateLimited(secs)) => {
            let (st, b) = error(429, "Too many requests", Value::Null);
            return (st, b, vec![("retry-after", secs.to_string())]);
        }
        _ => {}
    }
    let mut g = s.inner.lock().unwrap();
    settle(&mut g);
    let req: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => Some(v),
            Err(e) => {
                let (st, b) = error(
                    400,
                    "Error validating request data",
                    json!({"body": e.to_string()}),
                );
                return (st, b, vec![]);
            }
        }
    };
    let invalid = |errs: Vec<String>| {
        let data: serde_json::Map<String, Value> = errs
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i.to_string(), json!(e)))
            .collect();
        error(400, "Error validating request data", Value::Object(data))
    };
    match (method.as_str(), id) {
        ("GET", None) => {
            let q: BTreeMap<String, String> = uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect();
            let num =
                |k: &str, d: u64| q.get(k).map_or(Ok(d), |v| v.parse::<u64>().map_err(|_| ()));
            let (Ok(page), Ok(size)) = (num("pageNumber", 1), num("pageSize", 20)) else {
                let (st, b) = invalid(vec!["pageNumber and pageSize must be integers".into()]);
                return (st, b, vec![]);
            };
            if page < 1 || !(1..=100).contains(&size) {
                let (st, b) = invalid(vec![format!(
                    "pageNumber must be ≥ 1 and pageSize 1..=100 (got {page}, {size})"
                )]);
                return (st, b, vec![]);
            }
            // `query` matches name, description, labels and status (the spec's words), as a
            // substring here.
            let q_text = q.get("query").map(|v| decode(v));
            let all = g.objects.entry(c.path).or_default();
            let matches = |o: &Obj| {
                q_text.as_ref().is_none_or(|t| {
                    ["name", "description", "status", "id"]
                        .iter()
                        .any(|k| o.value[*k].as_str().is_some_and(|v| v.contains(t.as_str())))
                        || o.value["labels"].to_string().contains(t.as_str())
                })
            };
            let total = all.iter().filter(|o| matches(o)).count();
            let items: Vec<Value> = all
                .iter()
                .filter(|o| matches(o))
                .skip(((page - 1) * size) as usize)
                .take(size as usize)
                .map(|o| o.value.clone())
                .collect();
            if page == 1 && matches!(fault, Some(Fault::ShiftDuringList)) && !all.is_empty() {
                all.remove(0);
            }
            let p = json!({"pageNumber": page, "pageSize": size, "total": total, "orderBy": q.get("orderBy").cloned().unwrap_or("CREATED_DESC".into())});
            (
                200,
                Value::Array(items),
                vec![("x-pagination", p.to_string())],
            )
        }
        ("GET", Some(id)) => match g
            .objects
            .entry(c.path)
            .or_default()
            .iter()
            .find(|o| o.value["id"] == json!(id))
        {
            Some(o) => (200, o.value.clone(), vec![]),
            None => {
                let (st, b) = error(
                    404,
                    "Could not find resource with specified ID",
                    Value::Null,
                );
                (st, b, vec![])
            }
        },
        ("POST", None) if c.create.is_empty() => {
            let (st, b) = error(405, "method not allowed", Value::Null);
            (st, b, vec![])
        }
        ("POST", None) => {
            let req = req.unwrap_or(Value::Null);
            let errs = check(c.create, &req);
            if !errs.is_empty() {
                let (st, b) = invalid(errs);
                return (st, b, vec![]);
            }
            let name = req["name"].clone();
            if g.objects
                .entry(c.path)
                .or_default()
                .iter()
                .any(|o| o.value["name"] == name)
            {
                let (st, b) = error(
                    409,
                    &format!("An object with name {name} already exists for this tenant and site"),
                    Value::Null,
                );
                return (st, b, vec![]);
            }
            g.next_id += 1;
            let mut obj = object_from(c, &req);
            obj["id"] = json!(uuid(g.next_id));
            obj["status"] = json!(c.first);
            obj["statusHistory"] = json!([{"status": c.first, "message": "Request received, pending processing", "created": TIME, "updated": TIME}]);
            obj["created"] = json!(TIME);
            obj["updated"] = json!(TIME);
            let fail = matches!(fault, Some(Fault::ErrorTransition));
            g.objects.entry(c.path).or_default().push(Obj {
                value: obj.clone(),
                ready_at: Some(Instant::now() + Duration::from_millis(150)),
                fail,
                gone_at: None,
            });
            (201, obj, vec![])
        }
        ("PATCH", Some(id)) => {
            let req = req.unwrap_or(Value::Null);
            let errs = check(c.update, &req);
            if !errs.is_empty() {
                let (st, b) = invalid(errs);
                return (st, b, vec![]);
            }
            let Some(o) = g
                .objects
                .entry(c.path)
                .or_default()
                .iter_mut()
                .find(|o| o.value["id"] == json!(id))
            else {
                let (st, b) = error(
                    404,
                    "Could not find resource with specified ID",
                    Value::Null,
                );
                return (st, b, vec![]);
            };
            if c.path == "machine" {
                // The spec: instance type, maintenance and labels updates in separate requests.
                let groups = [
                    req.get("instanceTypeId").is_some() || req.get("clearInstanceType").is_some(),
                    req.get("setMaintenanceMode").is_some()
                        || req.get("maintenanceMessage").is_some(),
                    req.get("labels").is_some(),
                ];
                if groups.iter().filter(|g| **g).count() != 1 {
                    let (st, b) = invalid(vec![
                        "Instance Type, maintenance and labels updates must be specified in separate requests".into(),
                    ]);
                    return (st, b, vec![]);
                }
                let v = &mut o.value;
                if let Some(m) = req.get("setMaintenanceMode").and_then(Value::as_bool) {
                    let st = if m { "Maintenance" } else { "Ready" };
                    v["status"] = json!(st);
                    v["statusHistory"].as_array_mut().unwrap().push(json!({"status": st, "message": "maintenance mode changed", "created": TIME, "updated": TIME}));
                    v["maintenanceMessage"] = if m {
                        req.get("maintenanceMessage")
                            .cloned()
                            .unwrap_or(Value::Null)
                    } else {
                        Value::Null
                    };
                }
                if req.get("clearInstanceType") == Some(&json!(true)) {
                    v["instanceTypeId"] = Value::Null;
                }
                for k in ["instanceTypeId", "labels"] {
                    if let Some(x) = req.get(k) {
                        v[k] = x.clone();
                    }
                }
                return (200, v.clone(), vec![]);
            }
            let patch = object_from(c, &req);
            for (k, v) in patch.as_object().unwrap() {
                // Labels are replaced whole, as the spec says.
                o.value[k] = v.clone();
            }
            (200, o.value.clone(), vec![])
        }
        ("DELETE", Some(id)) => {
            let Some(o) = g
                .objects
                .entry(c.path)
                .or_default()
                .iter_mut()
                .find(|o| o.value["id"] == json!(id))
            else {
                let (st, b) = error(
                    404,
                    "Could not find resource with specified ID",
                    Value::Null,
                );
                return (st, b, vec![]);
            };
            o.value["status"] = json!(c.deleting);
            o.value["statusHistory"].as_array_mut().unwrap().push(json!({"status": c.deleting, "message": "deletion requested", "created": TIME, "updated": TIME}));
            o.gone_at = Some(Instant::now() + Duration::from_millis(300));
            o.ready_at = None;
            (202, Value::Null, vec![])
        }
        _ => {
            let (st, b) = error(405, "method not allowed", Value::Null);
            (st, b, vec![])
        }
    }
}

/// The object a create (or update) request makes: the request's fields that the object's
/// schema has, nothing else (the real API answers with its object, not an echo).
fn object_from(c: Coll, req: &Value) -> Value {
    let props = &spec().doc["components"]["schemas"][c.object]["properties"];
    let mut out = serde_json::Map::new();
    if let Some(m) = req.as_object() {
        for (k, v) in m {
            if props.get(k).is_some() {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if c.path == "instance"
        && let Some(ifs) = out.get_mut("interfaces").and_then(Value::as_array_mut)
    {
        for (i, f) in ifs.iter_mut().enumerate() {
            f["id"] = json!(uuid(0xff00 + i as u64));
            f["status"] = json!("Ready");
        }
    }
    Value::Object(out)
}
