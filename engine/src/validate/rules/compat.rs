//! The compatibility gate: a tenant's effective operator versions, driver and Kubernetes
//! release against the cited rows of `crate::compat`, plus the precompiled-driver and Secure
//! Boot rules. Each diagnostic names the row and its source, at the value that breaks it:
//! the tenant's override when it has one, else the Fleet's field.
//!
//! Rule codes: `driver-compat`, `gpu-operator-compat`, `nim-operator-compat`,
//! `network-operator-compat`, `precompiled-driver`, `secure-boot-driver`, `doca-precompiled`,
//! `node-os`.

use std::collections::BTreeSet;

use crate::compat::{self, Source};
use crate::manifest::{Fleet, GpuModel, Host, Tenant};
use crate::validate::Cx;

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
        self.node_platform(f, t);
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
        {
            // Neither way of running the DOCA-OFED container loads under Secure Boot: the
            // on-node build is unsigned, and so are NVIDIA's precompiled containers.
            let how = if ofed.force_precompiled {
                "runs NVIDIA's precompiled DOCA-OFED container, whose modules are unsigned"
            } else {
                "builds the DOCA-OFED modules on the node, unsigned"
            };
            let e = self
                .err(
                    "secure-boot-driver",
                    h.doc.0,
                    "/spec/secureBoot",
                    format!(
                        "host `{}` boots with Secure Boot, but tenant `{}` {how}",
                        h.name(),
                        t.name()
                    ),
                )
                .hint(format!(
                    "install a signed DOCA-OFED on the hosts and leave `networkOperator.ofedDriver` out (a tenant sets `ofedDriver: null`), so the Network Operator uses the host's driver; {}",
                    cite("doca-unsigned", &compat::DOCA_UNSIGNED)
                ));
            self.push(e);
        }
    }

    /// What the tenant's nodes run (`nodeOs.os`, `nodeOs.kernel`) against the rows keyed by
    /// OS and kernel: precompiled GPU drivers, precompiled DOCA-OFED containers, and the OSes
    /// the Network Operator release was validated on. Nothing is checked when they are not
    /// declared.
    fn node_platform(&mut self, f: &Fleet, t: &Tenant) {
        let i = t.doc.0;
        let os = t.spec.node_os.os.as_deref();
        let kernel_text = t.spec.node_os.kernel.as_deref();
        if let Some(os) = os
            && compat::os_parts(os).is_none()
        {
            let e = self
                .err(
                    "node-os",
                    i,
                    "/spec/nodeOs/os",
                    format!("`{os}` is not an OS as NVIDIA's image tags write it"),
                )
                .hint("an id and a version with nothing between, e.g. ubuntu24.04, rhel9.4, rhcos4.17, sles15sp7");
            self.push(e);
            return;
        }
        let kernel = match kernel_text.map(|k| (k, compat::kernel_parts(k))) {
            Some((k, None)) => {
                let e = self
                    .err(
                        "node-os",
                        i,
                        "/spec/nodeOs/kernel",
                        format!("`{k}` is not a kernel release"),
                    )
                    .hint("as `uname -r` prints it, e.g. 6.8.0-49-generic");
                self.push(e);
                return;
            }
            Some((_, Some(k))) => Some(k),
            None => None,
        };
        let ops = f.operators_for(t.name()).clone();
        let d = &ops.gpu_operator.driver;
        if d.enabled
            && d.use_precompiled
            && let Some(os) = os
        {
            match compat::precompiled_driver_row(os) {
                None => {
                    let oses: Vec<&str> =
                        compat::PRECOMPILED_DRIVERS.iter().map(|r| r.os).collect();
                    let e = self
                        .err(
                            "precompiled-driver",
                            i,
                            "/spec/nodeOs/os",
                            format!(
                                "tenant `{}` asks for precompiled GPU drivers, but NVIDIA publishes them for {} only, not {os}",
                                t.name(),
                                oses.join(" and ")
                            ),
                        )
                        .hint(format!(
                            "set `gpuOperator.driver.usePrecompiled: false` (the driver container builds the modules on the node); {}",
                            cite("precompiled-os", &compat::PRECOMPILED_OS)
                        ));
                    self.push(e);
                }
                Some(row) => {
                    let branch = compat::driver_parts(&d.version).map(|p| p[0]);
                    if let Some(b) = branch
                        && b < row.min_branch
                    {
                        let (doc, ptr) = self.operator_site(f, t, "/gpuOperator/driver/version");
                        let e = self
                            .err(
                                "precompiled-driver",
                                doc,
                                &ptr,
                                format!(
                                    "no precompiled R{b} driver is published for {os} (R{} and later), used by tenant `{}`",
                                    row.min_branch,
                                    t.name()
                                ),
                            )
                            .hint(cite(row.id, &row.source));
                        self.push(e);
                    }
                    if let Some(k) = &kernel {
                        let lines: Vec<String> = row
                            .kernels
                            .iter()
                            .map(|(a, b)| format!("{a}.{b}"))
                            .collect();
                        let flavor_ok =
                            k.flavor.as_deref().is_none_or(|f| row.flavors.contains(&f));
                        if !row.kernels.contains(&k.line) || !flavor_ok {
                            let e = self
                                .err(
                                    "precompiled-driver",
                                    i,
                                    "/spec/nodeOs/kernel",
                                    format!(
                                        "no precompiled GPU driver is published for kernel {} on {os}: kernels {} with flavours {}",
                                        kernel_text.unwrap_or_default(),
                                        lines.join(", "),
                                        row.flavors.join(", ")
                                    ),
                                )
                                .hint(format!(
                                    "boot a listed kernel, or set `gpuOperator.driver.usePrecompiled: false`; {}",
                                    cite(row.id, &row.source)
                                ));
                            self.push(e);
                        }
                    }
                }
            }
        }
        let Some(n) = &ops.network_operator else {
            return;
        };
        let Some(os) = os else {
            return;
        };
        if let Some(row) = compat::major_minor(&n.version).and_then(compat::network_operator_row)
            && let Some(source) = row.os_source
            && !compat::os_listed(os, row.os)
        {
            let e = self
                .err(
                    "network-operator-compat",
                    i,
                    "/spec/nodeOs/os",
                    format!(
                        "Network Operator {} was validated on {}, not {os} (tenant `{}`)",
                        n.version,
                        row.os.join(", "),
                        t.name()
                    ),
                )
                .hint(cite(row.id, &source));
            self.push(e);
        }
        if let Some(ofed) = &n.ofed_driver
            && ofed.force_precompiled
        {
            let os_ok = compat::os_listed(os, compat::DOCA_PRECOMPILED_OS);
            let flavor = kernel.as_ref().and_then(|k| k.flavor.as_deref());
            let flavor_ok = flavor.is_none_or(|f| compat::DOCA_PRECOMPILED_FLAVORS.contains(&f));
            if !os_ok || !flavor_ok {
                let (ptr, what) = if os_ok {
                    (
                        "/spec/nodeOs/kernel",
                        format!("the `{}` kernel flavour", flavor.unwrap_or_default()),
                    )
                } else {
                    ("/spec/nodeOs/os", os.to_string())
                };
                let e = self
                    .err(
                        "doca-precompiled",
                        i,
                        ptr,
                        format!(
                            "tenant `{}` forces precompiled DOCA-OFED containers, but NVIDIA builds none for {what} (OSes {}; flavours {})",
                            t.name(),
                            compat::DOCA_PRECOMPILED_OS.join(", "),
                            compat::DOCA_PRECOMPILED_FLAVORS.join(", ")
                        ),
                    )
                    .hint(format!(
                        "drop `ofedDriver.forcePrecompiled` (the container builds the modules on the node) or build your own precompiled container; {}",
                        cite("doca-precompiled", &compat::DOCA_PRECOMPILED)
                    ));
                self.push(e);
            }
        }
    }
}
