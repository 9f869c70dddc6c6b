//! The redfish provider against real sushy-emulator peers (tests/peers/sushy.sh start):
//! the fake driver (power, boot, secure boot, virtual media), the libvirt
//! test:///default driver (BIOS attributes, BiosVersion + SimpleUpdate) and a
//! TLS emulator with a self-signed CA. Each test uses its own system so the
//! tests can run in parallel.
#![allow(clippy::unwrap_used)]

mod common;

use common::{converge, paths, plan, provider, require, rid};
use fleetform_contract::provider::{Action, ErrorKind, Provider};
use fleetform_contract::resource::Desired;
use reqwest::Method;
use serde_json::{Value, json};

fn desired(host: &str, aspect: &str, bmc: Value, rest: Value) -> Desired {
    let mut spec = rest;
    spec["bmc"] = bmc;
    Desired::new(rid(host, aspect), spec)
}

/// Waits (bounded) until the BMC itself reports a power state (the fake driver lands it 1-11 s later).
async fn wait_power(pe: &common::Peers, endpoint: &str, sys: &str, want: &str) {
    for _ in 0..60 {
        if pe.get(endpoint, sys).await["PowerState"] == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("{sys} never reached {want}");
}

#[tokio::test]
async fn power_on_then_replan_is_noop_and_out_of_band_off_is_drift_on_state() {
    let Some(pe) = require() else { return };
    let p = provider();
    let d = desired(
        "gpu-node-0",
        "power",
        pe.bmc(&pe.fake, "gpu-node-0"),
        json!({"state": "On"}),
    );
    let first = converge(&p, &d).await;
    assert_eq!(first.action, Action::Update);
    assert_eq!(paths(&first), ["/state"]);
    assert_eq!(
        first.disruption,
        fleetform_contract::provider::Disruption::PowerCycle,
        "a power state change cycles power"
    );
    assert_eq!(
        p.health(&d.id, &d.spec).await.unwrap(),
        fleetform_contract::provider::Health::Ready
    );

    // Someone powers it off behind our back.
    let sys = pe.system_path(&pe.fake, "gpu-node-0").await;
    pe.oob(
        Method::POST,
        &pe.fake,
        &format!("{sys}/Actions/ComputerSystem.Reset"),
        json!({"ResetType": "ForceOff"}),
    )
    .await;
    wait_power(&pe, &pe.fake, &sys, "Off").await;
    let (drift, _) = plan(&p, &d).await.unwrap();
    assert_eq!(drift.action, Action::Update);
    assert_eq!(paths(&drift), ["/state"]);
    assert_eq!(drift.fields[0].before, Some(json!("Off")));
    assert_eq!(drift.fields[0].after, Some(json!("On")));
}

#[tokio::test]
async fn boot_override_round_trip_and_out_of_band_target_is_drift_on_target_only() {
    let Some(pe) = require() else { return };
    let p = provider();
    // The fake driver ignores BootSourceOverrideEnabled (always Continuous): manage Continuous.
    let d = desired(
        "gpu-node-1",
        "boot",
        pe.bmc(&pe.fake, "gpu-node-1"),
        json!({"target": "Pxe", "enabled": "Continuous", "mode": "UEFI"}),
    );
    let first = converge(&p, &d).await;
    assert_eq!(paths(&first), ["/target"]);

    let sys = pe.system_path(&pe.fake, "gpu-node-1").await;
    pe.oob(
        Method::PATCH,
        &pe.fake,
        &sys,
        json!({"Boot": {"BootSourceOverrideTarget": "Cd"}}),
    )
    .await;
    let (drift, _) = plan(&p, &d).await.unwrap();
    assert_eq!(paths(&drift), ["/target"]);
    assert_eq!(drift.fields[0].before, Some(json!("Cd")));
}

#[tokio::test]
async fn boot_target_the_bmc_does_not_offer_fails_the_plan() {
    let Some(pe) = require() else { return };
    let p = provider();
    let d = desired(
        "gpu-node-1",
        "boot",
        pe.bmc(&pe.fake, "gpu-node-1"),
        json!({"target": "Floppy9", "enabled": "Once"}),
    );
    let err = plan(&p, &d).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("Floppy9") && err.message.contains("allowed: Pxe"),
        "{err}"
    );
}

