//! Observe: each aspect of a host read from its BMC (power, boot, BIOS with its pending
//! settings, secure boot, virtual media, firmware inventory, hardware inventory).

use super::*;

impl RedfishProvider {
    pub(crate) async fn observe_one(
        &self,
        rq: &ObserveRequest<'_>,
    ) -> Result<Option<Observed>, ProviderError> {
        let id = rq.id;
        let t = parse_id(id)?;
        let bmc: spec::AnyBmc = parse_spec(id, rq.spec)?;
        let host = self.host(id, &t.host, &bmc.bmc).await?;
        let result = self.observe_aspect(&host, t.aspect, rq.spec).await;
        host.conn.close().await;
        let (state, private) = result?;
        Ok(Some(Observed {
            id: id.clone(),
            state,
            private: Some(serde_json::to_value(private).unwrap_or(Value::Null)),
        }))
    }

    pub(crate) async fn observe_aspect(
        &self,
        host: &Host<'_>,
        aspect: Aspect,
        spec: &Value,
    ) -> Result<(Value, Private), ProviderError> {
        let mut p = Private {
            system: Some(host.system_path.clone()),
            ..Private::default()
        };
        match aspect {
            Aspect::Power => {
                let sys = typed::system(&host.system);
                p.etag = host.system_etag.clone();
                let want: PowerSpec = parse_spec(host.id, spec)?;
                let mut state = json!({"state": sys.power_state});
                if let Some(s) = &want.apply_at_reset {
                    let awaiting = self.awaiting_reset(host, s).await?;
                    if !awaiting.is_empty() {
                        p.extra
                            .insert("resetPlan".into(), json!(self.reset_plan(host).await?));
                    }
                    state["awaitingReset"] = json!(awaiting);
                }
                Ok((state, p))
            }
            Aspect::Boot => {
                let sys = typed::system(&host.system);
                let want: BootSpec = parse_spec(host.id, spec)?;
                let mut state = json!({"target": sys.boot_target, "enabled": sys.boot_enabled});
                if want.mode.is_some() {
                    state["mode"] = json!(sys.boot_mode);
                }
                p.etag = host.system_etag.clone();
                // Some BMCs (OpenBMC on GB200) take Boot changes through the System's settings object.
                p.path = Some(
                    host.system
                        .pointer("/@Redfish.Settings/SettingsObject/@odata.id")
                        .and_then(Value::as_str)
                        .map_or_else(|| host.system_path.clone(), str::to_string),
                );
                if let Some(a) = sys.boot_targets_allowed {
                    p.extra.insert("allowableTargets".into(), json!(a));
                }
                Ok((state, p))
            }
            Aspect::Bios => self.observe_bios(host, spec, p).await,
            Aspect::SecureBoot => {
                let path = host.link("SecureBoot").ok_or_else(|| {
                    host.unsupported("secureBoot", &format!("{}/SecureBoot", host.system_path))
                })?;
                let r = host.get_opt(&path).await?.ok_or_else(|| {
                    host.unsupported("secureBoot", &format!("{path} (not implemented there)"))
                })?;
                p.etag = r.header("ETag");
                p.path = Some(path);
                Ok((
                    json!({"enabled": r.body.get("SecureBootEnable").cloned().unwrap_or(Value::Null)}),
                    p,
                ))
            }
            Aspect::VirtualMedia => self.observe_vmedia(host, spec, p).await,
            Aspect::Firmware => self.observe_firmware(host, spec, p).await,
            Aspect::Inventory => self.observe_inventory(host, spec, p).await,
        }
    }

