//! The redfish provider against a recorded real BMC (NVIDIA GB200 NVL, OpenBMC;
//! ../shared/fixtures/redfish/nvidia_gb200) served by a tiny HTTP server on 127.0.0.1:
//! GETs come from the tree; session login/logout, PATCH and reset are
//! simulated in memory so apply paths can be checked. Needs no peer.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{paths, plan, provider, rid};
use fleetform_contract::provider::{
    Action, ApplyContext, ApplyRequest, Change, ErrorKind, Health, Provider,
};
use fleetform_contract::resource::Desired;
use fleetform_redfish::RedfishProvider;
use serde_json::{Value, json};

const PASSWORD: &str = "fixture-pw";

#[derive(Default)]
struct Bmc {
    root: PathBuf,
    overrides: HashMap<String, Value>,
    tokens: HashMap<String, String>, // token -> session path
    created: usize,
    deleted: usize,
    log: Vec<(String, String, Value)>, // method, path, body
    if_match: Vec<(String, String)>,   // path, If-Match of PATCHes
    /// (method, path suffix) -> what to do to the next such request.
    faults: Vec<(String, String, Fault)>,
    /// A reset lands only after this many GETs of the system: (system path, GETs left, state).
    pending_power: Option<(String, usize, String)>,
    power_delay_gets: usize,
    /// A running SimpleUpdate: (task monitor path, polls left, inventory path, new version).
    task: Option<(String, usize, String, String)>,
    /// Installed host firmware waiting for the host's reset, as real BMCs stage it:
    /// (inventory path, version). The BMC's own firmware is not staged (it resets itself).
    staged: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Close the connection without an answer; `landed`: the request took effect first.
    Drop { landed: bool },
    /// Answer with this status.
    Status(u16),
}

#[derive(Default)]
struct Server {
    bmc: Mutex<Bmc>,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
    slow_ms: std::sync::atomic::AtomicU64,
}

type Shared = Arc<Server>;

impl Server {
    fn lock(&self) -> std::sync::MutexGuard<'_, Bmc> {
        self.bmc.lock().unwrap()
    }
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

fn read(bmc: &Bmc, path: &str) -> Option<Value> {
    if let Some(v) = bmc.overrides.get(path) {
        return Some(v.clone());
    }
    let file = bmc
        .root
        .join(path.trim_start_matches('/'))
        .join("index.json");
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

async fn handle(
    state: axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use std::sync::atomic::Ordering::SeqCst;
    let now = state.in_flight.fetch_add(1, SeqCst) + 1;
    state.max_in_flight.fetch_max(now, SeqCst);
    let slow = state.slow_ms.load(SeqCst);
    if slow > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(slow)).await;
    }
    let (resp, drop_conn) = respond(&state, method, uri, headers, body);
    state.in_flight.fetch_sub(1, SeqCst);
    if drop_conn {
        // Panicking in the handler makes hyper close the connection without an answer.
        panic!("fixture server: dropping the connection on purpose");
    }
    resp
}

