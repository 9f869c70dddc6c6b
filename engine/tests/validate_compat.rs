//! The compatibility gate at its boundaries: each cited row refuses the version just below
//! its floor and accepts the floor itself, and unverified rows refuse nothing. The fleets are
//! fixtures/invalid/driver-compat with one value replaced.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use fleetform_engine::diag::Diagnostic;
use fleetform_engine::load::{self, SourceFile};
use fleetform_engine::validate;

/// fixtures/invalid/driver-compat with `(file, from, to)` replacements applied.
fn fleet(edits: &[(&str, &str, &str)]) -> Vec<SourceFile> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/invalid/driver-compat");
    let mut files = load::read_dir(&dir).unwrap();
    for (file, from, to) in edits {
        let f = files.iter_mut().find(|f| f.path == *file).unwrap();
        let text = String::from_utf8(f.bytes.clone()).unwrap();
        assert!(text.contains(from), "{file} has no `{from}`");
        f.bytes = text.replacen(from, to, 1).into_bytes();
    }
    files
}

/// The rule codes validate reports for a fleet.
fn codes(files: &[SourceFile]) -> Vec<String> {
    let (docs, diags) = load::load(files);
    assert!(diags.is_empty(), "{diags:?}");
    match validate::validate(&docs) {
        Ok(_) => vec![],
        Err(d) => d.iter().map(|d: &Diagnostic| d.code.clone()).collect(),
    }
}

const DRIVER: &str = "\"550.54.15\"";

#[test]
fn b200_refuses_the_driver_just_below_570_133_20_and_accepts_it() {
    assert_eq!(
        codes(&fleet(&[("fleet.yaml", DRIVER, "\"570.124.06\"")])),
        ["driver-compat"]
    );
    assert!(codes(&fleet(&[("fleet.yaml", DRIVER, "\"570.133.20\"")])).is_empty());
    // A bare branch cannot be told below 570.133.20: not refused.
    assert!(codes(&fleet(&[("fleet.yaml", DRIVER, "\"570\"")])).is_empty());
}

#[test]
fn a_model_with_only_an_unverified_row_is_not_refused() {
    // H100's recalled floor was R525; nothing cited says so, so R470 passes for an H100-only
    // tenant. The B200 tenant t1 moves to H100 too.
    let f = fleet(&[
        ("fleet.yaml", DRIVER, "\"470.256.02\""),
        (
            "hosts.yaml",
            "model: B200, count: 8",
            "model: H100, count: 8",
        ),
    ]);
    assert!(codes(&f).is_empty());
}

#[test]
fn gpu_operator_25_3_is_the_floor_for_b200() {
    let ok = fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        ("fleet.yaml", "v26.7.0", "v25.3.0"),
    ]);
    assert!(codes(&ok).is_empty());
    let below = fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        ("fleet.yaml", "v26.7.0", "v24.9.5"),
    ]);
    assert_eq!(codes(&below), ["gpu-operator-compat"]);
}

#[test]
fn network_operator_26_1_accepts_kubernetes_1_35_and_refuses_1_36() {
    let base = [
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        ("fleet.yaml", "v26.4.1", "v26.1.2"),
    ];
    let k135 = [
        base[0],
        base[1],
        ("tenants.yaml", "version: \"1.34\"", "version: \"1.35\""),
    ];
    assert!(codes(&fleet(&k135)).is_empty());
    let k136 = [
        base[0],
        base[1],
        ("tenants.yaml", "version: \"1.34\"", "version: \"1.36\""),
    ];
    assert_eq!(codes(&fleet(&k136)), ["network-operator-compat"]);
    // A release without a row (26.4) is not checked against 1.36.
    let unlisted = [
        base[0],
        ("tenants.yaml", "version: \"1.34\"", "version: \"1.36\""),
    ];
    assert!(codes(&fleet(&unlisted)).is_empty());
}

#[test]
fn precompiled_drivers_are_refused_on_arm64_hosts_only() {
    let on_h100 = fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        (
            "fleet.yaml",
            "      driver:\n",
            "      driver:\n        usePrecompiled: true\n",
        ),
    ]);
    assert!(codes(&on_h100).is_empty());
    let on_gb200 = fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        (
            "fleet.yaml",
            "      driver:\n",
            "      driver:\n        usePrecompiled: true\n",
        ),
        (
            "hosts.yaml",
            "model: H100, count: 8}\n---",
            "model: GB200, count: 4}\n---",
        ),
    ]);
    assert_eq!(codes(&on_gb200), ["precompiled-driver"]);
    // A host-installed driver is the way out on arm64, Secure Boot or not.
    let host_driver = fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        (
            "fleet.yaml",
            "      driver:\n",
            "      driver:\n        enabled: false\n        usePrecompiled: true\n",
        ),
        (
            "hosts.yaml",
            "model: H100, count: 8}\n---",
            "model: GB200, count: 4}\n  secureBoot: true\n---",
        ),
    ]);
    assert!(codes(&host_driver).is_empty());
}

#[test]
fn secure_boot_on_arm64_without_a_host_driver_points_at_the_host_driver() {
    let f = fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        (
            "hosts.yaml",
            "model: H100, count: 8}\n---",
            "model: GB200, count: 4}\n  secureBoot: true\n---",
        ),
    ]);
    let (docs, _) = load::load(&f);
    let d = validate::validate(&docs).unwrap_err();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, "secure-boot-driver");
    let hint = d[0].hint.clone().unwrap_or_default();
    assert!(hint.contains("driver.enabled: false"), "{hint}");
    assert!(!hint.contains("usePrecompiled: true"), "{hint}");
}

#[test]
fn nfd_from_the_network_operator_is_fine_when_the_gpu_operator_values_turn_its_nfd_off() {
    let f = fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        (
            "fleet.yaml",
            "    networkOperator:\n      version: v26.4.1\n",
            "      values:\n        nfd: {enabled: false}\n    networkOperator:\n      version: v26.4.1\n      nfd: true\n",
        ),
    ]);
    assert!(codes(&f).is_empty());
    let both = fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        (
            "fleet.yaml",
            "    networkOperator:\n      version: v26.4.1\n",
            "    networkOperator:\n      version: v26.4.1\n      values:\n        nfd: {enabled: true}\n",
        ),
    ]);
    assert_eq!(codes(&both), ["singleton"]);
}
