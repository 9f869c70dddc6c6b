//! A stateful BMC simulator for the tests: serves any recorded Redfish tree of
//! ../shared/fixtures/redfish read-write on 127.0.0.1 and behaves as the real BMC
//! does where sushy does not (see /work/shared/PEERS.md, "What the emulators do not show"):
//!
//! - a PATCH to a settings object (the target of its parent's `@Redfish.Settings.SettingsObject`:
//!   `Bios/Settings`, `Bios/SD`, HPE's `bios/settings/`) is held as pending, not applied;
//! - a `ComputerSystem.Reset` moves `PowerState` through its phases (PoweringOff, Off,
//!   PoweringOn, On; one `phase` each) and applies the pending settings when power is back On;
//!   `SecureBootCurrentBoot` follows `SecureBootEnable` at that moment;
//! - every GET answers an ETag; a PATCH with a stale `If-Match` answers 412;
//! - sessions where the tree links a SessionService (basic auth is accepted too);
//! - faults: a reset accepted and then the connection dropped before the answer; a graceful
//!   restart the OS ignores (only a forced one lands).
//!
//! A down BMC is a port nobody listens on ([`down_endpoint`]).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const PASSWORD: &str = "sim-pw";

/// The recorded trees, with the system fleetform should manage on each.
pub const TREES: &[(&str, &str)] = &[
    ("dell_r750", "System.Embedded.1"),
    ("hpe_dl385", "1"),
    ("supermicro_hgx_h100", "1"),
    ("nvidia_dgx_h100", "DGX"),
    ("nvidia_gb200", "System_0"),
    ("public-rackmount1", "437XR1138R2"),
];

#[derive(Default)]
pub struct Inner {
    root: PathBuf,
    /// `public-rackmount1` keeps `/redfish/v1` at the folder itself.
    short: bool,
    overrides: HashMap<String, Value>,
    /// settings object path -> the pending PATCH bodies merged.
    pub pending: HashMap<String, Value>,
    tokens: HashMap<String, String>,
    sessions_created: usize,
    /// Every reset POSTed: (system path, ResetType).
    pub resets: Vec<(String, String)>,
    run: Option<Run>,
    /// Every request: (method, path).
    pub log: Vec<(String, String)>,
    /// Every PATCH body: (path, body).
    pub patches: Vec<(String, Value)>,
    /// PATCHes answered 412 because of a stale If-Match.
    pub stale_if_match: usize,
    /// Drop the connection after accepting the next reset.
    pub drop_next_reset_answer: bool,
    /// The OS ignores graceful restarts/shutdowns (only forced ones land).
    pub ignore_graceful: bool,
    /// Every `UpdateService.SimpleUpdate` body POSTed.
    pub updates: Vec<Value>,
}

struct Run {
    system: String,
    started: Instant,
    /// "restart", "off" or "on".
    kind: &'static str,
}

pub struct Sim {
    pub url: String,
    pub state: Arc<SimState>,
}

pub struct SimState {
    inner: Mutex<Inner>,
    /// How long each power phase lasts.
    pub phase: Duration,
}

impl SimState {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }
}

