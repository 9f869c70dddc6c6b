//! Tenants: a supported Kubernetes version, a node OS, and pod/service CIDRs that parse
//! and overlap no other.

use crate::catalog;
use crate::manifest::*;
use crate::validate::Cx;

impl Cx<'_> {
    pub(super) fn tenants(&mut self, f: &Fleet) {
        let mut cidrs: Vec<(String, u32, u128, u8, usize, &'static str)> = Vec::new();
        for t in &f.tenants {
            let i = t.doc.0;
            let v = &t.spec.kubernetes.version;
            match catalog::kubernetes_minor(v) {
                None => {
                    let e = self
                        .err(
                            "kubernetes-version",
                            i,
                            "/spec/kubernetes/version",
                            format!("`{v}` is not a Kubernetes version"),
                        )
                        .hint("write MAJOR.MINOR or MAJOR.MINOR.PATCH in quotes, e.g. \"1.34\"");
                    self.push(e);
                }
                Some(m) if m < catalog::MIN_KUBERNETES => {
                    let e = self
                        .err("kubernetes-version", i, "/spec/kubernetes/version", format!("Kubernetes {v} is older than 1.34"))
                        .hint("fleetform needs 1.34 or newer (Dynamic Resource Allocation, resource.k8s.io/v1, is GA in 1.34)");
                    self.push(e);
                }
                _ => {}
            }
            if t.spec.node_os.byo == Some(false) {
                let e = self
                    .err("schema", i, "/spec/nodeOs/byo", "`byo: false` says nothing")
                    .hint("give `{image: URL}` or `{byo: true}`");
                self.push(e);
            }
            if let Some(url) = t.spec.node_os.image() {
                self.url(i, "/spec/nodeOs/image", url);
            }
            for (ptr, text, what) in [
                (
                    "/spec/kubernetes/podCidr",
                    &t.spec.kubernetes.pod_cidr,
                    "pod",
                ),
                (
                    "/spec/kubernetes/serviceCidr",
                    &t.spec.kubernetes.service_cidr,
                    "service",
                ),
            ] {
                match parse_cidr(text) {
                    Some((fam, net, len)) => {
                        cidrs.push((t.name().to_string(), fam, net, len, i, what))
                    }
                    None => {
                        let e = self
                            .err("cidr-invalid", i, ptr, format!("`{text}` is not a CIDR"))
                            .hint("e.g. 10.64.0.0/16 or fd00:10::/56, with no host bits set");
                        self.push(e);
                    }
                }
            }
        }
        // Sweep by start address: a range overlaps an earlier one iff it starts before
        // the furthest end seen so far (n log n, not n²).
        let width = |fam: u32| if fam == 4 { 32u32 } else { 128 };
        let mut ranges: Vec<(u32, u128, u128, usize)> = cidrs
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let host = width(c.1) - u32::from(c.3);
                let end = if host >= 128 {
                    u128::MAX
                } else {
                    c.2 | ((1u128 << host) - 1)
                };
                (c.1, c.2, end, k)
            })
            .collect();
        ranges.sort();
        let mut best: Option<(u32, u128, usize)> = None; // (family, end, index) with the furthest end
        for &(fam, start, end, k) in &ranges {
            if let Some((bf, bend, bk)) = best
                && bf == fam
                && start <= bend
            {
                // Report on the later one in file order, naming the other.
                let (x, y) = if (cidrs[k].4, k) > (cidrs[bk].4, bk) {
                    (&cidrs[k], &cidrs[bk])
                } else {
                    (&cidrs[bk], &cidrs[k])
                };
                let ptr = if x.5 == "pod" {
                    "/spec/kubernetes/podCidr"
                } else {
                    "/spec/kubernetes/serviceCidr"
                };
                let other = if y.0 == x.0 {
                    "its own".to_string()
                } else {
                    format!("tenant `{}`'s", y.0)
                };
                let e = self
                    .err(
                        "cidr-overlap",
                        x.4,
                        ptr,
                        format!(
                            "tenant `{}`'s {} CIDR overlaps {other} {} CIDR",
                            x.0, x.5, y.5
                        ),
                    )
                    .hint("give every tenant cluster its own pod and service ranges");
                self.push(e);
            }
            if best.is_none_or(|(bf, bend, _)| bf != fam || end > bend) {
                best = Some((fam, end, k));
            }
        }
    }
}

/// Parses `a.b.c.d/n` or an IPv6 CIDR into (family 4|6, network bits as u128, prefix).
/// Host bits must be zero.
pub fn parse_cidr(s: &str) -> Option<(u32, u128, u8)> {
    let (addr, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    let (fam, bits, width) = if let Ok(a) = addr.parse::<std::net::Ipv4Addr>() {
        (4, u128::from(u32::from(a)), 32u8)
    } else if let Ok(a) = addr.parse::<std::net::Ipv6Addr>() {
        (6, u128::from(a), 128u8)
    } else {
        return None;
    };
    if len > width {
        return None;
    }
    let host_bits = width - len;
    let mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    if bits & mask != 0 {
        return None;
    }
    Some((fam, bits, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse() {
        assert!(parse_cidr("10.0.128.0/17").is_some());
        assert!(parse_cidr("10.0.0.1/16").is_none());
        assert!(parse_cidr("fd00::/8").is_some());
        assert!(parse_cidr("0.0.0.0/0").is_some());
    }
}