    pub(crate) async fn observe_bios(
        &self,
        host: &Host<'_>,
        spec: &Value,
        mut p: Private,
    ) -> Result<(Value, Private), ProviderError> {
        let want: BiosSpec = parse_spec(host.id, spec)?;
        let path = host
            .link("Bios")
            .ok_or_else(|| host.unsupported("bios", &format!("{}/Bios", host.system_path)))?;
        let r = host
            .get_opt(&path)
            .await?
            .ok_or_else(|| host.unsupported("bios", &format!("{path} (not implemented there)")))?;
        let current = r
            .body
            .get("Attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        // Only the link the BMC publishes: a Bios without `@Redfish.Settings` is read-only.
        let settings = r
            .body
            .pointer("/@Redfish.Settings/SettingsObject/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let apply_times = r
            .body
            .pointer("/@Redfish.Settings/SupportedApplyTimes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            });
        let mut pending = Map::new();
        let settings_body = match &settings {
            Some(s) => host.get_opt(s).await?,
            None => None,
        };
        if let Some(s) = settings_body {
            p.etag = s.header("ETag");
            if let Some(attrs) = s.body.get("Attributes").and_then(Value::as_object) {
                for (k, v) in attrs {
                    if want.attributes.contains_key(k)
                        && current.get(k).is_none_or(|c| !loose_eq(c, v))
                    {
                        pending.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut attrs = Map::new();
        let mut unknown = Vec::new();
        for k in want.attributes.keys() {
            match current.get(k) {
                Some(v) => {
                    attrs.insert(k.clone(), v.clone());
                }
                None => unknown.push(json!(k)),
            }
        }
        p.path = settings;
        p.extra.insert("biosPath".into(), json!(path));
        p.extra.insert("pending".into(), Value::Object(pending));
        p.extra.insert("unknown".into(), Value::Array(unknown));
        p.extra.insert(
            "knownAttributes".into(),
            json!(current.keys().take(12).collect::<Vec<_>>()),
        );
        let immediate = apply_times
            .as_ref()
            .is_some_and(|a| a.iter().any(|t| t == "Immediate"))
            || self
                .bios_immediate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&bios_key(host));
        p.extra
            .insert("appliesImmediately".into(), json!(immediate));
        // A BMC that lists apply times wants to be told (iDRAC queues the job only then).
        if apply_times
            .as_ref()
            .is_some_and(|a| a.iter().any(|t| t == "OnReset"))
        {
            p.extra.insert("applyOnReset".into(), json!(true));
        }
        Ok((json!({"attributes": attrs}), p))
    }

    pub(crate) async fn vmedia_collection(
        &self,
        host: &Host<'_>,
    ) -> Result<Option<String>, ProviderError> {
        if let Some(c) = host.link("VirtualMedia")
            && host.get_opt(&c).await?.is_some()
        {
            return Ok(Some(c));
        }
        if let Some(m) = host.manager_path()
            && let Some(r) = host.get_opt(&m).await?
            && let Some(c) = odata_id(r.body.get("VirtualMedia"))
        {
            return Ok(Some(c.to_string()));
        }
        Ok(None)
    }

    pub(crate) async fn observe_vmedia(
        &self,
        host: &Host<'_>,
        spec: &Value,
        mut p: Private,
    ) -> Result<(Value, Private), ProviderError> {
        let want: VirtualMediaSpec = parse_spec(host.id, spec)?;
        let coll = self.vmedia_collection(host).await?.ok_or_else(|| {
            host.permanent(
                "the BMC exposes no VirtualMedia (neither on the System nor on its Manager)",
            )
        })?;
        let members = client::members(&host.get(&coll).await?.body);
        let mut chosen = None;
        let mut seen = Vec::new();
        for m in &members {
            let r = host.get(m).await?;
            let id = str_of(&r.body, "Id")
                .unwrap_or_else(|| m.rsplit('/').next().unwrap_or(m).to_string());
            let ok = match &want.device {
                Some(d) => &id == d,
                None => r
                    .body
                    .get("MediaTypes")
                    .and_then(Value::as_array)
                    .is_some_and(|t| t.iter().any(|x| matches!(x.as_str(), Some("CD" | "DVD")))),
            };
            seen.push(id);
            if ok {
                chosen = Some((m.clone(), r));
                break;
            }
        }
        if members.is_empty() {
            return Err(host.unsupported(
                "virtual media",
                &format!("VirtualMedia device ({coll} has no members)"),
            ));
        }
        let Some((path, r)) = chosen else {
            return Err(host.permanent(match &want.device {
                Some(d) => format!("no VirtualMedia device `{d}` (have: {})", seen.join(", ")),
                None => format!(
                    "no VirtualMedia device takes CD/DVD images (have: {})",
                    seen.join(", ")
                ),
            }));
        };
        let image = str_of(&r.body, "Image").filter(|s| !s.is_empty());
        let inserted = r
            .body
            .get("Inserted")
            .and_then(Value::as_bool)
            .unwrap_or(image.is_some());
        for (action, key) in [
            ("#VirtualMedia.InsertMedia", "insert"),
            ("#VirtualMedia.EjectMedia", "eject"),
        ] {
            if let Some(t) = r
                .body
                .pointer(&format!("/Actions/{}/target", action.replace('/', "~1")))
                .and_then(Value::as_str)
            {
                p.extra.insert(key.into(), json!(t));
            }
        }
        p.etag = r.header("ETag");
        p.path = Some(path);
        Ok((json!({"image": image, "inserted": inserted}), p))
    }

    pub(crate) async fn observe_firmware(
        &self,
        host: &Host<'_>,
        spec: &Value,
        mut p: Private,
    ) -> Result<(Value, Private), ProviderError> {
        let want: FirmwareSpec = parse_spec(host.id, spec)?;
        let untargeted = want.updates.iter().any(|(_, u)| u.targets.is_empty());
        let versions = self
            .firmware_versions(host, &want.expected, untargeted, &mut p)
            .await?;
        // A staged image the host's reset has activated is staged no more.
        self.staged_firmware
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(h, c), v| {
                h != &bios_key(host) || versions.get(c).and_then(Value::as_str) != Some(v.as_str())
            });
        // Installed here and waiting for the host's reset: diff marks them staged.
        let staged: Map<String, Value> = want
            .expected
            .iter()
            .filter(|(k, v)| {
                versions.get(*k).and_then(Value::as_str) != Some(v.as_str())
                    && self.staged_version(host, k).as_deref() == Some(v.as_str())
            })
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        if !staged.is_empty() {
            p.extra.insert("staged".into(), Value::Object(staged));
        }
        Ok((json!({"expected": versions}), p))
    }

    /// The version a firmware image this process installed stages for `component`.
    pub(crate) fn staged_version(&self, host: &Host<'_>, component: &str) -> Option<String> {
        self.staged_firmware
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(bios_key(host), component.to_string()))
            .cloned()
    }

    /// The running version of each `expected` component: BIOS and BMC from the System and the
    /// Manager where they say, the rest (and these, where they do not) from the
    /// FirmwareInventory through the alias table. `members`: read the inventory even when
    /// every version is known (an update without targets needs its member's path). Notes what
    /// it found in `p` (`firmwareInventory`, `firmwareTargets`, `simpleUpdate`).
    pub(crate) async fn firmware_versions(
        &self,
        host: &Host<'_>,
        expected: &BTreeMap<String, String>,
        members: bool,
        p: &mut Private,
    ) -> Result<BTreeMap<String, Value>, ProviderError> {
        let mut versions: BTreeMap<String, Value> = BTreeMap::new();
        for k in expected.keys() {
            let v = match k.as_str() {
                "BIOS" => host.system.get("BiosVersion").cloned(),
                "BMC" => match host.manager_path() {
                    Some(m) => host
                        .get_opt(&m)
                        .await?
                        .and_then(|r| r.body.get("FirmwareVersion").cloned()),
                    None => None,
                },
                _ => None,
            };
            if let Some(v) = v.filter(|v| !v.is_null()) {
                versions.insert(k.clone(), v);
            }
        }
        let unread: Vec<&String> = expected
            .keys()
            .filter(|k| !versions.contains_key(*k))
            .collect();
        // An update without explicit targets needs its component's inventory member.
        let untargeted = members;
        let mut inventory: Option<Vec<InventoryMember>> = None;
        let mut inventory_note = String::from("UpdateService not linked from the service root");
        let mut inventory_ids: Vec<String> = Vec::new();
        if let Some(us) = odata_id(host.conn.root.get("UpdateService"))
            && let Some(r) = host.get_opt(us).await?
        {
            if let Some(t) = r
                .body
                .pointer("/Actions/#UpdateService.SimpleUpdate/target")
                .and_then(Value::as_str)
            {
                p.extra.insert("simpleUpdate".into(), json!(t));
            }
            // A BMC that can hold an installed image until the host resets says so; asked for
            // `OnReset`, it never restarts the host by itself (the planned reset does).
            let on_reset = r
                .body
                .pointer("/Actions/#UpdateService.SimpleUpdate/@Redfish.OperationApplyTimeSupport/SupportedValues")
                .and_then(Value::as_array)
                .is_some_and(|v| v.iter().any(|x| x == "OnReset"));
            if on_reset {
                p.extra.insert("simpleUpdateOnReset".into(), json!(true));
            }
            match odata_id(r.body.get("FirmwareInventory")) {
                None => {
                    inventory_note =
                        "BMC does not expose FirmwareInventory (no link in UpdateService)".into()
                }
                Some(fi) => match host.get_opt(fi).await? {
                    None => {
                        inventory_note =
                            format!("BMC does not expose FirmwareInventory ({fi} answers 404)")
                    }
                    Some(coll) => {
                        let members = client::members(&coll.body);
                        inventory_note = format!("FirmwareInventory has {} members", members.len());
                        inventory_ids = members
                            .iter()
                            .map(|m| {
                                m.trim_end_matches('/')
                                    .rsplit('/')
                                    .next()
                                    .unwrap_or(m)
                                    .to_string()
                            })
                            .collect();
                        let mut items = Vec::new();
                        if !unread.is_empty() || untargeted {
                            for m in &members {
                                if let Some(r) = host.get_opt(m).await? {
                                    items.push(InventoryMember {
                                        path: m.clone(),
                                        id: str_of(&r.body, "Id").unwrap_or_default(),
                                        name: str_of(&r.body, "Name").unwrap_or_default(),
                                        version: r
                                            .body
                                            .get("Version")
                                            .cloned()
                                            .unwrap_or(Value::Null),
                                    });
                                }
                            }
                        }
                        inventory = Some(items);
                    }
                },
            }
        }
        p.extra
            .insert("firmwareInventory".into(), json!(inventory_note));
        let mut targets = Map::new();
        for k in expected.keys() {
            let Some(member) = inventory
                .as_deref()
                .and_then(|inv| firmware::member(inv, k))
            else {
                continue;
            };
            targets.insert(k.clone(), json!(member.path));
            if !versions.contains_key(k) {
                versions.insert(k.clone(), member.version.clone());
            }
        }
        p.extra
            .insert("firmwareTargets".into(), Value::Object(targets));
        let missing: Vec<String> = expected
            .keys()
            .filter(|k| !versions.contains_key(*k))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let why = if inventory.is_none() {
                format!("{inventory_note}: cannot observe {}", missing.join(", "))
            } else {
                format!(
                    "{} not found ({inventory_note}; BIOS comes from the System's BiosVersion, BMC from the Manager's \
                     FirmwareVersion, else from the inventory member the alias table names (BIOS: {}; BMC: {}); \
                     name a FirmwareInventory member instead, it has: {})",
                    missing.join(", "),
                    firmware::BIOS_ALIASES.join(", "),
                    firmware::BMC_ALIASES.join(", "),
                    inventory_ids.join(", ")
                )
            };
            return Err(host.permanent(why));
        }
        Ok(versions)
    }

    pub(crate) async fn observe_inventory(
        &self,
        host: &Host<'_>,
        spec: &Value,
        p: Private,
    ) -> Result<(Value, Private), ProviderError> {
        let want: InventorySpec = parse_spec(host.id, spec)?;
        // GPUs may sit in another ComputerSystem of the same BMC (HGX baseboards): look at all.
        let mut system_paths = vec![host.system_path.clone()];
        if let Some(coll) = odata_id(host.conn.root.get("Systems"))
            && let Some(r) = host.get_opt(coll).await?
        {
            for s in client::members(&r.body) {
                if s.trim_end_matches('/') != host.system_path.trim_end_matches('/') {
                    system_paths.push(s);
                }
            }
        }
        let mut gpus: Vec<Option<String>> = Vec::new();
        let mut any_processors = false;
        for sp in &system_paths {
            let sys = if sp == &host.system_path {
                host.system.clone()
            } else {
                host.get(sp).await?.body
            };
            let Some(pp) = odata_id(sys.get("Processors")) else {
                continue;
            };
            let Some(coll) = host.get_opt(pp).await? else {
                continue;
            };
            any_processors = true;
            for mp in client::members(&coll.body) {
                let r = host.get(&mp).await?;
                if r.body.get("ProcessorType").and_then(Value::as_str) == Some("GPU") {
                    gpus.push(str_of(&r.body, "Model"));
                }
            }
        }
        // Supermicro HGX: the GPUs are only PCIe devices of the System's chassis.
        let mut any_pcie = false;
        if gpus.is_empty() {
            let chassis: Vec<String> = host
                .system
                .pointer("/Links/Chassis")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| odata_id(Some(c)).map(str::to_string))
                .collect();
            for c in &chassis {
                let Some(r) = host.get_opt(c).await? else {
                    continue;
                };
                let Some(pd) = odata_id(r.body.get("PCIeDevices")).map(str::to_string) else {
                    continue;
                };
                let Some(coll) = host.get_opt(&pd).await? else {
                    continue;
                };
                any_pcie = true;
                for mp in client::members(&coll.body) {
                    let r = host.get(&mp).await?;
                    let says_gpu = ["Id", "Name", "Description"].iter().any(|k| {
                        str_of(&r.body, k).is_some_and(|v| v.to_uppercase().contains("GPU"))
                    });
                    if says_gpu {
                        gpus.push(str_of(&r.body, "Model"));
                    }
                }
            }
        }
        if !any_processors && !any_pcie && want.expect.gpu_count != Some(0) {
            // Nothing to compare with (an emulator, a BMC without inventory): the GPUs cannot
            // be checked, which is said, but it is not a reason to stop planning the host.
            tracing::warn!(
                host = %host.name, system = %host.system_path,
                "the BMC reports no GPU inventory (no Processors of type GPU, no Chassis PCIeDevices): \
                 the manifest's gpu cannot be checked against it"
            );
            let mut expect = Map::new();
            if let Some(m) = &want.expect.gpu_model {
                expect.insert("gpuModel".into(), json!(m));
            }
            if let Some(c) = want.expect.gpu_count {
                expect.insert("gpuCount".into(), json!(c));
            }
            return Ok((json!({"expect": expect, "unverified": true}), p));
        }
        let mut expect = Map::new();
        if let Some(m) = &want.expect.gpu_model {
            let needle = m.to_lowercase();
            // A GPU without `Model` (GB200's BMC) cannot contradict the manifest.
            let bad = gpus
                .iter()
                .flatten()
                .find(|g| !g.to_lowercase().contains(&needle));
            let v = match (gpus.is_empty(), bad) {
                (true, _) => Value::Null,
                (false, None) => json!(m),
                (false, Some(g)) => json!(g),
            };
            expect.insert("gpuModel".into(), v);
        }
        if want.expect.gpu_count.is_some() {
            expect.insert("gpuCount".into(), json!(gpus.len()));
        }
        Ok((json!({"expect": expect}), p))
    }
}
