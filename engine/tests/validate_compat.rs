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

/// The base fleet with a good driver, precompiled drivers on, and tenant t1's `nodeOs`.
fn precompiled_on(node_os: &str) -> Vec<SourceFile> {
    fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        (
            "fleet.yaml",
            "      driver:\n",
            "      driver:\n        usePrecompiled: true\n",
        ),
        ("tenants.yaml", "nodeOs: {byo: true}", node_os),
    ])
}

#[test]
fn precompiled_drivers_follow_the_os_and_kernel_rows() {
    // In a row: Ubuntu 24.04 on a 6.8 generic kernel, and 22.04 on 5.15 nvidia.
    for ok in [
        "nodeOs: {byo: true, os: ubuntu24.04, kernel: 6.8.0-49-generic}",
        "nodeOs: {byo: true, os: ubuntu22.04, kernel: 5.15.0-1063-nvidia}",
        // Declared OS without a kernel: the OS row alone is checked.
        "nodeOs: {byo: true, os: ubuntu22.04}",
        // Nothing declared: nothing checked beyond the arm64 rule.
        "nodeOs: {byo: true}",
    ] {
        assert!(codes(&precompiled_on(ok)).is_empty(), "{ok}");
    }
    // Off the rows: an OS without precompiled drivers, a kernel line 24.04 has none for, a
    // flavour NVIDIA builds none for.
    for bad in [
        "nodeOs: {byo: true, os: rhel9.4}",
        "nodeOs: {byo: true, os: ubuntu24.04, kernel: 6.11.0-1008-generic}",
        "nodeOs: {byo: true, os: ubuntu24.04, kernel: 6.8.0-1015-gcp}",
    ] {
        assert_eq!(codes(&precompiled_on(bad)), ["precompiled-driver"], "{bad}");
    }
    // Without usePrecompiled the same kernel is fine: the container builds on the node.
    let built = fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        (
            "tenants.yaml",
            "nodeOs: {byo: true}",
            "nodeOs: {byo: true, os: ubuntu24.04, kernel: 6.11.0-1008-generic}",
        ),
    ]);
    assert!(codes(&built).is_empty());
}

#[test]
fn ubuntu_24_04_has_precompiled_drivers_from_r550_and_22_04_from_r535() {
    let on = |os: &str, driver: &str| {
        fleet(&[
            ("fleet.yaml", DRIVER, driver),
            (
                "fleet.yaml",
                "      driver:\n",
                "      driver:\n        usePrecompiled: true\n",
            ),
            (
                "hosts.yaml",
                "model: B200, count: 8",
                "model: H100, count: 8",
            ),
            ("tenants.yaml", "nodeOs: {byo: true}", os),
        ])
    };
    let u24 = "nodeOs: {byo: true, os: ubuntu24.04}";
    let u22 = "nodeOs: {byo: true, os: ubuntu22.04}";
    assert!(codes(&on(u24, "\"550.54.15\"")).is_empty());
    assert_eq!(codes(&on(u24, "\"535.230.02\"")), ["precompiled-driver"]);
    assert!(codes(&on(u22, "\"535.230.02\"")).is_empty());
    assert_eq!(codes(&on(u22, "\"525.147.05\"")), ["precompiled-driver"]);
}

#[test]
fn network_operator_26_1_refuses_an_os_it_was_not_validated_on() {
    let on = |os: &str| {
        fleet(&[
            ("fleet.yaml", DRIVER, "\"595.91.07\""),
            ("fleet.yaml", "v26.4.1", "v26.1.2"),
            ("tenants.yaml", "nodeOs: {byo: true}", os),
        ])
    };
    assert!(codes(&on("nodeOs: {byo: true, os: rhel9.6}")).is_empty());
    assert!(codes(&on("nodeOs: {byo: true, os: rhcos4.19}")).is_empty());
    // 9.5 sits between the listed 9.4 and 9.6; Debian is not listed at all.
    assert_eq!(
        codes(&on("nodeOs: {byo: true, os: rhel9.5}")),
        ["network-operator-compat"]
    );
    assert_eq!(
        codes(&on("nodeOs: {byo: true, os: debian12}")),
        ["network-operator-compat"]
    );
}

