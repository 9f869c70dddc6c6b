//! The redfish provider against every recorded real BMC tree (../shared/fixtures/redfish)
//! served by the stateful simulator in common/bmcsim.rs: BIOS changes are staged in the
//! settings object the BMC links, and the host's power resource plans and performs the one
//! reset that applies them. Needs no peer.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::bmcsim::{self, PASSWORD, Sim, TREES};
use common::{plan, rid};
use fleetform_contract::provider::{
    Action, ApplyContext, ApplyRequest, ErrorKind, Health, Provider,
};
use fleetform_contract::resource::Desired;
use fleetform_contract::secret::LocalSecrets;
use fleetform_redfish::{RedfishOptions, RedfishProvider};
use serde_json::{Value, json};

fn provider() -> RedfishProvider {
    common::init_tracing();
    RedfishProvider::with_options(
        Arc::new(LocalSecrets::new("/")),
        RedfishOptions {
            poll_interval: Duration::from_millis(20),
            power_timeout: Duration::from_secs(5),
            graceful_timeout: Duration::from_millis(400),
            ..RedfishOptions::default()
        },
    )
}

fn password_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pw");
    std::fs::write(&p, format!("{PASSWORD}\n")).unwrap();
    (dir, p)
}

fn desired(
    url: &str,
    host: &str,
    system: &str,
    aspect: &str,
    rest: Value,
    pw: &PathBuf,
) -> Desired {
    let mut spec = rest;
    spec["bmc"] = json!({"endpoint": url, "system": system,
                         "credentials": {"username": "root", "password": {"file": pw}}});
    Desired::new(rid(host, aspect), spec)
}

async fn apply(
    p: &RedfishProvider,
    d: &Desired,
) -> Result<(), fleetform_contract::provider::ProviderError> {
    let (change, obs) = plan(p, d).await?;
    if change.action == Action::NoOp {
        return Ok(());
    }
    let rq = ApplyRequest {
        change: &change,
        desired: Some(d),
        last_applied: None,
        observed: Some(&obs),
    };
    p.apply(&rq, &ApplyContext::default()).await.map(|_| ())
}

/// stage one BIOS attribute, plan the reset on power, apply it: exactly one reset, the value
/// applied, everything NoOp afterwards.
async fn bios_change_takes_one_reset(tree: &str, system: &str, sim: &Sim) {
    let (_d, pw) = password_file();
    let p = provider();
    let (name, old, new) = bmcsim::flippable_bios_attribute(sim, system);
    let attrs = json!({ name.clone(): new.clone() });
    let bios = desired(
        &sim.url,
        tree,
        system,
        "bios",
        json!({"attributes": attrs}),
        &pw,
    );
    let power = desired(
        &sim.url,
        tree,
        system,
        "power",
        json!({"state": "On", "applyAtReset": {"bios": attrs}}),
        &pw,
    );

    // The plan: the BIOS attribute changes (staging, not disruptive), and the power resource
    // names the reset and its reason.
    let (c, _) = plan(&p, &bios).await.unwrap();
    assert_eq!(c.action, Action::Update, "{tree}");
    assert_eq!(
        c.disruption,
        fleetform_contract::provider::Disruption::None,
        "{tree}: staging is not disruptive"
    );
    let (c, _) = plan(&p, &power).await.unwrap();
    assert_eq!(c.action, Action::Update, "{tree}");
    assert_eq!(
        c.disruption,
        fleetform_contract::provider::Disruption::HostReboot,
        "{tree}"
    );
    let f = &c.fields[0];
    assert_eq!(f.path, "/awaitingReset", "{tree}");
    assert!(
        f.before.as_ref().unwrap().to_string().contains(&name),
        "{tree}: {f:?}"
    );
    assert!(
        f.changed_by.as_deref().unwrap().contains("Restart"),
        "{tree}: {f:?}"
    );

    // Stage: held pending, health Ready (the reset is the power resource's), value unchanged.
    apply(&p, &bios).await.unwrap();
    assert_eq!(
        sim.bios_attribute(system, &name),
        old,
        "{tree}: applied before a reset"
    );
    let h = p.health(&bios.id, &bios.spec).await.unwrap();
    assert_eq!(h, Health::Ready, "{tree}");
    let (c, _) = plan(&p, &bios).await.unwrap();
    assert!(
        c.fields[0]
            .changed_by
            .as_deref()
            .unwrap()
            .starts_with("staged"),
        "{tree}: {:?}",
        c.fields
    );
    assert!(sim.resets().is_empty(), "{tree}: staging reset the host");

    // A BMC that lists SupportedApplyTimes with OnReset (iDRAC) is told so in the PATCH.
    let bios_patch = sim
        .state
        .lock()
        .patches
        .iter()
        .find(|(_, b)| b.get("Attributes").is_some())
        .cloned()
        .unwrap();
    let wants_apply_time = tree == "dell_r750";
    assert_eq!(
        bios_patch.1.get("@Redfish.SettingsApplyTime").is_some(),
        wants_apply_time,
        "{tree}: {bios_patch:?}"
    );

    // The one reset.
    apply(&p, &power).await.unwrap();
    assert_eq!(sim.bios_attribute(system, &name), new, "{tree}");
    let resets = sim.resets();
    assert_eq!(resets.len(), 1, "{tree}: {resets:?}");
    assert!(resets[0].1.contains("Restart"), "{tree}: {resets:?}");
    assert_eq!(sim.power(system), json!("On"));
    for d in [&bios, &power] {
        let (c, _) = plan(&p, d).await.unwrap();
        assert_eq!(c.action, Action::NoOp, "{tree} {}: {:?}", d.id, c.fields);
    }
    // Re-apply: nothing is sent.
    apply(&p, &power).await.unwrap();
    assert_eq!(sim.resets().len(), 1, "{tree}");
}

