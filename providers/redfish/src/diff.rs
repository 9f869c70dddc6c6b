//! Diff: what an aspect's desired spec changes on the BMC, with its disruption class, ignoring
//! what the BMC owns or does not report.

use super::*;

impl RedfishProvider {
    pub(crate) fn diff_inner(
        &self,
        desired: &Desired,
        observed: Option<&Observed>,
    ) -> Result<Change, ProviderError> {
        let id = &desired.id;
        let t = parse_id(id)?;
        let Some(obs) = observed else {
            return Err(ProviderError::permanent(
                id,
                format!(
                    "host {}: not observed (a host's BMC state cannot be created, only changed)",
                    t.host
                ),
            ));
        };
        let private: Private = obs
            .private
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let st = &obs.state;
        let mut fields = Vec::new();
        // The rule (docs/providers/redfish.md): staging settings disrupts nothing; the
        // power resource's reset that makes them current reboots the host; a power state
        // change cycles power; firmware reboots the host unless only the BMC's own changes.
        let mut disruption = Disruption::None;
        match t.aspect {
            Aspect::Power => {
                let w: PowerSpec = parse_spec(id, &desired.spec)?;
                let want = json!(w.state);
                if st.get("state") != Some(&want) {
                    fields.push(field("/state", st.get("state").cloned(), Some(want)));
                }
                // The host's one reset: staged settings that are not current yet.
                if w.state == PowerState::On
                    && w.apply_at_reset.is_some()
                    && let Some(a) = st.get("awaitingReset").and_then(Value::as_array)
                    && !a.is_empty()
                {
                    let mut f = field("/awaitingReset", Some(json!(a)), Some(json!([])));
                    f.changed_by = Some(format!(
                        "one reset of the host applies them ({})",
                        private
                            .extra
                            .get("resetPlan")
                            .and_then(Value::as_str)
                            .unwrap_or("a restart the BMC allows")
                    ));
                    fields.push(f);
                }
                disruption = if fields.iter().any(|f| f.path == "/state") {
                    Disruption::PowerCycle
                } else {
                    Disruption::HostReboot
                };
            }
            Aspect::Boot => {
                let w: BootSpec = parse_spec(id, &desired.spec)?;
                if let Some(allowed) = private
                    .extra
                    .get("allowableTargets")
                    .and_then(Value::as_array)
                    && !allowed
                        .iter()
                        .any(|a| a.as_str() == Some(w.target.as_str()))
                {
                    return Err(ProviderError::permanent(
                        id,
                        format!(
                            "host {}: boot target `{}` is not offered by the BMC (allowed: {})",
                            t.host,
                            w.target,
                            allowed
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                for (k, v) in [
                    ("target", Some(&w.target)),
                    ("enabled", Some(&w.enabled)),
                    ("mode", w.mode.as_ref()),
                ] {
                    if let Some(v) = v
                        && st.get(k).and_then(Value::as_str) != Some(v.as_str())
                    {
                        fields.push(field(&format!("/{k}"), st.get(k).cloned(), Some(json!(v))));
                    }
                }
            }
            Aspect::Bios => {
                let w: BiosSpec = parse_spec(id, &desired.spec)?;
                if let Some(first) = private
                    .extra
                    .get("unknown")
                    .and_then(Value::as_array)
                    .and_then(|u| u.first())
                {
                    let known = private
                        .extra
                        .get("knownAttributes")
                        .and_then(Value::as_array)
                        .map(|k| {
                            k.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        });
                    return Err(ProviderError::permanent(
                        id,
                        format!(
                            "host {}: unknown BIOS attribute `{}`: the BMC does not list it (it has e.g. {})",
                            t.host,
                            first.as_str().unwrap_or_default(),
                            known.unwrap_or_default()
                        ),
                    ));
                }
                let pending = private
                    .extra
                    .get("pending")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for (k, v) in &w.attributes {
                    let cur = st.pointer(&format!("/attributes/{}", escape(k)));
                    if !cur.is_some_and(|c| loose_eq(c, v)) {
                        let mut f = field(
                            &format!("/attributes/{}", escape(k)),
                            cur.cloned(),
                            Some(v.clone()),
                        );
                        if pending.get(k).is_some_and(|p| loose_eq(p, v)) {
                            f.changed_by = Some("staged in the BIOS settings object; takes effect on the next reboot".into());
                        }
                        fields.push(f);
                    }
                }
                if !fields.is_empty() && private.path.is_none() {
                    return Err(ProviderError::permanent(
                        id,
                        format!(
                            "host {}: BIOS is read-only on this BMC: its Bios ({}) has no `@Redfish.Settings` \
                             link to a settings object, so {} cannot be set (fleetform never guesses a URL)",
                            t.host,
                            private
                                .extra
                                .get("biosPath")
                                .and_then(Value::as_str)
                                .unwrap_or("?"),
                            fields
                                .iter()
                                .map(|f| f.path.trim_start_matches("/attributes/"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                // Staging settings does not disrupt the host: the reset that applies them is
                // planned by the host's power resource (`applyAtReset`).
            }
            Aspect::SecureBoot => {
                let w: SecureBootSpec = parse_spec(id, &desired.spec)?;
                if st.get("enabled") != Some(&json!(w.enabled)) {
                    fields.push(field(
                        "/enabled",
                        st.get("enabled").cloned(),
                        Some(json!(w.enabled)),
                    ));
                }
                // Takes effect at the next reset, which the host's power resource plans.
            }
            Aspect::VirtualMedia => {
                let w: VirtualMediaSpec = parse_spec(id, &desired.spec)?;
                if w.inserted && w.image.is_none() {
                    return Err(ProviderError::permanent(
                        id,
                        format!(
                            "host {}: virtual media inserted: true needs an image URL",
                            t.host
                        ),
                    ));
                }
                if st.get("inserted") != Some(&json!(w.inserted)) {
                    fields.push(field(
                        "/inserted",
                        st.get("inserted").cloned(),
                        Some(json!(w.inserted)),
                    ));
                }
                if w.inserted && st.get("image") != Some(&json!(w.image)) {
                    fields.push(field(
                        "/image",
                        st.get("image").cloned(),
                        Some(json!(w.image)),
                    ));
                }
            }
            Aspect::Firmware => {
                let w: FirmwareSpec = parse_spec(id, &desired.spec)?;
                let staged = private.extra.get("staged");
                for (k, v) in &w.expected {
                    let cur = st.pointer(&format!("/expected/{}", escape(k)));
                    if cur.and_then(Value::as_str) != Some(v.as_str()) {
                        let mut f = field(
                            &format!("/expected/{}", escape(k)),
                            cur.cloned(),
                            Some(json!(v)),
                        );
                        if staged.and_then(|s| s.get(k)).and_then(Value::as_str) == Some(v) {
                            f.changed_by = Some(
                                "staged: the image is installed and takes effect at the host's next reset, which its power resource plans".into(),
                            );
                        }
                        fields.push(f);
                    }
                }
                // The BMC's own firmware activates with a reset of the BMC alone, the host
                // keeps running; any other component (BIOS, GPU, NIC) activates when the host
                // resets. An installed (staged) image disrupts nothing more by itself: the
                // host's power resource carries the reset.
                if fields
                    .iter()
                    .any(|f| f.path != "/expected/BMC" && f.changed_by.is_none())
                {
                    disruption = Disruption::HostReboot;
                }
            }
            Aspect::Inventory => {
                let w: InventorySpec = parse_spec(id, &desired.spec)?;
                let mut wrong = Vec::new();
                if let Some(m) = &w.expect.gpu_model
                    && w.expect.gpu_count != Some(0)
                {
                    let cur = st.pointer("/expect/gpuModel");
                    if cur.and_then(Value::as_str) != Some(m.as_str()) {
                        wrong.push(format!(
                            "gpu.model: the BMC reports {}, the manifest says {m}",
                            cur.filter(|v| !v.is_null())
                                .map_or("no GPU".into(), Value::to_string)
                        ));
                    }
                }
                if let Some(n) = w.expect.gpu_count {
                    let cur = st.pointer("/expect/gpuCount");
                    if cur.and_then(Value::as_u64).unwrap_or(0) != n {
                        wrong.push(format!(
                            "gpu.count: the BMC reports {}, the manifest says {n}",
                            cur.map_or("nothing".into(), Value::to_string)
                        ));
                    }
                }
                // Hardware is observed, never applied: a mismatch is a problem of the host.
                if !wrong.is_empty() {
                    return Err(ProviderError::permanent(
                        id,
                        format!(
                            "host {}: the GPU inventory does not match the manifest: {}",
                            t.host,
                            wrong.join("; ")
                        ),
                    ));
                }
            }
        }
        let action = if fields.is_empty() {
            Action::NoOp
        } else {
            Action::Update
        };
        Ok(Change {
            id: id.clone(),
            action,
            disruption: if action == Action::NoOp {
                Disruption::None
            } else {
                disruption
            },
            fields,
            requires_replace: Vec::new(),
        })
    }
}
