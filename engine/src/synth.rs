//! Synthetic fleets for benchmarks and scale tests: valid, deterministic, with
//! realistic proportions.
//!
//! Racks of 17 hosts (16 in service + 1 spare, ~6% spares); three of every four racks
//! are HGX (H100 or H200, 8 GPUs, two pools of 8), every fourth is a GB200 NVL72
//! domain (4 GPUs per tray, one pool of 16 with DRA ComputeDomains). Every third HGX
//! pool is MIG-partitioned. Pools go to tenants round-robin; each tenant with a pool
//! runs one NIM. One file per rack, plus fleet, tenants, pools and NIMs files.
//! Every host boots with Secure Boot and GB200 trays are arm64, for which NVIDIA ships no
//! precompiled (signed) driver containers: the hosts carry a signed driver and the GPU
//! Operator runs none (`driver.enabled: false`), which the compat gate accepts. DOCA-OFED
//! likewise comes with the hosts: the Network Operator runs no `ofedDriver` (its containers,
//! precompiled or built on the node, are unsigned).

use std::fmt::Write as _;

use crate::load::SourceFile;

const HDR: &str = "# yaml-language-server: $schema=../../schemas/fleet.v1alpha1.json\n";

/// A valid fleet of about `hosts` hosts (rounded up to whole racks) and `tenants` tenants.
pub fn synthetic_fleet(hosts: usize, tenants: usize) -> Vec<SourceFile> {
    let tenants = tenants.max(1);
    let racks = hosts.div_ceil(17).max(1);
    let mut files = Vec::new();
    files.push(file(
        "fleet.yaml",
        format!(
            "{HDR}apiVersion: fleetform.dev/v1alpha1
kind: Fleet
metadata:
  name: synthetic
spec:
  registries:
    ngc: {{endpoint: https://nvcr.io, username: $oauthtoken, apiKey: {{file: ../secrets/ngc-api-key}}}}
  operators:
    gpuOperator:
      version: v26.7.0
      driver: {{version: \"595.91.07\", enabled: false}}
      migStrategy: single
    networkOperator:
      version: v26.4.1
      rdmaSharedDevicePlugin: {{}}
    nimOperator: {{version: v3.1.2}}
  schedulers:
    kai: {{version: v0.13.0, queues: [{{name: default}}]}}
  managementCluster:
    kubeconfig: {{file: ../secrets/mgmt.kubeconfig}}
"
        ),
    ));
    // (pool name, rack, hosts, kind) where kind 0 = whole GPUs, 1 = MIG, 2 = DRA.
    let mut pools: Vec<(String, Vec<String>, u8, &'static str)> = Vec::new();
    let mut hgx_pool = 0usize;
    for r in 0..racks {
        let rack = format!("r{r:04}");
        let nvl = r % 4 == 3;
        let (model, count) = match (nvl, r % 4) {
            (true, _) => ("GB200", 4),
            (false, 2) => ("H200", 8),
            _ => ("H100", 8),
        };
        let mut y = String::with_capacity(17 * 700);
        y.push_str(HDR);
        let _ = write!(
            y,
            "apiVersion: fleetform.dev/v1alpha1\nkind: Rack\nmetadata:\n  name: {rack}\nspec:\n  faultDomain: {}\n  location: {{site: dc1, row: \"{}\", position: \"{}\"}}\n",
            if nvl { "nvl72" } else { "rack" },
            r / 20,
            r % 20
        );
        let mut names = Vec::with_capacity(16);
        for n in 0..17 {
            let name = format!("{rack}-n{n:02}");
            let spare = n == 16;
            let _ = write!(
                y,
                "---
apiVersion: fleetform.dev/v1alpha1
kind: Host
metadata:
  name: {name}
  labels: {{sku: {model}}}
spec:
  rack: {rack}
  bmc:
    endpoint: http://127.0.0.1:8000
    systemId: {name}
    credentials: {{username: admin, password: {{file: ../secrets/bmc-password}}}}
  gpu: {{model: {model}, count: {count}}}
  nics:
    - {{name: rail0, type: infiniband, speed: 400G, rail: 0}}
    - {{name: rail1, type: infiniband, speed: 400G, rail: 1}}
  dpus: [{{model: BlueField-3}}]
  firmware: {{BIOS: \"1.4.2\", BMC: \"2.1.0\"}}
  bios:
    attributes: {{SriovGlobalEnable: Enabled, ProcVirtualization: Enabled}}
  secureBoot: true
{}",
                if spare { "  spare: true\n" } else { "" }
            );
            if !spare {
                names.push(name);
            }
        }
        files.push(file(&format!("racks/{rack}.yaml"), y));
        let profile = if model == "H200" {
            "all-1g.18gb"
        } else {
            "all-1g.10gb"
        };
        if nvl {
            pools.push((format!("{rack}-p0"), names, 2, ""));
        } else {
            for (k, chunk) in names.chunks(8).enumerate() {
                let kind = if hgx_pool % 3 == 2 { 1 } else { 0 };
                hgx_pool += 1;
                pools.push((format!("{rack}-p{k}"), chunk.to_vec(), kind, profile));
            }
        }
    }
    let mut t = String::from(HDR);
    for i in 0..tenants {
        let (pod, svc) = if i < 4096 {
            (
                format!("10.{}.{}.0/20", i >> 4, (i & 15) << 4),
                format!("172.{}.{}.0/24", 16 + (i >> 8), i & 255),
            )
        } else {
            (format!("fd00:{:x}::/56", i), format!("fd01:{:x}::/112", i))
        };
        let flavor = ["ncp-managed", "isv-managed", "tenant-managed"][i % 3];
        let _ = write!(
            t,
            "{}apiVersion: fleetform.dev/v1alpha1
kind: Tenant
metadata:
  name: t{i:05}
spec:
  flavor: {flavor}
  kubernetes:
    version: \"1.34\"
    kubeconfig: {{file: ../secrets/t{i:05}.kubeconfig}}
    podCidr: {pod}
    serviceCidr: {svc}
  cni: {{name: cilium}}
  nodeOs: {{image: http://127.0.0.1:8080/images/ubuntu-24.04-gpu.iso}}
  ngc: {{apiKey: {{file: ../secrets/t{i:05}-ngc}}}}
",
            if i == 0 { "" } else { "---\n" }
        );
    }
    files.push(file("tenants.yaml", t));
    let mut p = String::from(HDR);
    let mut n = String::from(HDR);
    let mut first_pool_of: Vec<Option<(usize, u8, &'static str)>> = vec![None; tenants];
    for (idx, (name, hosts, kind, profile)) in pools.iter().enumerate() {
        let tenant = idx % tenants;
        if first_pool_of[tenant].is_none() {
            first_pool_of[tenant] = Some((idx, *kind, profile));
        }
        let sharing = match kind {
            1 => format!("  gpuSharing:\n    mig: {{config: {profile}}}\n"),
            2 => {
                "  gpuSharing:\n    dra: {deviceClasses: [gpu.nvidia.com], computeDomains: true}\n"
                    .to_string()
            }
            _ => String::new(),
        };
        let rack = &name[..5];
        let _ = write!(
            p,
            "{}apiVersion: fleetform.dev/v1alpha1
kind: NodePool
metadata:
  name: {name}
spec:
  tenant: t{tenant:05}
  hosts: [{}]
  spares: [{rack}-n16]
{sharing}  topology: {{railAligned: true}}
  rollout: {{maxUnavailable: 2, maxUnavailablePerFaultDomain: 1}}
",
            if idx == 0 { "" } else { "---\n" },
            hosts.join(", ")
        );
    }
    files.push(file("pools.yaml", p));
    let mut first = true;
    for (tenant, fp) in first_pool_of.iter().enumerate() {
        let Some((idx, kind, profile)) = fp else {
            continue;
        };
        let mig = if *kind == 1 {
            format!("  migProfile: {}\n", &profile[4..])
        } else {
            String::new()
        };
        let _ = write!(
            n,
            "{}apiVersion: fleetform.dev/v1alpha1
kind: NIMService
metadata:
  name: t{tenant:05}-llama
spec:
  tenant: t{tenant:05}
  pool: {}
  image: nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8
  replicas: 2
{mig}  cache: {{size: 200Gi}}
",
            if first { "" } else { "---\n" },
            pools[*idx].0
        );
        first = false;
    }
    files.push(file("nims.yaml", n));
    files
}

fn file(path: &str, text: String) -> SourceFile {
    SourceFile {
        path: path.to_string(),
        bytes: text.into_bytes(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn small_synthetic_fleets_validate() {
        for (h, t) in [(17, 1), (100, 10), (400, 40)] {
            let files = synthetic_fleet(h, t);
            let (docs, diags) = crate::load::load(&files);
            assert!(
                diags.is_empty(),
                "{}",
                crate::validate::render_text(&diags, &files)
            );
            if let Err(d) = crate::validate::validate(&docs) {
                panic!("{}", crate::validate::render_text(&d, &files));
            }
        }
    }
}