#[tokio::test]
async fn every_recorded_bmc_stages_bios_and_applies_it_with_one_reset() {
    for (tree, system) in TREES {
        let sim = bmcsim::serve(tree, Duration::from_millis(30)).await;
        bios_change_takes_one_reset(tree, system, &sim).await;
    }
}

#[tokio::test]
async fn a_reset_accepted_then_the_connection_dropped_is_sent_exactly_once() {
    let (tree, system) = ("nvidia_gb200", "System_0");
    let sim = bmcsim::serve(tree, Duration::from_millis(30)).await;
    sim.state.lock().drop_next_reset_answer = true;
    bios_change_takes_one_reset(tree, system, &sim).await;
}

#[tokio::test]
async fn a_graceful_restart_the_os_ignores_is_forced_once_after_reading_power() {
    let (tree, system) = ("dell_r750", "System.Embedded.1");
    let sim = bmcsim::serve(tree, Duration::from_millis(30)).await;
    sim.state.lock().ignore_graceful = true;
    let (_d, pw) = password_file();
    let p = provider();
    let (name, _, new) = bmcsim::flippable_bios_attribute(&sim, system);
    let attrs = json!({ name.clone(): new.clone() });
    let bios = desired(
        &sim.url,
        tree,
        system,
        "bios",
        json!({"attributes": attrs}),
        &pw,
    );
    let power = desired(
        &sim.url,
        tree,
        system,
        "power",
        json!({"state": "On", "applyAtReset": {"bios": attrs}}),
        &pw,
    );
    apply(&p, &bios).await.unwrap();
    apply(&p, &power).await.unwrap();
    let types: Vec<String> = sim.resets().into_iter().map(|(_, t)| t).collect();
    assert_eq!(types, ["GracefulRestart", "ForceRestart"]);
    assert_eq!(sim.bios_attribute(system, &name), new);
}

#[tokio::test]
async fn secure_boot_is_staged_and_the_reset_makes_it_current() {
    let (tree, system) = ("supermicro_hgx_h100", "1");
    let sim = bmcsim::serve(tree, Duration::from_millis(30)).await;
    let (_d, pw) = password_file();
    let p = provider();
    let sb = desired(
        &sim.url,
        tree,
        system,
        "secure-boot",
        json!({"enabled": true}),
        &pw,
    );
    let power = desired(
        &sim.url,
        tree,
        system,
        "power",
        json!({"state": "On", "applyAtReset": {"secureBoot": true}}),
        &pw,
    );
    apply(&p, &sb).await.unwrap();
    let (c, _) = plan(&p, &power).await.unwrap();
    assert_eq!(c.fields[0].path, "/awaitingReset", "{:?}", c.fields);
    apply(&p, &power).await.unwrap();
    assert_eq!(sim.resets().len(), 1);
    let (c, _) = plan(&p, &power).await.unwrap();
    assert_eq!(c.action, Action::NoOp, "{:?}", c.fields);
}

