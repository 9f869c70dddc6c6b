//! Shared test helpers: the sushy peers' environment, plan/apply round trips.
#![allow(dead_code, clippy::unwrap_used)]

pub mod bmcsim;

use std::path::PathBuf;
use std::sync::Arc;

use fleetform_contract::provider::ObserveRequest;
use fleetform_contract::provider::{
    Action, ApplyContext, ApplyRequest, Change, Observed, Provider, ProviderError,
};
use fleetform_contract::resource::{Desired, ResourceId};
use fleetform_contract::secret::LocalSecrets;
use fleetform_redfish::{RedfishOptions, RedfishProvider};
use serde_json::{Value, json};

/// The sushy peers as tests/peers/sushy.sh describes them in sushy.env.
#[derive(Debug, Clone)]
pub struct Peers {
    pub fake: String,
    pub libvirt: String,
    pub tls: String,
    pub ca: PathBuf,
    pub user: String,
    pub password_file: PathBuf,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Reads the peer env vars; falls back to `$FLEETFORM_PEERS_DIR/sushy.env`
/// (default `<repo>/target/peers`) so `cargo test -p fleetform-redfish` works
/// after `tests/peers/sushy.sh start` without sourcing it.
pub fn peers() -> Option<Peers> {
    if var("SUSHY_FAKE_URL").is_none() {
        let dir = var("FLEETFORM_PEERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers")
            });
        if let Ok(text) = std::fs::read_to_string(dir.join("sushy.env")) {
            for line in text.lines() {
                if let Some((k, v)) = line.trim().trim_start_matches("export ").split_once('=') {
                    // SAFETY-free: set_var is unsafe in edition 2024; keep values local instead.
                    ENV_FILE.with(|m| m.borrow_mut().push((k.to_string(), v.to_string())));
                }
            }
        }
    }
    let get = |k: &str| {
        var(k).or_else(|| {
            ENV_FILE.with(|m| {
                m.borrow()
                    .iter()
                    .rev()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
            })
        })
    };
    Some(Peers {
        fake: get("SUSHY_FAKE_URL")?,
        libvirt: get("SUSHY_LIBVIRT_URL")?,
        tls: get("SUSHY_TLS_URL")?,
        ca: get("SUSHY_CA_CERT")?.into(),
        user: get("SUSHY_USERNAME")?,
        password_file: get("SUSHY_PASSWORD_FILE")?.into(),
    })
}

thread_local! {
    static ENV_FILE: std::cell::RefCell<Vec<(String, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The peers, or `None` after printing why the test is skipped (a failure under FLEETFORM_REQUIRE_PEERS=1).
pub fn require() -> Option<Peers> {
    match peers() {
        Some(p) => Some(p),
        None if var("FLEETFORM_REQUIRE_PEERS").as_deref() == Some("1") => {
            panic!(
                "sushy peers not running: run tests/peers/sushy.sh start (FLEETFORM_REQUIRE_PEERS=1)"
            )
        }
        None => {
            eprintln!("skipped: sushy not running (tests/peers/sushy.sh start)");
            None
        }
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("fleetform_redfish=debug")
        .try_init();
}

pub fn provider() -> RedfishProvider {
    init_tracing();
    let opts = RedfishOptions {
        poll_interval: std::time::Duration::from_millis(500),
        power_timeout: std::time::Duration::from_secs(30),
        ..RedfishOptions::default()
    };
    RedfishProvider::with_options(Arc::new(LocalSecrets::new("/")), opts)
}

impl Peers {
    pub fn bmc(&self, endpoint: &str, system: &str) -> Value {
        json!({
            "endpoint": endpoint,
            "system": system,
            "credentials": {"username": self.user, "password": {"file": self.password_file}},
        })
    }

    pub fn password(&self) -> String {
        std::fs::read_to_string(&self.password_file)
            .unwrap()
            .trim()
            .to_string()
    }

    /// A raw client for out-of-band changes.
    pub fn raw(&self) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    /// The @odata.id of a system by name on a BMC (sushy redirects names to UUIDs).
    pub async fn system_path(&self, endpoint: &str, name: &str) -> String {
        let r: Value = self
            .raw()
            .get(format!("{endpoint}/redfish/v1/Systems/{name}"))
            .basic_auth(&self.user, Some(self.password()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["@odata.id"].as_str().unwrap().to_string()
    }

    pub async fn oob(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        path: &str,
        body: Value,
    ) -> reqwest::StatusCode {
        let r = self
            .raw()
            .request(method, format!("{endpoint}{path}"))
            .basic_auth(&self.user, Some(self.password()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status();
        assert!(
            s.is_success(),
            "out-of-band {path}: {s} {}",
            r.text().await.unwrap_or_default()
        );
        s
    }

    pub async fn get(&self, endpoint: &str, path: &str) -> Value {
        self.raw()
            .get(format!("{endpoint}{path}"))
            .basic_auth(&self.user, Some(self.password()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

pub fn rid(host: &str, aspect: &str) -> ResourceId {
    ResourceId::new("redfish", format!("host/{host}/{aspect}"))
}

/// observe + diff.
pub async fn plan(p: &RedfishProvider, d: &Desired) -> Result<(Change, Observed), ProviderError> {
    let rq = ObserveRequest {
        id: &d.id,
        spec: &d.spec,
        desired: true,
        unchanged: false,
    };
    let obs = p.observe(&[rq]).await.into_iter().next().unwrap()?;
    let change = p.diff(d, obs.as_ref())?;
    Ok((change, obs.unwrap()))
}

/// plan, apply when needed, and check that a re-plan is NoOp.
pub async fn converge(p: &RedfishProvider, d: &Desired) -> Change {
    let (change, obs) = plan(p, d).await.unwrap();
    if change.action != Action::NoOp {
        let rq = ApplyRequest {
            change: &change,
            desired: Some(d),
            last_applied: None,
            observed: Some(&obs),
        };
        p.apply(&rq, &ApplyContext::default()).await.unwrap();
    }
    let (again, _) = plan(p, d).await.unwrap();
    assert_eq!(
        again.action,
        Action::NoOp,
        "re-plan after apply is not NoOp: {:?}",
        again.fields
    );
    change
}

pub fn paths(c: &Change) -> Vec<&str> {
    c.fields.iter().map(|f| f.path.as_str()).collect()
}