#[tokio::test]
async fn secure_boot_round_trip_and_out_of_band_disable_is_drift() {
    let Some(pe) = require() else { return };
    let p = provider();
    let d = desired(
        "gpu-node-2",
        "secure-boot",
        pe.bmc(&pe.fake, "gpu-node-2"),
        json!({"enabled": true}),
    );
    let first = converge(&p, &d).await;
    assert_eq!(paths(&first), ["/enabled"]);
    let sys = pe.system_path(&pe.fake, "gpu-node-2").await;
    pe.oob(
        Method::PATCH,
        &pe.fake,
        &format!("{sys}/SecureBoot"),
        json!({"SecureBootEnable": false}),
    )
    .await;
    let (drift, _) = plan(&p, &d).await.unwrap();
    assert_eq!(paths(&drift), ["/enabled"]);
}

/// Serves one small file on 127.0.0.1 (the fake BMC downloads virtual media images).
async fn serve_image() -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route(
            "/boot.iso",
            axum::routing::get(|| async { "not really an ISO\n" }),
        )
        .route(
            "/other.iso",
            axum::routing::get(|| async { "another fake ISO\n" }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/boot.iso", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

#[tokio::test]
async fn virtual_media_insert_round_trip_and_out_of_band_eject_is_drift() {
    let Some(pe) = require() else { return };
    let p = provider();
    let (url, server) = serve_image().await;
    let d = desired(
        "gpu-node-3",
        "virtual-media",
        pe.bmc(&pe.fake, "gpu-node-3"),
        json!({"image": url, "inserted": true}),
    );
    let first = converge(&p, &d).await;
    assert_eq!(paths(&first), ["/inserted", "/image"]);

    // Another image while one is inserted: eject, then insert.
    let other = url.replace("boot.iso", "other.iso");
    let d2 = desired(
        "gpu-node-3",
        "virtual-media",
        pe.bmc(&pe.fake, "gpu-node-3"),
        json!({"image": other, "inserted": true}),
    );
    let swap = converge(&p, &d2).await;
    assert_eq!(paths(&swap), ["/image"]);
    let d = d2;

    let sys = pe.system_path(&pe.fake, "gpu-node-3").await;
    pe.oob(
        Method::POST,
        &pe.fake,
        &format!("{sys}/VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia"),
        json!({}),
    )
    .await;
    let (drift, _) = plan(&p, &d).await.unwrap();
    // Ejected: `inserted` differs (and so does the image, which a desired insert compares).
    assert_eq!(paths(&drift), ["/inserted", "/image"]);

    // Back to ejected through the provider.
    let eject = desired(
        "gpu-node-3",
        "virtual-media",
        pe.bmc(&pe.fake, "gpu-node-3"),
        json!({"image": null, "inserted": false}),
    );
    let c = converge(&p, &eject).await;
    assert_eq!(c.action, Action::NoOp, "already ejected out of band");
    server.abort();
}

#[tokio::test]
async fn bios_attributes_apply_at_once_on_libvirt_and_out_of_band_change_is_drift_on_that_attribute()
 {
    let Some(pe) = require() else { return };
    let p = provider();
    let d = desired(
        "gpu-node-0",
        "bios",
        pe.bmc(&pe.libvirt, "gpu-node-0"),
        json!({"attributes": {"ProcTurboMode": "Disabled", "SriovGlobalEnable": "Enabled", "NumCores": 10}}),
    );
    // Known baseline (the emulator keeps state between test runs).
    let sys = pe.system_path(&pe.libvirt, "gpu-node-0").await;
    let baseline =
        json!({"Attributes": {"ProcTurboMode": "Enabled", "SriovGlobalEnable": "Disabled"}});
    pe.oob(
        Method::PATCH,
        &pe.libvirt,
        &format!("{sys}/BIOS/Settings"),
        baseline,
    )
    .await;
    let first = converge(&p, &d).await;
    assert_eq!(
        paths(&first),
        ["/attributes/ProcTurboMode", "/attributes/SriovGlobalEnable"]
    );
    // Staging (or, here, applying at once) is never the disruptive step: the reset that makes
    // staged settings current is planned by the host's power resource (`applyAtReset`).
    assert_eq!(
        first.disruption,
        fleetform_contract::provider::Disruption::None
    );

    pe.oob(
        Method::PATCH,
        &pe.libvirt,
        &format!("{sys}/BIOS/Settings"),
        json!({"Attributes": {"ProcTurboMode": "Enabled"}}),
    )
    .await;
    let (drift, _) = plan(&p, &d).await.unwrap();
    assert_eq!(paths(&drift), ["/attributes/ProcTurboMode"]);
    assert_eq!(
        drift.disruption,
        fleetform_contract::provider::Disruption::None
    );
}

#[tokio::test]
async fn unknown_bios_attribute_fails_the_plan_naming_it() {
    let Some(pe) = require() else { return };
    let p = provider();
    let d = desired(
        "gpu-node-0",
        "bios",
        pe.bmc(&pe.libvirt, "gpu-node-0"),
        json!({"attributes": {"HyperDrive": "Enabled"}}),
    );
    let err = plan(&p, &d).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("unknown BIOS attribute `HyperDrive`"),
        "{err}"
    );
    assert!(err.message.contains("host gpu-node-0"), "{err}");
}

#[tokio::test]
async fn bios_on_a_bmc_without_bios_is_a_clear_permanent_error() {
    let Some(pe) = require() else { return };
    let p = provider();
    let d = desired(
        "gpu-node-4",
        "bios",
        pe.bmc(&pe.fake, "gpu-node-4"),
        json!({"attributes": {"ProcTurboMode": "Enabled"}}),
    );
    let err = plan(&p, &d).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("bios is unsupported by this BMC"),
        "{err}"
    );
}

