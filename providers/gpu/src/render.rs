//! The inventory rendered for people (`fleetform gpu inventory --format text`), with its
//! health verdict. Kept apart from `inventory` so that the report's data types do not
//! depend on the health rules (`health` reads `inventory`, never the other way round).

use std::fmt::Write as _;

use crate::health;
use crate::inventory::Inventory;

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The inventory for people: one header, one line per GPU, then details worth
/// a look (MIG devices, errors, XIDs). Used by `fleetform gpu inventory --format text`.
pub fn render_text(inv: &Inventory) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "node {}  collected {}", inv.node, inv.collected_at);
    let _ = writeln!(
        s,
        "driver {}  cuda {}  nvml {}  gpus {}",
        opt(&inv.driver_version),
        opt(&inv.cuda_driver_version),
        opt(&inv.nvml_version),
        inv.gpus.len()
    );
    let verdict = health::node_health(inv);
    let _ = writeln!(s, "health {}", verdict.state);
    for r in &verdict.reasons {
        let _ = writeln!(s, "  - {r}");
    }
    let _ = writeln!(s);
    let header = format!(
        "{:<3} {:<26} {:<18} {:>11} {:>6} {:>9} {:<8} {:<8} {:<9}",
        "IDX", "NAME", "PCI", "MEMORY", "TEMP", "POWER", "MIG", "ECC", "NVLINK"
    );
    let _ = writeln!(s, "{}", header.trim_end());
    for g in &inv.gpus {
        let mem = match (g.memory_used_bytes, g.memory_total_bytes) {
            (Some(u), Some(t)) => format!("{}/{}G", u >> 30, t >> 30),
            (None, Some(t)) => format!("-/{}G", t >> 30),
            _ => "-".into(),
        };
        let temp = g.temperature_c.map_or("-".into(), |t| format!("{t}C"));
        let power = match (g.power_draw_mw, g.power_limit_mw) {
            (Some(d), Some(l)) => format!("{}/{}W", d / 1000, l / 1000),
            (Some(d), None) => format!("{}W", d / 1000),
            _ => "-".into(),
        };
        let mig = match &g.mig {
            None => "n/a".to_string(),
            Some(m) => {
                let now = if m.current_enabled { "on" } else { "off" };
                if m.current_enabled != m.pending_enabled {
                    format!("{now}->{}", if m.pending_enabled { "on" } else { "off" })
                } else {
                    now.to_string()
                }
            }
        };
        let ecc = match g.ecc.as_ref().and_then(|e| e.current_enabled) {
            None => "n/a",
            Some(true) => "on",
            Some(false) => "off",
        };
        let nvl = match &g.nvlinks {
            None => "n/a".to_string(),
            Some(l) => format!("{}/{}", l.iter().filter(|l| l.active).count(), l.len()),
        };
        let row = format!(
            "{:<3} {:<26} {:<18} {:>11} {:>6} {:>9} {:<8} {:<8} {:<9}",
            g.index,
            opt(&g.name).replace("NVIDIA ", ""),
            opt(&g.pci_bus_id),
            mem,
            temp,
            power,
            mig,
            ecc,
            nvl
        );
        let _ = writeln!(s, "{}", row.trim_end());
        if let Some(m) = &g.mig
            && !m.devices.is_empty()
        {
            let mut counts: Vec<(String, usize)> = Vec::new();
            for d in &m.devices {
                let p = d.profile.clone().unwrap_or_else(|| "?".into());
                match counts.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((p, 1)),
                }
            }
            let parts: Vec<String> = counts.iter().map(|(p, n)| format!("{n} × {p}")).collect();
            let _ = writeln!(s, "    mig devices: {}", parts.join(", "));
        }
        for e in &g.errors {
            let _ = writeln!(s, "    error: {e}");
        }
        for x in &g.xid_events {
            let _ = writeln!(
                s,
                "    xid {}{}",
                x.xid,
                x.at.as_ref()
                    .map(|a| format!(" at {a}"))
                    .unwrap_or_default()
            );
        }
    }
    for e in &inv.errors {
        let _ = writeln!(s, "error: {e}");
    }
    s
}
