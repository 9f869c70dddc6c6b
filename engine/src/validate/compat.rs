//! The compatibility gate: a tenant's effective operator versions, driver and Kubernetes
//! release against the cited rows of `crate::compat`, plus the precompiled-driver and Secure
//! Boot rules. Each diagnostic names the row and its source, at the value that breaks it:
//! the tenant's override when it has one, else the Fleet's field.
//!
//! Rule codes: `driver-compat`, `gpu-operator-compat`, `nim-operator-compat`,
//! `network-operator-compat`, `precompiled-driver`, `secure-boot-driver`.

use std::collections::BTreeSet;

use super::Cx;
use crate::compat::{self, Source};
use crate::manifest::{Fleet, GpuModel, Host, Tenant};

/// "compat row `id`: source", the hint every row-backed diagnostic carries.
fn cite(id: &str, source: &Source) -> String {
    format!("compat row `{id}`: {source}")
}

impl Cx<'_> {
    /// Where an operator field's effective value was written: the tenant's override, else
    /// the Fleet (`rel` is relative to `spec.operators`, e.g. `/gpuOperator/version`).
    fn operator_site(&self, f: &Fleet, t: &Tenant, rel: &str) -> (usize, String) {
        let overridden = t
            .spec
            .operators
            .as_ref()
            .and_then(|o| o.pointer(rel))
            .is_some();
        let doc = if overridden { t.doc.0 } else { f.fleet.doc.0 };
        (doc, format!("/spec/operators{rel}"))
    }

    pub(super) fn compat(&mut self, f: &Fleet, t: &Tenant, hosts: &[&Host]) {
        let ops = f.operators_for(t.name()).clone();
        let models: BTreeSet<GpuModel> = hosts.iter().map(|h| h.spec.gpu.model).collect();
        let g = &ops.gpu_operator;
        let gpu_op = compat::major_minor(&g.version);
        if gpu_op.is_none() {
            let (doc, ptr) = self.operator_site(f, t, "/gpuOperator/version");
            let e = self
                .err(
                    "gpu-operator-compat",
                    doc,
                    &ptr,
                    format!("`{}` is not a GPU Operator version", g.version),
                )
                .hint("e.g. v26.7.0");
            self.push(e);
        }
        if compat::driver_parts(&g.driver.version).is_none() {
            let (doc, ptr) = self.operator_site(f, t, "/gpuOperator/driver/version");
            let e = self
                .err(
                    "driver-compat",
                    doc,
                    &ptr,
                    format!("`{}` is not a driver version", g.driver.version),
                )
                .hint("e.g. \"595.91.07\", or a branch such as \"580\"");
            self.push(e);
        }
        for m in &models {
            if let Some(row) = compat::driver_floor(*m)
                && compat::driver_below(&g.driver.version, row.min) == Some(true)
            {
                let (doc, ptr) = self.operator_site(f, t, "/gpuOperator/driver/version");
                let e = self
                    .err(
                        "driver-compat",
                        doc,
                        &ptr,
                        format!(
                            "driver {} does not support {m} (needs {} or later), used by tenant `{}`",
                            g.driver.version,
                            row.min,
                            t.name()
                        ),
                    )
                    .hint(cite(row.id, &row.source));
                self.push(e);
            }
            if let (Some(row), Some(r)) = (compat::gpu_operator_floor(*m), gpu_op)
                && r < row.min
            {
                let (doc, ptr) = self.operator_site(f, t, "/gpuOperator/version");
                let e = self
                    .err(
                        "gpu-operator-compat",
                        doc,
                        &ptr,
                        format!(
                            "GPU Operator {} predates support for {m} (v{}.{}.0 or later), used by tenant `{}`",
                            g.version,
                            row.min.0,
                            row.min.1,
                            t.name()
                        ),
                    )
                    .hint(cite(row.id, &row.source));
                self.push(e);
            }
        }
        if let Some(n) = &ops.nim_operator {
            let (doc, ptr) = self.operator_site(f, t, "/nimOperator/version");
            match compat::major_minor(&n.version) {
                None => {
                    let e = self
                        .err(
                            "nim-operator-compat",
                            doc,
                            &ptr,
                            format!("`{}` is not a NIM Operator version", n.version),
                        )
                        .hint("e.g. v3.1.2");
                    self.push(e);
                }
                Some(r) => {
                    if let (Some(row), Some(go)) = (compat::nim_operator_row(r), gpu_op)
                        && go < row.min_gpu_operator
                    {
                        let (gdoc, gptr) = self.operator_site(f, t, "/gpuOperator/version");
                        let e = self
                            .err(
                                "nim-operator-compat",
                                gdoc,
                                &gptr,
                                format!(
                                    "NIM Operator {} needs GPU Operator v{}.{}.0 or later, tenant `{}` runs {}",
                                    n.version,
                                    row.min_gpu_operator.0,
                                    row.min_gpu_operator.1,
                                    t.name(),
                                    g.version
                                ),
                            )
                            .hint(cite(row.id, &row.source));
                        self.push(e);
                    }
                }
            }
        }
        if let Some(n) = &ops.network_operator {
            let (doc, ptr) = self.operator_site(f, t, "/networkOperator/version");
            match compat::major_minor(&n.version) {
                None => {
                    let e = self
                        .err(
                            "network-operator-compat",
                            doc,
                            &ptr,
                            format!("`{}` is not a Network Operator version", n.version),
                        )
                        .hint("e.g. v26.4.1");
                    self.push(e);
                }
                Some(r) => {
                    if let Some(row) = compat::network_operator_row(r) {
                        let k = crate::catalog::kubernetes_minor(&t.spec.kubernetes.version);
                        let (lo, hi) = row.kubernetes;
                        if let Some(k) = k
                            && (k < lo || k > hi)
                        {
                            let e = self
                                .err(
                                    "network-operator-compat",
                                    t.doc.0,
                                    "/spec/kubernetes/version",
                                    format!(
                                        "Network Operator {} supports Kubernetes {}.{} to {}.{}, tenant `{}` runs {}",
                                        n.version,
                                        lo.0,
                                        lo.1,
                                        hi.0,
                                        hi.1,
                                        t.name(),
                                        t.spec.kubernetes.version
                                    ),
                                )
                                .hint(cite(row.id, &row.source));
                            self.push(e);
                        }
                        if let (Some(min), Some(go)) = (row.min_gpu_operator, gpu_op)
                            && go < min
                        {
                            let e = self
                                .err(
                                    "network-operator-compat",
                                    doc,
                                    &ptr,
                                    format!(
                                        "Network Operator {} needs GPU Operator v{}.{}.x or later for GPU workloads and GPUDirect RDMA, tenant `{}` runs {}",
                                        n.version,
                                        min.0,
                                        min.1,
                                        t.name(),
                                        g.version
                                    ),
                                )
                                .hint(cite(row.id, &row.source));
                            self.push(e);
                        }
                    }
                }
            }
        }
        self.precompiled_and_secure_boot(f, t, hosts);
    }

    /// Precompiled drivers are x86_64 only; Secure Boot needs signed modules (precompiled, or
    /// a host-installed driver) for both the GPU driver and DOCA-OFED.
    fn precompiled_and_secure_boot(&mut self, f: &Fleet, t: &Tenant, hosts: &[&Host]) {
        let ops = f.operators_for(t.name()).clone();
        let d = &ops.gpu_operator.driver;
        let arm = hosts
            .iter()
            .find(|h| compat::ARM_MODELS.contains(&h.spec.gpu.model));
        if d.enabled
            && d.use_precompiled
            && let Some(h) = arm
        {
            let (doc, ptr) = self.operator_site(f, t, "/gpuOperator/driver/usePrecompiled");
            let e = self
                .err(
                    "precompiled-driver",
                    doc,
                    &ptr,
                    format!(
                        "tenant `{}` asks for precompiled GPU drivers, but host `{}` ({}) is arm64: NVIDIA publishes precompiled driver containers for x86_64 only",
                        t.name(),
                        h.name(),
                        h.spec.gpu.model
                    ),
                )
                .hint(format!(
                    "install a signed driver on the hosts and set `gpuOperator.driver.enabled: false`, or run the arm64 hosts under another tenant; {}",
                    cite("precompiled-x86-only", &compat::PRECOMPILED_X86_ONLY)
                ));
            self.push(e);
        }
        let Some(h) = hosts.iter().find(|h| h.spec.secure_boot == Some(true)) else {
            return;
        };
        if d.enabled && !d.use_precompiled {
            let hint = if compat::ARM_MODELS.contains(&h.spec.gpu.model) {
                // Precompiled is no way out on arm64 (the rule above).
                "arm64 hosts have no precompiled drivers: install a signed driver on the hosts and set `driver.enabled: false`"
                    .to_string()
            } else {
                "set `gpuOperator.driver.usePrecompiled: true` (signed precompiled drivers) or `driver.enabled: false` with a host-installed signed driver"
                    .to_string()
            };
            let e = self
                .err("secure-boot-driver", h.doc.0, "/spec/secureBoot", format!("host `{}` boots with Secure Boot, but tenant `{}`'s driver compiles unsigned kernel modules", h.name(), t.name()))
                .hint(format!("{hint}; {}", cite("secure-boot", &compat::SECURE_BOOT)));
            self.push(e);
        }
        if let Some(ofed) = ops
            .network_operator
            .as_ref()
            .and_then(|n| n.ofed_driver.as_ref())
            && !ofed.force_precompiled
        {
            let e = self
                .err("secure-boot-driver", h.doc.0, "/spec/secureBoot", format!("host `{}` boots with Secure Boot, but tenant `{}`'s DOCA-OFED driver is compiled on the node", h.name(), t.name()))
                .hint("set `networkOperator.ofedDriver.forcePrecompiled: true`");
            self.push(e);
        }
    }
}