#[tokio::test]
async fn firmware_bios_version_is_read_from_the_system_and_missing_inventory_is_named() {
    let Some(pe) = require() else { return };
    let p = provider();
    let ok = desired(
        "gpu-node-0",
        "firmware",
        pe.bmc(&pe.libvirt, "gpu-node-0"),
        json!({"expected": {"BIOS": "1.0.0"}}),
    );
    let (c, obs) = plan(&p, &ok).await.unwrap();
    assert_eq!(c.action, Action::NoOp, "{:?}", c.fields);
    assert!(
        obs.private
            .unwrap()
            .to_string()
            .contains("BMC does not expose FirmwareInventory")
    );

    let cpld = desired(
        "gpu-node-0",
        "firmware",
        pe.bmc(&pe.libvirt, "gpu-node-0"),
        json!({"expected": {"CPLD": "1.2"}}),
    );
    let err = plan(&p, &cpld).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message
            .contains("BMC does not expose FirmwareInventory")
            && err.message.contains("CPLD"),
        "{err}"
    );
}

#[tokio::test]
async fn firmware_update_through_simple_update_converges_bios_version() {
    let Some(pe) = require() else { return };
    let p = provider();
    // sushy's libvirt driver bumps the minor BIOS version on SimpleUpdate (it never downloads the image).
    let sys = pe.system_path(&pe.libvirt, "gpu-node-1").await;
    let now = pe.get(&pe.libvirt, &sys).await["BiosVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let v: Vec<u64> = now.split('.').map(|x| x.parse().unwrap()).collect();
    let next = format!("{}.{}.{}", v[0], v[1] + 1, v[2]);
    let d = desired(
        "gpu-node-1",
        "firmware",
        pe.bmc(&pe.libvirt, "gpu-node-1"),
        json!({"expected": {"BIOS": next}, "update": {"image": "http://127.0.0.1:9/bios.bin", "targets": ["system"]}}),
    );
    let first = converge(&p, &d).await;
    assert_eq!(paths(&first), ["/expected/BIOS"]);
    assert_eq!(
        first.disruption,
        fleetform_contract::provider::Disruption::HostReboot,
        "BIOS firmware activates at a host reset"
    );
}

#[tokio::test]
async fn inventory_is_observed_not_applied() {
    let Some(pe) = require() else { return };
    let p = provider();
    let d = desired(
        "gpu-node-1",
        "inventory",
        pe.bmc(&pe.libvirt, "gpu-node-1"),
        json!({"expect": {"gpuModel": "H100", "gpuCount": 8}}),
    );
    // A mismatch is a problem of the host at plan time (hardware is observed, not applied).
    let err = plan(&p, &d).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("GPU inventory does not match")
            && err
                .message
                .contains("gpu.count: the BMC reports 0, the manifest says 8"),
        "{err}"
    );
    // A host with no GPU matches.
    let none = desired(
        "gpu-node-1",
        "inventory",
        pe.bmc(&pe.libvirt, "gpu-node-1"),
        json!({"expect": {"gpuCount": 0}}),
    );
    assert_eq!(plan(&p, &none).await.unwrap().0.action, Action::NoOp);

    // The fake driver has no Processors at all.
    let fake = desired(
        "gpu-node-4",
        "inventory",
        pe.bmc(&pe.fake, "gpu-node-4"),
        json!({"expect": {"gpuCount": 8}}),
    );
    // Nothing to check against: said in the log, and not a reason to stop planning the host.
    let (change, observed) = plan(&p, &fake).await.unwrap();
    assert_eq!(change.action, Action::NoOp);
    assert_eq!(observed.state["unverified"], true);
}

