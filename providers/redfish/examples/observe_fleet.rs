//! Benchmark: observe the power state of every system of a sushy fleet
//! (`tests/peers/sushy.sh start && tests/peers/sushy.sh start-fleet --systems 500`).
//!
//! cargo run --release -p fleetform-redfish --example observe_fleet -- [PER_BMC_IN_FLIGHT]
//!
//! Reads SUSHY_FLEET_URLS / SUSHY_FLEET_PER_PROCESS / SUSHY_FLEET_SYSTEMS and the
//! credentials from sushy.env (env vars win). Systems are `host-<j>-<i>` on URL j.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use fleetform_contract::provider::{ObserveRequest, Provider};
use fleetform_contract::resource::ResourceId;
use fleetform_contract::secret::LocalSecrets;
use fleetform_redfish::{ClientConfig, RedfishOptions, RedfishProvider};
use serde_json::json;

fn env_file() -> HashMap<String, String> {
    let dir = std::env::var("FLEETFORM_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers"));
    let mut m = HashMap::new();
    for f in ["sushy.env", "sushy-fleet.env"] {
        if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
            for l in t.lines() {
                if let Some((k, v)) = l.trim_start_matches("export ").split_once('=') {
                    m.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    m
}

#[tokio::main]
async fn main() {
    let file = env_file();
    let get = |k: &str| {
        std::env::var(k)
            .ok()
            .or_else(|| file.get(k).cloned())
            .unwrap_or_else(|| panic!("{k} not set: run tests/peers/sushy.sh start-fleet"))
    };
    let urls: Vec<String> = get("SUSHY_FLEET_URLS")
        .split(',')
        .map(str::to_string)
        .collect();
    let per: usize = get("SUSHY_FLEET_PER_PROCESS").parse().unwrap();
    let total: usize = get("SUSHY_FLEET_SYSTEMS").parse().unwrap();
    let user = get("SUSHY_USERNAME");
    let pw = get("SUSHY_PASSWORD_FILE");
    let per_bmc: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(2);

    let mut specs = Vec::new();
    for n in 0..total {
        let (j, i) = (n / per, n % per);
        let host = format!("host-{j}-{i}");
        let spec = json!({"bmc": {"endpoint": urls[j], "system": host,
                                  "credentials": {"username": user, "password": {"file": pw}}},
                          "state": "On"});
        specs.push((
            ResourceId::new("redfish", format!("host/{host}/power")),
            spec,
        ));
    }
    let opts = RedfishOptions {
        client: ClientConfig {
            per_bmc_in_flight: per_bmc,
            ..ClientConfig::default()
        },
        ..RedfishOptions::default()
    };
    let p = RedfishProvider::with_options(Arc::new(LocalSecrets::new("/")), opts);
    let rqs: Vec<ObserveRequest<'_>> = specs
        .iter()
        .map(|(id, s)| ObserveRequest {
            id,
            spec: s,
            desired: true,
            unchanged: false,
        })
        .collect();
    for pass in ["cold (system lookup by name)", "warm (system path cached)"] {
        let t = Instant::now();
        let res = p.observe(&rqs).await;
        let dt = t.elapsed();
        let ok = res.iter().filter(|r| r.is_ok()).count();
        if let Some(Err(e)) = res.iter().find(|r| r.is_err()) {
            eprintln!("first error: {e}");
        }
        println!(
            "{pass}: observed {ok}/{} systems on {} BMC endpoints, per-BMC in-flight {per_bmc}: {:.2} s ({:.1} ms/system)",
            rqs.len(),
            urls.len(),
            dt.as_secs_f64(),
            dt.as_secs_f64() * 1000.0 / rqs.len() as f64
        );
    }
}