/// Serves `fixtures/redfish/<tree>`; each power phase lasts `phase`.
pub async fn serve(tree: &str, phase: Duration) -> Sim {
    let base = fleetform_contract::testing::shared_fixture(env!("CARGO_MANIFEST_DIR"), "redfish")
        .join(tree);
    let short = !base.join("redfish/v1/index.json").exists();
    let state = Arc::new(SimState {
        inner: Mutex::new(Inner {
            root: base,
            short,
            ..Inner::default()
        }),
        phase,
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Sim { url, state }
}

/// An endpoint on 127.0.0.1 where nothing listens: a BMC that is down.
pub async fn down_endpoint() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn norm(path: &str) -> String {
    path.trim_end_matches('/').to_string()
}

fn etag(v: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("\"{:x}\"", h.finish())
}

impl Inner {
    /// Removes the `@Redfish.Settings` annotation of a resource (a BMC that publishes none).
    pub fn strip_settings_link(&mut self, path: &str) {
        let mut v = self.read(path).unwrap();
        v.as_object_mut().unwrap().remove("@Redfish.Settings");
        self.overrides.insert(norm(path), v);
    }

    fn file(&self, path: &str) -> Option<Value> {
        let rel = path.trim_start_matches('/');
        let rel = if self.short {
            rel.trim_start_matches("redfish/v1").trim_start_matches('/')
        } else {
            rel
        };
        let f = self.root.join(rel).join("index.json");
        serde_json::from_slice(&std::fs::read(f).ok()?).ok()
    }

    fn read(&self, path: &str) -> Option<Value> {
        let p = norm(path);
        if let Some(v) = self.overrides.get(&p) {
            return Some(v.clone());
        }
        self.file(&p)
    }

    /// The resource whose `@Redfish.Settings` names `path` as its settings object.
    fn settings_parent(&self, path: &str) -> Option<String> {
        let p = norm(path);
        let parent = p.rsplit_once('/')?.0.to_string();
        let body = self.read(&parent)?;
        let target = body
            .pointer("/@Redfish.Settings/SettingsObject/@odata.id")
            .and_then(Value::as_str)?;
        (norm(target) == p).then_some(parent)
    }

    /// Moves a running reset along; lands pending settings when power is back On.
    fn tick(&mut self, phase: Duration) {
        let Some(run) = &self.run else { return };
        let n = (run.started.elapsed().as_nanos() / phase.as_nanos().max(1)) as usize;
        let phases: &[&str] = match run.kind {
            "restart" => &["PoweringOff", "Off", "PoweringOn", "On"],
            "off" => &["PoweringOff", "Off"],
            _ => &["PoweringOn", "On"],
        };
        let state = phases[n.min(phases.len() - 1)];
        let system = run.system.clone();
        let done = n >= phases.len() - 1;
        let mut sys = self.read(&system).unwrap();
        sys["PowerState"] = json!(state);
        self.overrides.insert(system, sys);
        if done {
            let landed_on = state == "On";
            self.run = None;
            if landed_on {
                self.land_pending();
            }
        }
    }

    fn land_pending(&mut self) {
        for (settings, patch) in std::mem::take(&mut self.pending) {
            if let Some(parent) = self.settings_parent(&settings) {
                let mut v = self.read(&parent).unwrap();
                merge(&mut v, &patch);
                self.overrides.insert(parent, v);
            }
        }
        let secure: Vec<String> = self
            .overrides
            .keys()
            .filter(|k| k.to_lowercase().ends_with("/secureboot"))
            .cloned()
            .collect();
        for k in secure {
            let v = self.overrides.get_mut(&k).unwrap();
            let on = v["SecureBootEnable"].as_bool().unwrap_or(false);
            v["SecureBootCurrentBoot"] = json!(if on { "Enabled" } else { "Disabled" });
        }
    }

    fn sessions_path(&self) -> Option<String> {
        let root = self.read("/redfish/v1")?;
        let direct = root
            .pointer("/Links/Sessions/@odata.id")
            .and_then(Value::as_str)
            .map(norm);
        direct.or_else(|| {
            let ss = root.pointer("/SessionService/@odata.id")?.as_str()?;
            let s = self.read(ss)?;
            s.pointer("/Sessions/@odata.id")?.as_str().map(norm)
        })
    }
}

async fn handle(
    state: axum::extract::State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (resp, drop_conn) = respond(&state, method, uri, headers, body);
    if drop_conn {
        // Panicking in the handler makes hyper close the connection without an answer.
        panic!("bmc simulator: dropping the connection on purpose");
    }
    resp
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [
            ("ETag", etag(v)),
            ("Content-Type", "application/json".into()),
        ],
        v.to_string(),
    )
        .into_response()
}

fn respond(
    state: &SimState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (Response, bool) {
    let path = norm(uri.path());
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut bmc = state.lock();
    bmc.tick(state.phase);
    bmc.log.push((method.to_string(), path.clone()));
    let sessions = bmc.sessions_path();
    if method == Method::POST && sessions.as_deref() == Some(path.as_str()) {
        if body["Password"] != PASSWORD {
            return (StatusCode::UNAUTHORIZED.into_response(), false);
        }
        bmc.sessions_created += 1;
        let n = bmc.sessions_created;
        let token = format!("tok-{n}");
        let loc = format!("{path}/s{n}");
        bmc.tokens.insert(token.clone(), loc.clone());
        let resp = json!({"@odata.id": loc, "Id": format!("s{n}"), "UserName": body["UserName"]});
        return (
            (
                StatusCode::CREATED,
                [
                    ("X-Auth-Token", token),
                    ("Location", loc),
                    ("Content-Type", "application/json".into()),
                ],
                resp.to_string(),
            )
                .into_response(),
            false,
        );
    }
    if path != "/redfish/v1" && path != "/redfish" {
        let token_ok = headers
            .get("X-Auth-Token")
            .and_then(|t| t.to_str().ok())
            .is_some_and(|t| bmc.tokens.contains_key(t));
        let basic_ok = headers
            .get("Authorization")
            .and_then(|t| t.to_str().ok())
            .is_some_and(|a| a.starts_with("Basic "));
        if !token_ok && !basic_ok {
            return (StatusCode::UNAUTHORIZED.into_response(), false);
        }
    }
    match method {
        Method::GET => {
            if bmc.settings_parent(&path).is_some() {
                // A settings object shows what is pending (nothing once consumed).
                let pending = bmc.pending.get(&path).cloned().unwrap_or(json!({}));
                let mut v = json!({"@odata.id": path, "Attributes": {}});
                merge(&mut v, &pending);
                return (json_response(StatusCode::OK, &v), false);
            }
            match bmc.read(&path) {
                Some(v) => (json_response(StatusCode::OK, &v), false),
                None => (StatusCode::NOT_FOUND.into_response(), false),
            }
        }
        Method::DELETE if sessions.as_deref().is_some_and(|s| path.starts_with(s)) => {
            bmc.tokens.retain(|_, p| *p != path);
            (StatusCode::NO_CONTENT.into_response(), false)
        }
        Method::PATCH => {
            let is_settings = bmc.settings_parent(&path).is_some();
            let current = if is_settings {
                let mut v = json!({"@odata.id": path, "Attributes": {}});
                merge(
                    &mut v,
                    &bmc.pending.get(&path).cloned().unwrap_or(json!({})),
                );
                Some(v)
            } else {
                bmc.read(&path)
            };
            let Some(mut v) = current else {
                return (StatusCode::NOT_FOUND.into_response(), false);
            };
            if let Some(tag) = headers.get("If-Match").and_then(|t| t.to_str().ok())
                && tag != "*"
                && tag != etag(&v)
            {
                bmc.stale_if_match += 1;
                return (StatusCode::PRECONDITION_FAILED.into_response(), false);
            }
            bmc.patches.push((path.clone(), body.clone()));
            if is_settings {
                let mut p = bmc.pending.remove(&path).unwrap_or(json!({}));
                let mut body = body;
                // Annotations (`@Redfish.SettingsApplyTime`) say how to apply, not what.
                if let Some(o) = body.as_object_mut() {
                    o.retain(|k, _| !k.starts_with('@'));
                }
                merge(&mut p, &body);
                bmc.pending.insert(path, p);
                return (StatusCode::ACCEPTED.into_response(), false);
            }
            merge(&mut v, &body);
            bmc.overrides.insert(path, v);
            (StatusCode::NO_CONTENT.into_response(), false)
        }
        // Accepted without a task (204, as sushy answers); the image is not installed here.
        Method::POST if path.ends_with("/Actions/UpdateService.SimpleUpdate") => {
            bmc.updates.push(body);
            (StatusCode::NO_CONTENT.into_response(), false)
        }
        Method::POST if path.ends_with("/Actions/ComputerSystem.Reset") => {
            let sys = path
                .trim_end_matches("/Actions/ComputerSystem.Reset")
                .to_string();
            let rt = body["ResetType"].as_str().unwrap_or_default().to_string();
            bmc.resets.push((sys.clone(), rt.clone()));
            let graceful = rt.starts_with("Graceful");
            let kind = match rt.as_str() {
                "GracefulRestart" | "ForceRestart" | "PowerCycle" => "restart",
                "ForceOff" | "GracefulShutdown" => "off",
                "On" | "ForceOn" => "on",
                _ => return (StatusCode::BAD_REQUEST.into_response(), false),
            };
            if !(graceful && bmc.ignore_graceful) && bmc.run.is_none() {
                bmc.run = Some(Run {
                    system: sys,
                    started: Instant::now(),
                    kind,
                });
                bmc.tick(state.phase);
            }
            let drop_it = std::mem::take(&mut bmc.drop_next_reset_answer);
            (StatusCode::NO_CONTENT.into_response(), drop_it)
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED.into_response(), false),
    }
}

/// A BIOS attribute of the tree's system with an Enabled/Disabled-like value, and its flip.
pub fn flippable_bios_attribute(sim: &Sim, system: &str) -> (String, Value, Value) {
    let b = sim.state.lock();
    let sys = b.read(&system_path(&b, system)).unwrap();
    let bios = b.read(sys["Bios"]["@odata.id"].as_str().unwrap()).unwrap();
    for (k, v) in bios["Attributes"].as_object().unwrap() {
        let flip = match v.as_str() {
            Some("Enabled") => "Disabled",
            Some("Disabled") => "Enabled",
            Some("Enable") => "Disable",
            Some("Disable") => "Enable",
            _ => continue,
        };
        return (k.clone(), v.clone(), json!(flip));
    }
    panic!("no Enabled/Disabled BIOS attribute on {system}")
}

fn system_path(b: &Inner, system: &str) -> String {
    let root = b.read("/redfish/v1").unwrap();
    let coll = b
        .read(root["Systems"]["@odata.id"].as_str().unwrap())
        .unwrap();
    for m in coll["Members"].as_array().unwrap() {
        let p = m["@odata.id"].as_str().unwrap();
        if b.read(p).unwrap()["Id"] == system {
            return norm(p);
        }
    }
    panic!("no system {system}")
}

impl Sim {
    /// The current BIOS attribute value on the system (not what is pending).
    pub fn bios_attribute(&self, system: &str, name: &str) -> Value {
        let b = self.state.lock();
        let sys = b.read(&system_path(&b, system)).unwrap();
        let bios = b.read(sys["Bios"]["@odata.id"].as_str().unwrap()).unwrap();
        bios["Attributes"][name].clone()
    }

    pub fn resets(&self) -> Vec<(String, String)> {
        self.state.lock().resets.clone()
    }

    pub fn power(&self, system: &str) -> Value {
        let mut b = self.state.lock();
        b.tick(self.state.phase);
        let p = system_path(&b, system);
        b.read(&p).unwrap()["PowerState"].clone()
    }
}