#[tokio::test]
async fn unreachable_bmc_is_transient() {
    let Some(pe) = require() else { return };
    let p = provider();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = desired(
        "gpu-node-9",
        "power",
        pe.bmc(&format!("http://127.0.0.1:{port}"), "gpu-node-9"),
        json!({"state": "On"}),
    );
    let err = plan(&p, &d).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(
        err.message.contains("host gpu-node-9") && err.message.contains("unreachable"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_password_is_permanent_naming_host_and_user_never_the_password() {
    let Some(pe) = require() else { return };
    let p = provider();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "definitely-wrong-pw\n").unwrap();
    let bmc = json!({"endpoint": pe.fake, "system": "gpu-node-4",
                     "credentials": {"username": pe.user, "password": {"file": pw}}});
    let d = desired("gpu-node-4", "power", bmc, json!({"state": "Off"}));
    let err = plan(&p, &d).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(
        err.to_string(),
        format!(
            "redfish:host/gpu-node-4/power: host gpu-node-4: BMC rejected the credentials (user {})",
            pe.user
        )
    );
    assert!(!format!("{err:?}").contains("definitely-wrong-pw"));
}

#[tokio::test]
async fn tls_bmc_is_verified_against_its_ca_bundle() {
    let Some(pe) = require() else { return };
    let p = provider();
    let mut bmc = pe.bmc(&pe.tls, "gpu-node-0");
    bmc["caBundle"] = json!(pe.ca);
    let d = desired(
        "gpu-node-0",
        "secure-boot",
        bmc.clone(),
        json!({"enabled": false}),
    );
    let (c, _) = plan(&p, &d).await.unwrap();
    assert_eq!(c.action, Action::NoOp);

    // Without the CA the self-signed chain is refused: a permanent TLS error, not a retry loop.
    let mut plain = bmc.clone();
    plain.as_object_mut().unwrap().remove("caBundle");
    let d2 = desired(
        "gpu-node-0",
        "secure-boot",
        plain.clone(),
        json!({"enabled": false}),
    );
    let err = plan(&p, &d2).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("TLS"), "{err}");

    // insecure: true works (and warns).
    plain["insecure"] = json!(true);
    let d3 = desired(
        "gpu-node-0",
        "secure-boot",
        plain,
        json!({"enabled": false}),
    );
    assert_eq!(plan(&p, &d3).await.unwrap().0.action, Action::NoOp);
}

#[tokio::test]
async fn sushy_has_no_session_service_so_basic_auth_is_used() {
    let Some(pe) = require() else { return };
    let p = provider();
    let bmc: fleetform_redfish::spec::BmcSpec =
        serde_json::from_value(pe.bmc(&pe.fake, "gpu-node-5")).unwrap();
    let mode = fleetform_redfish::probe_auth(&p, &rid("gpu-node-5", "power"), "gpu-node-5", &bmc)
        .await
        .unwrap();
    assert_eq!(mode, fleetform_redfish::AuthMode::Basic);
}