#[tokio::test]
async fn a_down_bmc_fails_only_its_own_host_and_says_where() {
    let (_d, pw) = password_file();
    let p = provider();
    let sim = bmcsim::serve("hpe_dl385", Duration::from_millis(30)).await;
    let down = bmcsim::down_endpoint().await;
    let ok = desired(&sim.url, "hpe", "1", "power", json!({"state": "On"}), &pw);
    let bad = desired(&down, "gone", "1", "power", json!({"state": "On"}), &pw);
    let (c, _) = plan(&p, &ok).await.unwrap();
    assert_eq!(c.action, Action::NoOp);
    let err = plan(&p, &bad).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(
        err.message.contains("host gone") && err.message.contains(&down),
        "{err}"
    );
}

#[tokio::test]
async fn a_system_that_is_not_there_lists_the_candidates_and_the_field() {
    let (_d, pw) = password_file();
    let p = provider();
    let sim = bmcsim::serve("nvidia_dgx_h100", Duration::from_millis(30)).await;
    let d = desired(
        &sim.url,
        "dgx",
        "Nope",
        "power",
        json!({"state": "On"}),
        &pw,
    );
    let err = plan(&p, &d).await.unwrap_err();
    assert!(err.message.contains("bmc.systemId"), "{err}");
    assert!(
        err.message.contains("DGX") && err.message.contains("HGX_Baseboard_0"),
        "{err}"
    );
    assert!(err.message.contains(&sim.url), "{err}");
    let mut d = desired(&sim.url, "dgx", "", "power", json!({"state": "On"}), &pw);
    d.spec["bmc"].as_object_mut().unwrap().remove("system");
    let err = plan(&p, &d).await.unwrap_err();
    assert!(err.message.contains("set bmc.systemId"), "{err}");
}

#[tokio::test]
async fn a_bios_without_a_settings_link_is_read_only_and_no_url_is_guessed() {
    let (_d, pw) = password_file();
    let p = provider();
    let (tree, system) = ("nvidia_gb200", "System_0");
    let sim = bmcsim::serve(tree, Duration::from_millis(30)).await;
    let (name, _, new) = bmcsim::flippable_bios_attribute(&sim, system);
    sim.state
        .lock()
        .strip_settings_link("/redfish/v1/Systems/System_0/Bios");
    let d = desired(
        &sim.url,
        tree,
        system,
        "bios",
        json!({"attributes": {name.clone(): new}}),
        &pw,
    );
    let err = plan(&p, &d).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("read-only") && err.message.contains(&name),
        "{err}"
    );
    assert!(
        !sim.state
            .lock()
            .log
            .iter()
            .any(|(_, path)| path.ends_with("/Bios/Settings")),
        "a settings URL was guessed"
    );
}

/// What each recorded BMC holds: (tree, system, GPU model substring, GPU count).
const GPUS: &[(&str, &str, Option<&str>, u64)] = &[
    ("dell_r750", "System.Embedded.1", Some("H100"), 1),
    ("supermicro_hgx_h100", "1", Some("H100"), 8),
    ("nvidia_dgx_h100", "DGX", Some("H100"), 8),
    ("nvidia_gb200", "System_0", Some("GB200"), 4),
];

#[tokio::test]
async fn the_gpu_inventory_of_every_recorded_gpu_bmc_matches_and_a_mismatch_is_a_host_problem() {
    let (_d, pw) = password_file();
    let p = provider();
    for (tree, system, model, count) in GPUS {
        let sim = bmcsim::serve(tree, Duration::from_millis(30)).await;
        let mut expect = json!({"gpuCount": count});
        if let Some(m) = model {
            expect["gpuModel"] = json!(m);
        }
        let d = desired(
            &sim.url,
            tree,
            system,
            "inventory",
            json!({"expect": expect}),
            &pw,
        );
        let (c, _) = plan(&p, &d).await.unwrap_or_else(|e| panic!("{tree}: {e}"));
        assert_eq!(c.action, Action::NoOp, "{tree}: {:?}", c.fields);
        let d = desired(
            &sim.url,
            tree,
            system,
            "inventory",
            json!({"expect": {"gpuCount": count + 1, "gpuModel": "B300"}}),
            &pw,
        );
        let err = plan(&p, &d).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent, "{tree}");
        assert!(
            err.message
                .contains(&format!("host {tree}: the GPU inventory does not match"))
                && err.message.contains("gpu.count"),
            "{tree}: {err}"
        );
        if *tree != "nvidia_gb200" {
            assert!(err.message.contains("gpu.model"), "{tree}: {err}");
        }
    }
}