fn respond(
    state: &Server,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (Response, bool) {
    let path = uri.path().trim_end_matches('/').to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut bmc = state.lock();
    bmc.log
        .push((method.to_string(), path.clone(), body.clone()));
    let fault = bmc
        .faults
        .iter()
        .position(|(m, suffix, _)| *m == method.as_str() && path.ends_with(suffix.as_str()));
    let fault = fault.map(|i| bmc.faults.remove(i).2);
    match fault {
        Some(Fault::Status(code)) => {
            return (StatusCode::from_u16(code).unwrap().into_response(), false);
        }
        Some(Fault::Drop { landed: false }) => return (StatusCode::OK.into_response(), true),
        Some(Fault::Drop { landed: true }) => {
            let r = answer(&mut bmc, method, path, headers, body);
            drop(r);
            return (StatusCode::OK.into_response(), true);
        }
        None => {}
    }
    (answer(&mut bmc, method, path, headers, body), false)
}

/// GET, landing a delayed reset once the system has been read often enough.
fn get_with_pending_power(bmc: &mut Bmc, path: &str) -> Option<Value> {
    let landed = match &mut bmc.pending_power {
        Some((sys, left, st)) if *sys == path => {
            *left = left.saturating_sub(1);
            (*left == 0).then(|| st.clone())
        }
        _ => None,
    };
    if let Some((monitor, left, target, version)) = bmc.task.clone()
        && monitor == path
    {
        if left > 0 {
            bmc.task = Some((monitor, left - 1, target, version));
            return Some(json!({"TaskState": "Running", "PercentComplete": 50}));
        }
        bmc.task = None;
        if target.contains("BMC") {
            let mut inv = read(bmc, &target).unwrap();
            inv["Version"] = json!(version);
            bmc.overrides.insert(target, inv);
        } else {
            bmc.staged.push((target, version));
        }
        return Some(json!({"TaskState": "Completed", "TaskStatus": "OK"}));
    }
    if let Some(st) = landed {
        bmc.pending_power = None;
        let mut v = read(bmc, path).unwrap();
        v["PowerState"] = json!(st);
        bmc.overrides.insert(path.to_string(), v);
    }
    read(bmc, path)
}

fn answer(
    bmc: &mut Bmc,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Value,
) -> Response {
    let sessions = "/redfish/v1/SessionService/Sessions";
    if method == Method::POST && path == sessions {
        if body["Password"] != PASSWORD {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        bmc.created += 1;
        let token = format!("tok-{}", bmc.created);
        let loc = format!("{sessions}/s{}", bmc.created);
        bmc.tokens.insert(token.clone(), loc.clone());
        let resp = json!({"@odata.id": loc, "Id": format!("s{}", bmc.created), "UserName": body["UserName"]});
        return (
            StatusCode::CREATED,
            [
                ("X-Auth-Token", token),
                ("Location", loc),
                ("Content-Type", "application/json".into()),
            ],
            resp.to_string(),
        )
            .into_response();
    }
    if path != "/redfish/v1" && path != "/redfish" {
        let ok = headers
            .get("X-Auth-Token")
            .and_then(|t| t.to_str().ok())
            .is_some_and(|t| bmc.tokens.contains_key(t));
        if !ok {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    match method {
        Method::GET => match get_with_pending_power(bmc, &path) {
            Some(v) => {
                let etag = format!("\"{}\"", v.to_string().len());
                (
                    [("ETag", etag), ("Content-Type", "application/json".into())],
                    v.to_string(),
                )
                    .into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        },
        Method::DELETE if path.starts_with(sessions) => {
            let before = bmc.tokens.len();
            bmc.tokens.retain(|_, p| *p != path);
            if bmc.tokens.len() < before {
                bmc.deleted += 1;
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Method::PATCH => {
            if let Some(tag) = headers.get("If-Match").and_then(|t| t.to_str().ok()) {
                bmc.if_match.push((path.clone(), tag.to_string()));
            }
            let Some(mut v) = read(bmc, &path) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            merge(&mut v, &body);
            bmc.overrides.insert(path, v);
            StatusCode::NO_CONTENT.into_response()
        }
        Method::POST if path.ends_with("/Actions/UpdateService.SimpleUpdate") => {
            let target = body["Targets"][0].as_str().unwrap_or_default().to_string();
            let version = body["ImageURI"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap()
                .trim_end_matches(".bin")
                .to_string();
            let monitor = "/redfish/v1/TaskService/TaskMonitors/1".to_string();
            bmc.task = Some((monitor.clone(), 2, target, version));
            (StatusCode::ACCEPTED, [("Location", monitor)], "").into_response()
        }
        Method::POST if path.ends_with("/Actions/ComputerSystem.Reset") => {
            let sys = path
                .trim_end_matches("/Actions/ComputerSystem.Reset")
                .to_string();
            let st = if body["ResetType"].as_str().unwrap_or("").contains("Off") {
                "Off"
            } else {
                "On"
            };
            // The host restarts: staged firmware becomes the running version.
            if st == "On" {
                for (inv_path, version) in std::mem::take(&mut bmc.staged) {
                    let mut inv = read(bmc, &inv_path).unwrap();
                    inv["Version"] = json!(version);
                    bmc.overrides.insert(inv_path, inv);
                }
            }
            if bmc.power_delay_gets > 0 {
                bmc.pending_power = Some((sys, bmc.power_delay_gets, st.to_string()));
            } else {
                let mut v = read(bmc, &sys).unwrap();
                v["PowerState"] = json!(st);
                bmc.overrides.insert(sys, v);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn serve_gb200() -> (String, Shared) {
    let root = fleetform_contract::testing::shared_fixture(env!("CARGO_MANIFEST_DIR"), "redfish")
        .join("nvidia_gb200");
    let state: Shared = Arc::new(Server {
        bmc: Mutex::new(Bmc {
            root,
            ..Bmc::default()
        }),
        ..Server::default()
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

fn desired(url: &str, system: &str, aspect: &str, rest: Value, pw: &std::path::Path) -> Desired {
    let mut spec = rest;
    spec["bmc"] = json!({"endpoint": url, "system": system,
                         "credentials": {"username": "root", "password": {"file": pw}}});
    Desired::new(rid("gb200-tray-0", aspect), spec)
}

fn password_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pw");
    std::fs::write(&p, format!("{PASSWORD}\n")).unwrap();
    (dir, p)
}

/// Sessions are DELETEd by a spawned task when dropped on an error path: give it a moment.
async fn settle(state: &Shared) -> (usize, usize, usize) {
    for _ in 0..50 {
        {
            let b = state.lock();
            if b.tokens.is_empty() {
                return (b.created, b.deleted, 0);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let b = state.lock();
    (b.created, b.deleted, b.tokens.len())
}

#[tokio::test]
async fn gb200_firmware_inventory_is_observed_through_a_session_that_is_deleted() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    let ok = desired(
        &url,
        "System_0",
        "firmware",
        json!({"expected": {"BMC": "GB200Nvl-24.12-8", "UEFI": "buildbrain-gcid-38635631", "FW_BMC_0": "GB200Nvl-24.12-8"}}),
        &pw,
    );
    let (c, obs) = plan(&p, &ok).await.unwrap();
    assert_eq!(c.action, Action::NoOp, "{:?}", c.fields);
    assert!(
        obs.private.unwrap()["extra"]["firmwareInventory"]
            .as_str()
            .unwrap()
            .contains("30 members")
    );

    let newer = desired(
        &url,
        "System_0",
        "firmware",
        json!({"expected": {"UEFI": "buildbrain-gcid-99999999"}}),
        &pw,
    );
    let (c, obs) = plan(&p, &newer).await.unwrap();
    assert_eq!(paths(&c), ["/expected/UEFI"]);
    assert_eq!(
        c.disruption,
        fleetform_contract::provider::Disruption::HostReboot,
        "UEFI firmware activates at a host reset"
    );
    // No update image in the spec: the drift is reported, apply refuses.
    let rq = ApplyRequest {
        change: &c,
        desired: Some(&newer),
        last_applied: None,
        observed: Some(&obs),
    };
    let err = p.apply(&rq, &ApplyContext::default()).await.unwrap_err();
    assert!(err.message.contains("no image is given"), "{err}");

    let (created, deleted, open) = settle(&state).await;
    assert!(created >= 3, "every conversation logs in: {created}");
    assert_eq!(
        (deleted, open),
        (created, 0),
        "every session is deleted, also on the error path"
    );
}

#[tokio::test]
async fn gb200_bios_change_is_patched_to_the_settings_object_and_stays_pending_until_reboot() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    let d = desired(
        &url,
        "System_0",
        "bios",
        json!({"attributes": {"EGM": true, "ActiveCores": 144}}),
        &pw,
    );
    let (c, obs) = plan(&p, &d).await.unwrap();
    assert_eq!(paths(&c), ["/attributes/EGM"]);
    assert!(
        c.disruption == fleetform_contract::provider::Disruption::None,
        "staging is not disruptive: the host's power resource plans the reset"
    );
    let private = obs.private.clone().unwrap();
    assert_eq!(
        private["path"],
        "/redfish/v1/Systems/System_0/Bios/Settings"
    );

    let rq = ApplyRequest {
        change: &c,
        desired: Some(&d),
        last_applied: None,
        observed: Some(&obs),
    };
    p.apply(&rq, &ApplyContext::default()).await.unwrap();
    let patches: Vec<(String, Value)> = state
        .lock()
        .log
        .iter()
        .filter(|(m, _, _)| m == "PATCH")
        .map(|(_, p, b)| (p.clone(), b.clone()))
        .collect();
    assert_eq!(
        patches,
        vec![(
            "/redfish/v1/Systems/System_0/Bios/Settings".to_string(),
            json!({"Attributes": {"EGM": true}})
        )]
    );
    // The settings object had an ETag: the PATCH carried it.
    assert_eq!(state.lock().if_match.len(), 1);

    // Current BIOS is unchanged until a reboot: the re-plan still shows it, marked staged.
    let (again, _) = plan(&p, &d).await.unwrap();
    assert_eq!(paths(&again), ["/attributes/EGM"]);
    assert!(
        again.fields[0]
            .changed_by
            .as_deref()
            .unwrap()
            .contains("next reboot")
    );
    // Staged is as far as this resource goes: the reset belongs to the power resource.
    assert_eq!(p.health(&d.id, &d.spec).await.unwrap(), Health::Ready);
}

#[tokio::test]
async fn gb200_gpu_inventory_is_counted_on_the_hgx_baseboard() {
    let (url, _state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    let d = desired(
        &url,
        "System_0",
        "inventory",
        json!({"expect": {"gpuCount": 4}}),
        &pw,
    );
    assert_eq!(plan(&p, &d).await.unwrap().0.action, Action::NoOp);
    let d = desired(
        &url,
        "System_0",
        "inventory",
        json!({"expect": {"gpuCount": 8, "gpuModel": "GB200"}}),
        &pw,
    );
    // GB200's BMC reports no `Model`: that cannot contradict the manifest; the count does.
    let err = plan(&p, &d).await.unwrap_err();
    assert!(
        err.message
            .contains("gpu.count: the BMC reports 4, the manifest says 8")
            && !err.message.contains("gpu.model"),
        "{err}"
    );
}

#[tokio::test]
async fn gb200_power_off_uses_a_reset_type_from_action_info() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    let on = desired(&url, "System_0", "power", json!({"state": "On"}), &pw);
    assert_eq!(plan(&p, &on).await.unwrap().0.action, Action::NoOp);
    let off = desired(&url, "System_0", "power", json!({"state": "Off"}), &pw);
    common::converge(&p, &off).await;
    let resets: Vec<Value> = state
        .lock()
        .log
        .iter()
        .filter(|(m, path, _)| m == "POST" && path.ends_with("ComputerSystem.Reset"))
        .map(|(_, _, b)| b.clone())
        .collect();
    assert_eq!(resets, vec![json!({"ResetType": "ForceOff"})]);
    assert!(
        state
            .lock()
            .log
            .iter()
            .any(|(m, path, _)| m == "GET" && path.ends_with("ResetActionInfo"))
    );
}

#[tokio::test]
async fn gb200_virtual_media_is_found_under_the_manager() {
    let (url, _state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    let d = desired(
        &url,
        "System_0",
        "virtual-media",
        json!({"inserted": false, "image": null}),
        &pw,
    );
    let (c, obs) = plan(&p, &d).await.unwrap();
    assert_eq!(c.action, Action::NoOp);
    assert!(
        obs.private.unwrap()["path"]
            .as_str()
            .unwrap()
            .starts_with("/redfish/v1/Managers/BMC_0/VirtualMedia/")
    );
}

#[tokio::test]
async fn gb200_session_login_with_a_wrong_password_is_permanent_naming_host() {
    let (url, _state) = serve_gb200().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "nope").unwrap();
    let p = provider();
    let d = desired(&url, "System_0", "power", json!({"state": "On"}), &pw);
    let err = plan(&p, &d).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message
            .contains("host gb200-tray-0: BMC rejected the credentials (user root)"),
        "{err}"
    );
}

#[tokio::test]
async fn nv_redfish_service_root_reads_the_gb200_recording() {
    // What nv-redfish itself does on a schema-conformant BMC (the provider uses its
    // generated ComputerSystem type; its ServiceRoot fails on sushy, see the docs).
    let (url, _state) = serve_gb200().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = nv_redfish::bmc_http::reqwest::Client::new().unwrap();
    // The recording's token check needs a session: log in by hand and pass the token.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{url}/redfish/v1/SessionService/Sessions"))
        .json(&json!({"UserName": "root", "Password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let token = r.headers()["X-Auth-Token"].to_str().unwrap().to_string();
    let bmc = Arc::new(nv_redfish::bmc_http::HttpBmc::new(
        http,
        url::Url::parse(&url).unwrap(),
        nv_redfish::bmc_http::BmcCredentials::token(token),
        nv_redfish::bmc_http::CacheSettings::default(),
    ));
    let root = nv_redfish::ServiceRoot::new(bmc).await.unwrap();
    assert_eq!(
        root.product().map(|p| p.to_string()).as_deref(),
        Some("GB200 NVL")
    );
}

fn count(state: &Shared, method: &str, suffix: &str) -> usize {
    state
        .lock()
        .log
        .iter()
        .filter(|(m, p, _)| m == method && p.ends_with(suffix))
        .count()
}

#[tokio::test]
async fn a_reset_whose_connection_dropped_is_not_resent_when_the_power_already_changed() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    state.lock().faults.push((
        "POST".into(),
        "ComputerSystem.Reset".into(),
        Fault::Drop { landed: true },
    ));
    let off = desired(&url, "System_0", "power", json!({"state": "Off"}), &pw);
    common::converge(&p, &off).await;
    assert_eq!(
        count(&state, "POST", "ComputerSystem.Reset"),
        1,
        "the reset reached the BMC: never resend it"
    );
}

#[tokio::test]
async fn a_reset_lost_before_it_landed_is_resent_once_after_reading_power() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    state.lock().faults.push((
        "POST".into(),
        "ComputerSystem.Reset".into(),
        Fault::Drop { landed: false },
    ));
    let off = desired(&url, "System_0", "power", json!({"state": "Off"}), &pw);
    common::converge(&p, &off).await;
    assert_eq!(count(&state, "POST", "ComputerSystem.Reset"), 2);
}

#[tokio::test]
async fn gets_are_retried_on_503_but_a_reset_post_is_not() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    state
        .lock()
        .faults
        .push(("GET".into(), "/Systems/System_0".into(), Fault::Status(503)));
    let off = desired(&url, "System_0", "power", json!({"state": "Off"}), &pw);
    let (c, obs) = plan(&p, &off).await.unwrap();
    assert_eq!(paths(&c), ["/state"]);
    assert_eq!(
        count(&state, "GET", "/Systems/System_0"),
        2,
        "one 503, one retry"
    );

    state.lock().faults.push((
        "POST".into(),
        "ComputerSystem.Reset".into(),
        Fault::Status(503),
    ));
    let rq = ApplyRequest {
        change: &c,
        desired: Some(&off),
        last_applied: None,
        observed: Some(&obs),
    };
    let err = p.apply(&rq, &ApplyContext::default()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert_eq!(count(&state, "POST", "ComputerSystem.Reset"), 1);
}

#[tokio::test]
async fn power_health_is_progressing_until_the_bmc_reports_the_new_state() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    state.lock().power_delay_gets = 3;
    // Someone else resets the host; the BMC takes a while to report it.
    let client = reqwest::Client::new();
    let token = client
        .post(format!("{url}/redfish/v1/SessionService/Sessions"))
        .json(&json!({"UserName": "root", "Password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .headers()["X-Auth-Token"]
        .to_str()
        .unwrap()
        .to_string();
    client
        .post(format!(
            "{url}/redfish/v1/Systems/System_0/Actions/ComputerSystem.Reset"
        ))
        .header("X-Auth-Token", token)
        .json(&json!({"ResetType": "ForceOff"}))
        .send()
        .await
        .unwrap();
    let off = desired(&url, "System_0", "power", json!({"state": "Off"}), &pw);
    match p.health(&off.id, &off.spec).await.unwrap() {
        Health::Progressing(m) => assert!(m.contains("/state is \"On\" (want \"Off\")"), "{m}"),
        h => panic!("expected Progressing, got {h:?}"),
    }
    let mut ready = false;
    for _ in 0..5 {
        if p.health(&off.id, &off.spec).await.unwrap() == Health::Ready {
            ready = true;
            break;
        }
    }
    assert!(ready);
}

#[tokio::test]
async fn at_most_two_requests_are_in_flight_to_one_bmc() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    state.slow_ms.store(20, std::sync::atomic::Ordering::SeqCst);
    let specs: Vec<Desired> = [
        "power",
        "boot",
        "secure-boot",
        "virtual-media",
        "inventory",
        "power",
        "secure-boot",
        "power",
    ]
    .iter()
    .map(|a| {
        let rest = match *a {
            "power" => json!({"state": "On"}),
            "boot" => json!({"target": "None", "enabled": "Disabled"}),
            "secure-boot" => json!({"enabled": false}),
            "virtual-media" => json!({"inserted": false}),
            _ => json!({"expect": {"gpuCount": 4}}),
        };
        desired(&url, "System_0", a, rest, &pw)
    })
    .collect();
    let rqs: Vec<fleetform_contract::provider::ObserveRequest<'_>> = specs
        .iter()
        .map(|d| fleetform_contract::provider::ObserveRequest {
            id: &d.id,
            spec: &d.spec,
            desired: true,
            unchanged: false,
        })
        .collect();
    let results = p.observe(&rqs).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let max = state
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(max, 2, "8 concurrent observations, per-BMC limit 2");
}

#[tokio::test]
async fn the_session_is_deleted_when_the_system_is_not_found() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    let d = desired(&url, "System_9", "power", json!({"state": "On"}), &pw);
    let err = plan(&p, &d).await.unwrap_err();
    assert!(
        err.message
            .contains("no system with Id, Name or UUID `System_9`"),
        "{err}"
    );
    let (created, deleted, open) = settle(&state).await;
    assert_eq!((created, deleted, open), (1, 1, 0));
}

#[tokio::test]
async fn firmware_update_follows_the_task_monitor_until_the_task_completes() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    {
        // This recording has no SimpleUpdate (it takes pushed images): give it one.
        let mut bmc = state.lock();
        let mut us = read(&bmc, "/redfish/v1/UpdateService").unwrap();
        us["Actions"]["#UpdateService.SimpleUpdate"] =
            json!({"target": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate"});
        bmc.overrides.insert("/redfish/v1/UpdateService".into(), us);
    }
    let d = desired(
        &url,
        "System_0",
        "firmware",
        json!({"expected": {"UEFI": "uefi-2"},
               "update": {"image": "http://127.0.0.1:9/uefi-2.bin", "targets": ["/redfish/v1/UpdateService/FirmwareInventory/UEFI"]}}),
        &pw,
    );
    let first = apply_once(&p, &d).await;
    assert_eq!(paths(&first), ["/expected/UEFI"]);
    assert_eq!(count(&state, "POST", "UpdateService.SimpleUpdate"), 1);
    assert_eq!(
        count(&state, "GET", "/TaskMonitors/1"),
        3,
        "polled while Running (twice), then Completed"
    );
    reset_activates_the_staged_image(&p, &state, &url, &pw, &d, "UEFI", "uefi-2").await;
}

/// Plans and applies `d` once (no re-plan: staged firmware does not read current yet).
async fn apply_once(p: &RedfishProvider, d: &Desired) -> Change {
    let (change, obs) = common::plan(p, d).await.unwrap();
    let rq = fleetform_contract::provider::ApplyRequest {
        change: &change,
        desired: Some(d),
        last_applied: None,
        observed: Some(&obs),
    };
    p.apply(&rq, &fleetform_contract::provider::ApplyContext::default())
        .await
        .unwrap();
    change
}

/// After a firmware image was installed: the firmware resource reads staged (healthy, nothing
/// re-sent), the power resource plans the host's one reset for it, and once that reset ran
/// the version is current and both re-plan clean.
async fn reset_activates_the_staged_image(
    p: &RedfishProvider,
    state: &Shared,
    url: &str,
    pw: &std::path::Path,
    firmware: &Desired,
    component: &str,
    version: &str,
) {
    let (staged, _) = common::plan(p, firmware).await.unwrap();
    assert_eq!(
        staged.action,
        Action::Update,
        "the inventory still reads the old version"
    );
    assert!(
        staged.fields[0]
            .changed_by
            .as_deref()
            .is_some_and(|c| c.starts_with("staged")),
        "{:?}",
        staged.fields
    );
    assert_eq!(
        staged.disruption,
        fleetform_contract::provider::Disruption::None
    );
    assert_eq!(
        p.health(&firmware.id, &firmware.spec).await.unwrap(),
        Health::Ready
    );
    let sent = count(state, "POST", "UpdateService.SimpleUpdate");
    // Applying the staged change again sends nothing.
    apply_once(p, firmware).await;
    assert_eq!(count(state, "POST", "UpdateService.SimpleUpdate"), sent);

    let power = desired(
        url,
        "System_0",
        "power",
        json!({"state": "On", "applyAtReset": {"firmware": {component: version}}}),
        pw,
    );
    let (plan, _) = common::plan(p, &power).await.unwrap();
    assert_eq!(paths(&plan), ["/awaitingReset"]);
    let awaiting = plan.fields[0].before.clone().unwrap();
    assert!(
        awaiting
            .to_string()
            .contains(&format!("firmware {component}")),
        "{awaiting}"
    );
    common::converge(p, &power).await;
    assert_eq!(count(state, "POST", "ComputerSystem.Reset"), 1, "one reset");
    let (after, _) = common::plan(p, firmware).await.unwrap();
    assert_eq!(after.action, Action::NoOp, "{:?}", after.fields);
    assert_eq!(count(state, "POST", "UpdateService.SimpleUpdate"), sent);
}

#[tokio::test]
async fn a_bios_update_on_a_grace_tray_targets_its_uefi_member_found_through_the_alias_table() {
    let (url, state) = serve_gb200().await;
    let (_d, pw) = password_file();
    let p = provider();
    {
        let mut bmc = state.lock();
        let mut us = read(&bmc, "/redfish/v1/UpdateService").unwrap();
        us["Actions"]["#UpdateService.SimpleUpdate"] =
            json!({"target": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate"});
        bmc.overrides.insert("/redfish/v1/UpdateService".into(), us);
    }
    // GB200's System has no BiosVersion: its BIOS is the `UEFI` inventory member. The
    // manifest says BIOS and gives the image, not the member.
    let d = desired(
        &url,
        "System_0",
        "firmware",
        json!({"expected": {"BIOS": "uefi-3"},
               "updates": {"BIOS": {"image": "http://127.0.0.1:9/uefi-3.bin", "transferProtocol": "HTTP"}}}),
        &pw,
    );
    let first = apply_once(&p, &d).await;
    assert_eq!(paths(&first), ["/expected/BIOS"]);
    let posts: Vec<Value> = state
        .lock()
        .log
        .iter()
        .filter(|(m, path, _)| m == "POST" && path.ends_with("UpdateService.SimpleUpdate"))
        .map(|(_, _, body)| body.clone())
        .collect();
    assert_eq!(
        posts,
        [
            json!({"ImageURI": "http://127.0.0.1:9/uefi-3.bin", "TransferProtocol": "HTTP",
                "Targets": ["/redfish/v1/UpdateService/FirmwareInventory/UEFI"]})
        ]
    );
    reset_activates_the_staged_image(&p, &state, &url, &pw, &d, "BIOS", "uefi-3").await;

    // A differing component without an image: apply says how to give one, and sends nothing.
    let d = desired(
        &url,
        "System_0",
        "firmware",
        json!({"expected": {"BIOS": "uefi-4"}}),
        &pw,
    );
    let (change, obs) = common::plan(&p, &d).await.unwrap();
    let rq = fleetform_contract::provider::ApplyRequest {
        change: &change,
        desired: Some(&d),
        last_applied: None,
        observed: Some(&obs),
    };
    let e = p
        .apply(&rq, &fleetform_contract::provider::ApplyContext::default())
        .await
        .unwrap_err();
    assert!(
        e.message.contains("firmware BIOS differs") && e.message.contains("image:"),
        "{e}"
    );
    assert_eq!(
        count(&state, "POST", "UpdateService.SimpleUpdate"),
        1,
        "nothing more sent"
    );
}
