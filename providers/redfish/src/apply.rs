//! Apply: each aspect written to the BMC (PATCH to the resource or its settings object,
//! actions for power, virtual media and firmware updates), and the task a BMC answers with.

use super::*;

impl RedfishProvider {
    pub(crate) async fn apply_aspect(
        &self,
        host: &Host<'_>,
        aspect: Aspect,
        spec: &Value,
        cx: &ApplyContext,
    ) -> Result<(), ProviderError> {
        let (observed, p) = self.observe_aspect(host, aspect, spec).await?;
        match aspect {
            Aspect::Power => {
                let w: PowerSpec = parse_spec(host.id, spec)?;
                if w.state == PowerState::On
                    && let Some(s) = &w.apply_at_reset
                    && !cx.dry_run
                {
                    if self.read_power(host).await?.as_deref() == Some("On") {
                        self.reset_for_settings(host, s, cx).await?;
                    } else {
                        // Powering on applies what is staged: no reset of its own.
                        self.apply_power(host, w.state, cx).await?;
                        self.verify_after_reset(host, s, cx).await?;
                        return Ok(());
                    }
                }
                self.apply_power(host, w.state, cx).await
            }
            Aspect::Boot => {
                let w: BootSpec = parse_spec(host.id, spec)?;
                let mut boot = json!({"BootSourceOverrideTarget": w.target, "BootSourceOverrideEnabled": w.enabled});
                if let Some(m) = &w.mode {
                    boot["BootSourceOverrideMode"] = json!(m);
                }
                if cx.dry_run {
                    return Ok(());
                }
                let path = p.path.clone().unwrap_or_else(|| host.system_path.clone());
                let etag = if path == host.system_path {
                    p.etag.as_deref()
                } else {
                    None
                };
                host.conn
                    .patch(&path, &json!({"Boot": boot}), etag)
                    .await
                    .map_err(|e| host.err(e))?;
                let after = typed::system(&host.get(&host.system_path).await?.body);
                if after.boot_enabled.as_deref() != Some(w.enabled.as_str()) {
                    tracing::warn!(
                        host = %host.name,
                        wanted = %w.enabled,
                        got = ?after.boot_enabled,
                        "the BMC did not take BootSourceOverrideEnabled (sushy's fake driver always reads Continuous)"
                    );
                }
                Ok(())
            }
            Aspect::Bios => {
                let w: BiosSpec = parse_spec(host.id, spec)?;
                if let Some(first) = p
                    .extra
                    .get("unknown")
                    .and_then(Value::as_array)
                    .and_then(|u| u.first())
                {
                    return Err(host.permanent(format!(
                        "unknown BIOS attribute `{}`",
                        first.as_str().unwrap_or_default()
                    )));
                }
                let (state, _) = self.observe_bios(host, spec, p.clone()).await?;
                let mut patch = Map::new();
                for (k, v) in &w.attributes {
                    if !state
                        .pointer(&format!("/attributes/{}", escape(k)))
                        .is_some_and(|c| loose_eq(c, v))
                    {
                        patch.insert(k.clone(), v.clone());
                    }
                }
                if patch.is_empty() || cx.dry_run {
                    return Ok(());
                }
                let settings = p.path.clone().ok_or_else(|| {
                    host.permanent(
                        "BIOS is read-only on this BMC (no `@Redfish.Settings` link on its Bios)",
                    )
                })?;
                tracing::info!(host = %host.name, settings = %settings, "PATCH BIOS attributes to the settings object");
                let mut body = json!({"Attributes": patch});
                if p.extra.get("applyOnReset") == Some(&json!(true)) {
                    body["@Redfish.SettingsApplyTime"] = json!({"ApplyTime": "OnReset"});
                }
                host.conn
                    .patch(&settings, &body, p.etag.as_deref())
                    .await
                    .map_err(|e| host.err(e))?;
                let (after, _) = self.observe_bios(host, spec, p).await?;
                let landed = w.attributes.iter().all(|(k, v)| {
                    after
                        .pointer(&format!("/attributes/{}", escape(k)))
                        .is_some_and(|c| loose_eq(c, v))
                });
                if landed {
                    self.bios_immediate
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(bios_key(host));
                    tracing::info!(host = %host.name, "BIOS settings applied at once (no reboot needed)");
                } else {
                    tracing::info!(host = %host.name, "BIOS settings staged: they take effect on the next reboot");
                }
                Ok(())
            }
            Aspect::SecureBoot => {
                let w: SecureBootSpec = parse_spec(host.id, spec)?;
                if cx.dry_run {
                    return Ok(());
                }
                let path = p.path.clone().unwrap_or_default();
                host.conn
                    .patch(
                        &path,
                        &json!({"SecureBootEnable": w.enabled}),
                        p.etag.as_deref(),
                    )
                    .await
                    .map_err(|e| host.err(e))?;
                Ok(())
            }
            Aspect::VirtualMedia => {
                let w: VirtualMediaSpec = parse_spec(host.id, spec)?;
                let (state, _) = self.observe_vmedia(host, spec, p.clone()).await?;
                let inserted = state
                    .get("inserted")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let same_image = state.get("image") == Some(&json!(w.image));
                if cx.dry_run {
                    return Ok(());
                }
                let path = p.path.clone().unwrap_or_default();
                if inserted && (!w.inserted || !same_image) {
                    match p.extra.get("eject").and_then(Value::as_str) {
                        Some(t) => host.conn.post(t, &json!({})).await.map(|_| ()),
                        None => host
                            .conn
                            .patch(
                                &path,
                                &json!({"Image": null, "Inserted": false}),
                                p.etag.as_deref(),
                            )
                            .await
                            .map(|_| ()),
                    }
                    .map_err(|e| host.err(e))?;
                }
                if w.inserted && !(inserted && same_image) {
                    let image = w.image.clone().unwrap_or_default();
                    match p.extra.get("insert").and_then(Value::as_str) {
                        Some(t) => host
                            .conn
                            .post(
                                t,
                                &json!({"Image": image, "Inserted": true, "WriteProtected": true}),
                            )
                            .await
                            .map(|_| ()),
                        None => host
                            .conn
                            .patch(&path, &json!({"Image": image, "Inserted": true}), None)
                            .await
                            .map(|_| ()),
                    }
                    .map_err(|e| host.err(e))?;
                }
                Ok(())
            }
            Aspect::Firmware => {
                let w: FirmwareSpec = parse_spec(host.id, spec)?;
                // What differs now, each with the image that installs it.
                // Installed already and waiting for the host's reset: never sent twice.
                let differing: Vec<&String> = w
                    .expected
                    .iter()
                    .filter(|(k, v)| {
                        observed
                            .pointer(&format!("/expected/{}", escape(k)))
                            .and_then(Value::as_str)
                            != Some(v.as_str())
                            && self.staged_version(host, k).as_deref() != Some(v.as_str())
                    })
                    .map(|(k, _)| k)
                    .collect();
                if differing.is_empty() {
                    return Ok(());
                }
                let unfixable: Vec<&str> = differing
                    .iter()
                    .filter(|k| !w.updates.contains_key(**k) && w.update.is_none())
                    .map(|k| k.as_str())
                    .collect();
                if !unfixable.is_empty() {
                    return Err(host.permanent(format!(
                        "firmware {} differs from the manifest and no image is given to install it \
                         (write `firmware: {{{}: {{version: ..., image: <URI>}}}}`)",
                        unfixable.join(", "),
                        unfixable[0]
                    )));
                }
                let target = p
                    .extra
                    .get("simpleUpdate")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        host.permanent("the BMC's UpdateService offers no SimpleUpdate action")
                    })?;
                if cx.dry_run {
                    return Ok(());
                }
                // One request per distinct image (the legacy `update` installs every component
                // at once), one at a time: BMCs run a single update task.
                let mut sent: Vec<&FirmwareUpdate> = Vec::new();
                for k in differing {
                    let update = w
                        .updates
                        .get(k)
                        .or(w.update.as_ref())
                        .ok_or_else(|| host.permanent(format!("firmware {k}: no image")))?;
                    if sent.contains(&update) {
                        continue;
                    }
                    sent.push(update);
                    let mut body = json!({"ImageURI": update.image});
                    if let Some(proto) = &update.transfer_protocol {
                        body["TransferProtocol"] = json!(proto);
                    }
                    // Host firmware waits for the host's one planned reset where the BMC can
                    // be told so; the BMC's own firmware activates with the BMC alone.
                    let host_firmware =
                        k != "BMC" && !update.targets.iter().any(|t| t == "manager");
                    if host_firmware && p.extra.get("simpleUpdateOnReset") == Some(&json!(true)) {
                        body["@Redfish.OperationApplyTime"] = json!("OnReset");
                    }
                    let targets: Vec<String> = if update.targets.is_empty() {
                        // The component's own inventory member, where one was found.
                        p.extra
                            .get("firmwareTargets")
                            .and_then(|t| t.get(k.as_str()))
                            .and_then(Value::as_str)
                            .filter(|_| w.updates.contains_key(k))
                            .map(str::to_string)
                            .into_iter()
                            .collect()
                    } else {
                        update
                            .targets
                            .iter()
                            .map(|t| match t.as_str() {
                                "system" => host.system_path.clone(),
                                "manager" => host.manager_path().unwrap_or_default(),
                                other => other.to_string(),
                            })
                            .collect()
                    };
                    if !targets.is_empty() {
                        body["Targets"] = json!(targets);
                    }
                    let r = host
                        .conn
                        .post(target, &body)
                        .await
                        .map_err(|e| host.err(e))?;
                    if let Some(monitor) = r.header("Location") {
                        self.follow_task(host, &monitor, r.status.as_u16() == 202, cx)
                            .await?;
                    }
                    // Accepted (and its task completed): every component this image installs
                    // is staged at its expected version until the host's reset activates it.
                    let mut staged = self
                        .staged_firmware
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    for (c, v) in &w.expected {
                        if w.updates.get(c).or(w.update.as_ref()) == Some(update) {
                            staged.insert((bios_key(host), c.clone()), v.clone());
                        }
                    }
                }
                Ok(())
            }
            Aspect::Inventory => Err(host.permanent("inventory is observed, not applied")),
        }
    }

    /// Follows a task monitor until the task ends (or a 404 for BMCs that
    /// answer 204 + Location but keep no task, like sushy).
    pub(crate) async fn follow_task(
        &self,
        host: &Host<'_>,
        monitor: &str,
        accepted: bool,
        cx: &ApplyContext,
    ) -> Result<(), ProviderError> {
        let deadline = Instant::now() + self.options.task_timeout.min(cx.timeout);
        loop {
            match host.conn.get(monitor).await {
                Ok(r) => {
                    let state = str_of(&r.body, "TaskState");
                    match state.as_deref() {
                        Some("Completed") => return Ok(()),
                        Some("Exception" | "Killed" | "Cancelled") => {
                            let msg = r
                                .body
                                .pointer("/Messages/0/Message")
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            return Err(host.permanent(format!(
                                "firmware update task {monitor} ended {}: {msg}",
                                state.unwrap_or_default()
                            )));
                        }
                        None if r.status.as_u16() != 202 => return Ok(()),
                        _ => {}
                    }
                }
                Err(e) if e.is_not_found() && !accepted => return Ok(()),
                Err(e) => return Err(host.err(e)),
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::transient(
                    host.id,
                    format!(
                        "host {}: firmware update task {monitor} still running",
                        host.name
                    ),
                ));
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }
}