#[tokio::test]
async fn a_host_with_no_gpu_matches_on_a_bmc_that_reports_none() {
    let (_d, pw) = password_file();
    let p = provider();
    for (tree, system) in [("hpe_dl385", "1"), ("public-rackmount1", "437XR1138R2")] {
        let sim = bmcsim::serve(tree, Duration::from_millis(30)).await;
        let d = desired(
            &sim.url,
            tree,
            system,
            "inventory",
            json!({"expect": {"gpuCount": 0}}),
            &pw,
        );
        let (c, _) = plan(&p, &d).await.unwrap_or_else(|e| panic!("{tree}: {e}"));
        assert_eq!(c.action, Action::NoOp, "{tree}");
    }
}

#[tokio::test]
async fn a_system_lookup_error_is_said_once_per_host() {
    let (_d, pw) = password_file();
    let p = provider();
    let sim = bmcsim::serve("nvidia_gb200", Duration::from_millis(30)).await;
    let ds: Vec<Desired> = [
        ("power", json!({"state": "On"})),
        ("secure-boot", json!({"enabled": false})),
        ("inventory", json!({"expect": {"gpuCount": 4}})),
    ]
    .into_iter()
    .map(|(a, rest)| desired(&sim.url, "tray", "System_9", a, rest, &pw))
    .collect();
    let rqs: Vec<_> = ds
        .iter()
        .map(|d| fleetform_contract::provider::ObserveRequest {
            id: &d.id,
            spec: &d.spec,
            desired: true,
            unchanged: false,
        })
        .collect();
    let errs: Vec<String> = p
        .observe(&rqs)
        .await
        .into_iter()
        .map(|r| r.unwrap_err().message)
        .collect();
    let full: Vec<&String> = errs.iter().filter(|m| m.contains("bmc.systemId")).collect();
    assert_eq!(full.len(), 1, "{errs:?}");
    assert!(full[0].contains("System_0, HGX_Baseboard_0"), "{errs:?}");
    assert!(
        errs.iter()
            .filter(|m| m.contains("the same BMC error as redfish:host/tray/power"))
            .count()
            == 2,
        "{errs:?}"
    );
}