/// The base fleet with a DOCA-OFED driver (`ofed`) and tenant t1's `nodeOs`.
fn doca(ofed: &str, node_os: &str) -> Vec<SourceFile> {
    fleet(&[
        ("fleet.yaml", DRIVER, "\"595.91.07\""),
        (
            "fleet.yaml",
            "    networkOperator:\n      version: v26.4.1\n",
            &format!("    networkOperator:\n      version: v26.4.1\n      ofedDriver: {ofed}\n"),
        ),
        ("tenants.yaml", "nodeOs: {byo: true}", node_os),
    ])
}

#[test]
fn precompiled_doca_ofed_is_refused_off_ubuntu_and_off_the_listed_flavours() {
    let forced = "{version: doca3.4.1-26.04-1.1.0.0-1, forcePrecompiled: true}";
    assert!(
        codes(&doca(
            forced,
            "nodeOs: {byo: true, os: ubuntu22.04, kernel: 5.15.0-1063-azure}"
        ))
        .is_empty()
    );
    assert_eq!(
        codes(&doca(forced, "nodeOs: {byo: true, os: rhel9.4}")),
        ["doca-precompiled"]
    );
    assert_eq!(
        codes(&doca(
            forced,
            "nodeOs: {byo: true, os: ubuntu24.04, kernel: 6.8.0-1015-gcp}"
        )),
        ["doca-precompiled"]
    );
    // Built on the node, any OS and flavour goes.
    let built = "{version: doca3.4.1-26.04-1.1.0.0-1}";
    assert!(
        codes(&doca(
            built,
            "nodeOs: {byo: true, os: ubuntu24.04, kernel: 6.8.0-1015-gcp}"
        ))
        .is_empty()
    );
}

#[test]
fn secure_boot_refuses_doca_ofed_containers_precompiled_or_not() {
    for ofed in [
        "{version: doca3.4.1-26.04-1.1.0.0-1}",
        "{version: doca3.4.1-26.04-1.1.0.0-1, forcePrecompiled: true}",
    ] {
        let mut f = doca(ofed, "nodeOs: {byo: true}");
        let hosts = f.iter_mut().find(|f| f.path == "hosts.yaml").unwrap();
        let text = String::from_utf8(hosts.bytes.clone()).unwrap();
        // Secure Boot on an H100 host with precompiled (signed) GPU drivers: only OFED is left.
        hosts.bytes = text
            .replacen(
                "model: H100, count: 8}\n---",
                "model: H100, count: 8}\n  secureBoot: true\n---",
                1,
            )
            .into_bytes();
        let fleet_file = f.iter_mut().find(|f| f.path == "fleet.yaml").unwrap();
        let text = String::from_utf8(fleet_file.bytes.clone()).unwrap();
        fleet_file.bytes = text
            .replacen(
                "      driver:\n",
                "      driver:\n        usePrecompiled: true\n",
                1,
            )
            .into_bytes();
        let (docs, _) = load::load(&f);
        let d = validate::validate(&docs).unwrap_err();
        assert_eq!(d.len(), 1, "{ofed}: {d:?}");
        assert_eq!(d[0].code, "secure-boot-driver");
        let hint = d[0].hint.clone().unwrap_or_default();
        assert!(hint.contains("doca-unsigned"), "{hint}");
    }
}

#[test]
fn an_os_or_kernel_that_does_not_parse_is_named_at_its_field() {
    let bad_os = precompiled_on("nodeOs: {byo: true, os: Ubuntu 24.04}");
    let (docs, _) = load::load(&bad_os);
    let d = validate::validate(&docs).unwrap_err();
    assert_eq!(d[0].code, "node-os");
    assert!(d[0].summary.contains("Ubuntu 24.04"), "{}", d[0].summary);
    assert_eq!(
        codes(&precompiled_on("nodeOs: {byo: true, kernel: six}")),
        ["node-os"]
    );
}
