//! Resets: the one planned reset that applies staged settings, sent once and read back before
//! any retry, and power changes.

use super::*;

impl RedfishProvider {
    /// The staged settings of `s` that are not current on the host yet, in words.
    pub(crate) async fn awaiting_reset(
        &self,
        host: &Host<'_>,
        s: &ResetSettings,
    ) -> Result<Vec<String>, ProviderError> {
        let mut out = Vec::new();
        if !s.bios.is_empty()
            && let Some(path) = host.link("Bios")
            && let Some(r) = host.get_opt(&path).await?
        {
            let cur = r.body.get("Attributes");
            for (k, v) in &s.bios {
                let c = cur.and_then(|a| a.get(k));
                if !c.is_some_and(|c| loose_eq(c, v)) {
                    out.push(format!(
                        "BIOS {k}: {} -> {v}",
                        c.map_or("absent".into(), Value::to_string)
                    ));
                }
            }
        }
        if let Some(want) = s.secure_boot
            && let Some(path) = host.link("SecureBoot")
            && let Some(r) = host.get_opt(&path).await?
        {
            // What the host booted with, when the BMC says; else the setting itself.
            let current = match r.body.get("SecureBootCurrentBoot").and_then(Value::as_str) {
                Some(c) => Some(c == "Enabled"),
                None => r.body.get("SecureBootEnable").and_then(Value::as_bool),
            };
            if current != Some(want) {
                out.push(format!(
                    "secure boot: {} -> {}",
                    current.map_or("unknown".into(), |c| c.to_string()),
                    want
                ));
            }
        }
        if !s.firmware.is_empty() {
            let versions = self
                .firmware_versions(host, &s.firmware, false, &mut Private::default())
                .await?;
            for (k, want) in &s.firmware {
                let cur = versions.get(k).and_then(Value::as_str);
                if cur != Some(want.as_str()) {
                    out.push(format!(
                        "firmware {k}: {} -> {want}",
                        cur.unwrap_or("unknown")
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The reset action's target and the graceful and forced restart types the BMC allows.
    pub(crate) async fn restart_types(
        &self,
        host: &Host<'_>,
    ) -> Result<(String, Option<&'static str>, Option<&'static str>), ProviderError> {
        let action = host
            .system
            .pointer("/Actions/#ComputerSystem.Reset")
            .cloned()
            .ok_or_else(|| host.permanent("the System has no ComputerSystem.Reset action: cannot reset the host to apply staged settings"))?;
        let target = action
            .get("target")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let allowed = allowable(host, &action, "ResetType").await?;
        let offers = |t: &str| allowed.as_ref().is_none_or(|a| a.iter().any(|x| x == t));
        let graceful = ["GracefulRestart"].into_iter().find(|t| offers(t));
        let forced = ["ForceRestart", "PowerCycle"]
            .into_iter()
            .find(|t| offers(t));
        if graceful.is_none() && forced.is_none() {
            return Err(host.permanent(format!(
                "the BMC offers no restart reset type (ResetType allows: {}): cannot apply staged settings",
                allowed.unwrap_or_default().join(", ")
            )));
        }
        Ok((target, graceful, forced))
    }

    pub(crate) async fn reset_plan(&self, host: &Host<'_>) -> Result<String, ProviderError> {
        Ok(match self.restart_types(host).await {
            Ok((_, Some(g), Some(f))) => format!(
                "{g}, then {f} if the host has not started restarting after {}s",
                self.options.graceful_timeout.as_secs()
            ),
            Ok((_, Some(t), None) | (_, None, Some(t))) => t.to_string(),
            Ok((_, None, None)) => unreachable!("restart_types refuses this"),
            Err(e) => format!("no reset possible: {}", e.message),
        })
    }

    pub(crate) fn reset_lock(&self, host: &Host<'_>) -> Arc<tokio::sync::Mutex<()>> {
        self.reset_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(bios_key(host))
            .or_default()
            .clone()
    }

    /// Sends one reset POST; a dropped connection is not an error (the reset may have
    /// landed: the caller reads the power state back instead of resending).
    pub(crate) async fn send_reset(
        &self,
        host: &Host<'_>,
        target: &str,
        reset: &str,
    ) -> Result<(), ProviderError> {
        tracing::info!(host = %host.name, reset, "ComputerSystem.Reset to apply staged settings");
        match host.conn.post(target, &json!({"ResetType": reset})).await {
            Ok(_) => Ok(()),
            Err(HttpError::Unreachable { .. }) => {
                tracing::warn!(host = %host.name, reset, "connection lost during the reset; reading the power state back, not resending");
                Ok(())
            }
            Err(e) => Err(host.err(e)),
        }
    }

    /// The host's one maintenance reset: the settings are staged (the bios and secure-boot
    /// resources come first); one restart (graceful, forced once after `graceful_timeout`
    /// when power never left On), then every value is verified. Never two resets in flight,
    /// and never a reset re-sent without reading the power state back first.
    pub(crate) async fn reset_for_settings(
        &self,
        host: &Host<'_>,
        s: &ResetSettings,
        cx: &ApplyContext,
    ) -> Result<(), ProviderError> {
        let lock = self.reset_lock(host);
        let _one_reset = lock.lock().await;
        if self.awaiting_reset(host, s).await?.is_empty() {
            return Ok(());
        }
        let (target, graceful, forced) = self.restart_types(host).await?;
        let first = graceful.or(forced).unwrap_or("ForceRestart");
        self.send_reset(host, &target, first).await?;
        let mut sent: Vec<&str> = vec![first];
        let start = Instant::now();
        let wait = self.options.power_timeout.min(cx.timeout);
        let mut seen_transition = false;
        loop {
            tokio::time::sleep(self.options.poll_interval).await;
            // A BMC may not answer while the host restarts: keep looking until the deadline.
            let power = match self.read_power(host).await {
                Ok(p) => p,
                Err(e) if e.kind == fleetform_contract::provider::ErrorKind::Transient => None,
                Err(e) => return Err(e),
            };
            if power.as_deref().is_some_and(|p| p != "On") {
                seen_transition = true;
            }
            if power.as_deref() == Some("On") {
                let left = self.awaiting_reset(host, s).await?;
                if left.is_empty() {
                    return Ok(());
                }
                // Power read back On, it never moved, the graceful time is up: force once.
                if !seen_transition
                    && sent.len() == 1
                    && graceful.is_some()
                    && let Some(f) = forced
                    && start.elapsed() >= self.options.graceful_timeout
                {
                    tracing::warn!(host = %host.name, "no restart after {first}; power reads On: sending {f}");
                    self.send_reset(host, &target, f).await?;
                    sent.push(f);
                    seen_transition = false;
                }
            }
            if start.elapsed() >= wait {
                let left = self.awaiting_reset(host, s).await.unwrap_or_default();
                // Permanent: the engine must not retry into another reset.
                return Err(host.permanent(format!(
                    "sent {} to apply staged settings; {}s later power is {} and still not current: {}; not resending (look at the BMC's settings object messages)",
                    sent.join(" then "),
                    wait.as_secs(),
                    power.unwrap_or_else(|| "unknown".into()),
                    left.join("; ")
                )));
            }
        }
    }

    /// After a power-on: every staged value must be current once power reads On.
    pub(crate) async fn verify_after_reset(
        &self,
        host: &Host<'_>,
        s: &ResetSettings,
        cx: &ApplyContext,
    ) -> Result<(), ProviderError> {
        let wait = self.options.power_timeout.min(cx.timeout);
        let start = Instant::now();
        loop {
            let left = self.awaiting_reset(host, s).await?;
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= wait {
                return Err(host.permanent(format!(
                    "powered on, but the staged settings are not current {}s later: {}",
                    wait.as_secs(),
                    left.join("; ")
                )));
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }

    pub(crate) async fn read_power(
        &self,
        host: &Host<'_>,
    ) -> Result<Option<String>, ProviderError> {
        Ok(typed::system(&host.get(&host.system_path).await?.body).power_state)
    }

    pub(crate) async fn apply_power(
        &self,
        host: &Host<'_>,
        want: PowerState,
        cx: &ApplyContext,
    ) -> Result<(), ProviderError> {
        let want_s = match want {
            PowerState::On => "On",
            PowerState::Off => "Off",
        };
        let transitional = match want {
            PowerState::On => "PoweringOn",
            PowerState::Off => "PoweringOff",
        };
        let current = self.read_power(host).await?;
        if current.as_deref() == Some(want_s) {
            return Ok(());
        }
        if cx.dry_run {
            return Ok(());
        }
        if current.as_deref() != Some(transitional) {
            let action = host
                .system
                .pointer("/Actions/#ComputerSystem.Reset")
                .cloned()
                .ok_or_else(|| host.permanent("the System has no ComputerSystem.Reset action"))?;
            let target = action
                .get("target")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let allowed = allowable(host, &action, "ResetType").await?;
            let prefs: &[&str] = match want {
                PowerState::On => &["On", "ForceOn"],
                PowerState::Off => &["ForceOff", "GracefulShutdown"],
            };
            let reset = match &allowed {
                Some(a) => prefs
                    .iter()
                    .find(|p| a.iter().any(|x| x == *p))
                    .copied()
                    .ok_or_else(|| {
                        host.permanent(format!(
                            "the BMC offers no reset type for {want_s} (allowed: {})",
                            a.join(", ")
                        ))
                    })?,
                None => prefs[0],
            };
            let body = json!({"ResetType": reset});
            match host.conn.post(&target, &body).await {
                Ok(_) => {}
                Err(HttpError::Unreachable { .. }) => {
                    // The reset may or may not have reached the BMC: look before resending.
                    tracing::warn!(host = %host.name, "connection lost during reset; re-reading PowerState before resending");
                    tokio::time::sleep(self.options.poll_interval).await;
                    let now = self.read_power(host).await?;
                    if now.as_deref() != Some(want_s) && now.as_deref() != Some(transitional) {
                        host.conn
                            .post(&target, &body)
                            .await
                            .map_err(|e| host.err(e))?;
                    }
                }
                Err(e) => return Err(host.err(e)),
            }
        }
        let wait = self.options.power_timeout.min(cx.timeout);
        let deadline = Instant::now() + wait;
        loop {
            tokio::time::sleep(self.options.poll_interval).await;
            let now = self.read_power(host).await?;
            if now.as_deref() == Some(want_s) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::transient(
                    host.id,
                    format!(
                        "host {}: power is still {} {}s after the reset",
                        host.name,
                        now.unwrap_or_default(),
                        wait.as_secs()
                    ),
                ));
            }
        }
    }
}