/// Each aspect on each recorded tree: what a plan says (fixed expectations, so a change
/// in how a real BMC shape is read shows up here).
#[tokio::test]
async fn every_aspect_is_observed_on_every_recorded_tree() {
    let (_d, pw) = password_file();
    let p = provider();
    let mut report = Vec::new();
    for (tree, system) in TREES {
        let sim = bmcsim::serve(tree, Duration::from_millis(30)).await;
        for (aspect, rest) in [
            ("power", json!({"state": "On"})),
            ("secure-boot", json!({"enabled": false})),
            ("boot", json!({"target": "Pxe", "enabled": "Once"})),
            ("virtual-media", json!({"inserted": false})),
            ("firmware", json!({"expected": {"BIOS": "0"}})),
        ] {
            let d = desired(&sim.url, tree, system, aspect, rest, &pw);
            report.push(match plan(&p, &d).await {
                Ok((c, _)) => format!("{tree} {aspect}: {:?} {:?}", c.action, common::paths(&c)),
                Err(e) => format!("{tree} {aspect}: {:?}", e.kind),
            });
        }
    }
    let expected = "\
dell_r750 power: NoOp []
dell_r750 secure-boot: NoOp []
dell_r750 boot: Update [\"/target\", \"/enabled\"]
dell_r750 virtual-media: NoOp []
dell_r750 firmware: Update [\"/expected/BIOS\"]
hpe_dl385 power: NoOp []
hpe_dl385 secure-boot: NoOp []
hpe_dl385 boot: Update [\"/target\", \"/enabled\"]
hpe_dl385 virtual-media: NoOp []
hpe_dl385 firmware: Update [\"/expected/BIOS\"]
supermicro_hgx_h100 power: NoOp []
supermicro_hgx_h100 secure-boot: NoOp []
supermicro_hgx_h100 boot: Update [\"/enabled\"]
supermicro_hgx_h100 virtual-media: NoOp []
supermicro_hgx_h100 firmware: Update [\"/expected/BIOS\"]
nvidia_dgx_h100 power: NoOp []
nvidia_dgx_h100 secure-boot: NoOp []
nvidia_dgx_h100 boot: Update [\"/target\", \"/enabled\"]
nvidia_dgx_h100 virtual-media: Permanent
nvidia_dgx_h100 firmware: Update [\"/expected/BIOS\"]
nvidia_gb200 power: NoOp []
nvidia_gb200 secure-boot: NoOp []
nvidia_gb200 boot: Update [\"/target\", \"/enabled\"]
nvidia_gb200 virtual-media: NoOp []
nvidia_gb200 firmware: Update [\"/expected/BIOS\"]
public-rackmount1 power: NoOp []
public-rackmount1 secure-boot: NoOp []
public-rackmount1 boot: NoOp []
public-rackmount1 virtual-media: Update [\"/inserted\"]
public-rackmount1 firmware: Update [\"/expected/BIOS\"]";
    assert_eq!(report.join("\n"), expected);

    // The two that cannot be done say why, naming what the BMC has.
    let sim = bmcsim::serve("nvidia_dgx_h100", Duration::from_millis(30)).await;
    let d = desired(
        &sim.url,
        "dgx",
        "DGX",
        "virtual-media",
        json!({"inserted": false}),
        &pw,
    );
    let e = plan(&p, &d).await.unwrap_err();
    assert!(
        e.message
            .contains("virtual media is unsupported by this BMC"),
        "{e}"
    );
    let sim = bmcsim::serve("nvidia_gb200", Duration::from_millis(30)).await;
    let d = desired(
        &sim.url,
        "gb",
        "System_0",
        "firmware",
        json!({"expected": {"HostFPGA": "0"}}),
        &pw,
    );
    let e = plan(&p, &d).await.unwrap_err();
    assert!(
        e.message.contains("it has: CX7_0, FW_BMC_0") && e.message.contains("UEFI"),
        "{e}"
    );
    let d = desired(
        &sim.url,
        "gb",
        "System_0",
        "firmware",
        json!({"expected": {"UEFI": "0"}}),
        &pw,
    );
    assert_eq!(plan(&p, &d).await.unwrap().0.action, Action::Update);
}

/// A BMC that can hold an image until the host resets (Dell's SimpleUpdate offers `OnReset`)
/// is asked to, so it never restarts the host by itself; one that does not say so (GB200's
/// recording, given a SimpleUpdate) gets no apply time, and the BMC's own firmware never does.
#[tokio::test]
async fn host_firmware_is_installed_on_reset_where_the_bmc_offers_it() {
    let (_d, pw) = password_file();
    let p = provider();
    let sim = bmcsim::serve("dell_r750", Duration::from_millis(30)).await;
    let install = |component: &str| {
        json!({"expected": {component: "9.9.9"},
               "updates": {component: {"image": "http://127.0.0.1:9/fw.bin", "targets": ["/redfish/v1/UpdateService/FirmwareInventory/x"]}}})
    };
    for component in ["BIOS", "BMC"] {
        let d = desired(
            &sim.url,
            "dell",
            "System.Embedded.1",
            "firmware",
            install(component),
            &pw,
        );
        let (change, obs) = plan(&p, &d).await.unwrap();
        let rq = fleetform_contract::provider::ApplyRequest {
            change: &change,
            desired: Some(&d),
            last_applied: None,
            observed: Some(&obs),
        };
        p.apply(&rq, &fleetform_contract::provider::ApplyContext::default())
            .await
            .unwrap();
    }
    let updates = sim.state.lock().updates.clone();
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert_eq!(updates[0]["@Redfish.OperationApplyTime"], "OnReset");
    assert!(
        updates[1].get("@Redfish.OperationApplyTime").is_none(),
        "the BMC's own: {}",
        updates[1]
    );
}
