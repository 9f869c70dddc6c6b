//! The address policy for endpoints fleetform itself calls, with credentials: BMCs, the NGC
//! registry, the NICo API and chart repositories. A URL whose host is link-local
//! (169.254.0.0/16, fe80::/10: where clouds serve instance metadata and the credentials that
//! come with it), a cloud metadata name, unspecified (0.0.0.0, ::), multicast or broadcast is
//! refused unless `Fleet.spec.allowedEndpoints` lists it (a CIDR or a host name). Loopback and
//! private ranges stay allowed: BMC networks are private, and test peers listen on 127.0.0.1.
//! A host name is judged by its name only (validate resolves nothing).

use std::net::IpAddr;

use serde_json::Value;

use crate::manifest::Fleet;
use crate::validate::Cx;

/// Where each kind names an endpoint fleetform calls (`*`: any key or index).
const ENDPOINTS: &[(&str, &str)] = &[
    ("Fleet", "/spec/registries/ngc/endpoint"),
    ("Fleet", "/spec/nico/endpoint"),
    ("Fleet", "/spec/charts/repository"),
    ("Fleet", "/spec/operators/*/chart/repository"),
    ("Fleet", "/spec/schedulers/*/chart/repository"),
    ("Fleet", "/spec/policies/*/chart/repository"),
    ("Tenant", "/spec/operators/*/chart/repository"),
    ("Tenant", "/spec/cni/chart/repository"),
    ("Tenant", "/spec/csi/chart/repository"),
    ("Host", "/spec/bmc/endpoint"),
];

/// Names that reach a cloud's instance metadata service.
const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata.azure.com",
    "instance-data",
    "instance-data.ec2.internal",
];

impl Cx<'_> {
    pub(super) fn endpoints(&mut self, f: &Fleet) {
        let allowed = &f.fleet.spec.allowed_endpoints;
        let mut found = Vec::new();
        for (i, d) in self.docs.iter().enumerate() {
            let kind = d.value.get("kind").and_then(Value::as_str).unwrap_or("");
            for (k, pattern) in ENDPOINTS {
                if *k == kind {
                    strings_at(&d.value, pattern, String::new(), &mut |ptr, url| {
                        found.push((i, ptr, url.to_string()));
                    });
                }
            }
        }
        for (i, ptr, url) in found {
            let Some(host) = host_of(&url) else { continue };
            if let Some(why) = refused(&host)
                && !allows(allowed, &host)
            {
                let e = self
                    .err(
                        "endpoint-address",
                        i,
                        &ptr,
                        format!("`{url}` points at {host}, {why}: fleetform would send it credentials"),
                    )
                    .hint(format!(
                        "use the service's real address; if {host} is right, list it in the Fleet's `allowedEndpoints`"
                    ));
                self.push(e);
            }
        }
    }
}

/// Every string at `pattern` in `v`, with its pointer.
fn strings_at(v: &Value, pattern: &str, at: String, found: &mut dyn FnMut(String, &str)) {
    let Some(rest) = pattern.strip_prefix('/') else {
        if let Some(s) = v.as_str() {
            found(at, s);
        }
        return;
    };
    let (seg, tail) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
    let tail = if tail.is_empty() {
        String::new()
    } else {
        format!("/{tail}")
    };
    match (seg, v) {
        ("*", Value::Object(m)) => {
            for (k, child) in m {
                strings_at(child, &tail, format!("{at}/{k}"), found);
            }
        }
        ("*", Value::Array(a)) => {
            for (n, child) in a.iter().enumerate() {
                strings_at(child, &tail, format!("{at}/{n}"), found);
            }
        }
        (seg, v) => {
            if let Some(child) = v.get(seg) {
                strings_at(child, &tail, format!("{at}/{seg}"), found);
            }
        }
    }
}

/// The host of a URL (`scheme://[user@]host[:port]/...`), lower-cased, IPv6 without its
/// brackets; `None` for anything without a scheme (a local chart directory).
fn host_of(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Why `host` is refused, or `None`.
fn refused(host: &str) -> Option<&'static str> {
    if METADATA_NAMES.contains(&host.trim_end_matches('.')) {
        return Some("a cloud instance-metadata name");
    }
    let ip: IpAddr = host.parse().ok()?;
    match ip {
        IpAddr::V4(v4) if v4.is_link_local() => {
            Some("a link-local address (169.254.0.0/16: cloud instance metadata lives there)")
        }
        IpAddr::V4(v4) if v4.is_unspecified() => Some("the unspecified address"),
        IpAddr::V4(v4) if v4.is_multicast() || v4.is_broadcast() => {
            Some("a multicast or broadcast address")
        }
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => {
            Some("a link-local address (fe80::/10)")
        }
        // AWS's IPv6 instance metadata endpoint.
        IpAddr::V6(v6) if v6 == "fd00:ec2::254".parse::<std::net::Ipv6Addr>().ok()? => {
            Some("a cloud instance-metadata address")
        }
        IpAddr::V6(v6) if v6.is_unspecified() => Some("the unspecified address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("a multicast address"),
        _ => None,
    }
}

/// True when `allowed` lists `host` by name or by a CIDR that holds it.
fn allows(allowed: &[String], host: &str) -> bool {
    allowed.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        if a == host {
            return true;
        }
        let Some((net, bits)) = a.split_once('/') else {
            return false;
        };
        let (Ok(net), Ok(bits), Ok(ip)) = (
            net.parse::<IpAddr>(),
            bits.parse::<u32>(),
            host.parse::<IpAddr>(),
        ) else {
            return false;
        };
        match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_from_urls_with_ports_users_and_brackets() {
        assert_eq!(
            host_of("https://169.254.169.254/latest").as_deref(),
            Some("169.254.169.254")
        );
        assert_eq!(
            host_of("http://u:p@[FE80::1]:8443/x").as_deref(),
            Some("fe80::1")
        );
        assert_eq!(
            host_of("oci://Registry.Local:5000/charts").as_deref(),
            Some("registry.local")
        );
        assert_eq!(host_of("/srv/charts"), None, "a local chart directory");
    }

    #[test]
    fn metadata_link_local_unspecified_and_multicast_are_refused_loopback_and_private_are_not() {
        for h in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "metadata.google.internal",
        ] {
            assert!(refused(h).is_some(), "{h}");
        }
        for h in [
            "127.0.0.1",
            "::1",
            "10.0.0.5",
            "192.168.1.10",
            "bmc-r01.lab",
            "nvcr.io",
        ] {
            assert!(refused(h).is_none(), "{h}");
        }
    }

    #[test]
    fn the_allow_list_takes_names_and_cidrs() {
        let allowed = vec![
            "169.254.10.0/24".to_string(),
            "Metadata.Google.Internal".to_string(),
            "fe80::/64".to_string(),
        ];
        assert!(allows(&allowed, "169.254.10.7"));
        assert!(!allows(&allowed, "169.254.169.254"));
        assert!(allows(&allowed, "metadata.google.internal"));
        assert!(allows(&allowed, "fe80::1"));
        assert!(!allows(&allowed, "fe80:0:0:1::1"));
    }
}
