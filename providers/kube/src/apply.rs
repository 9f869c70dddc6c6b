//! Apply: server-side apply under the `fleetform` field manager, deletes of objects fleetform
//! owns (and waiting until they are gone), and chart releases' own objects.

use super::*;

impl KubeProvider {
    pub(crate) async fn server_side_apply(
        &self,
        id: &ResourceId,
        t: &Target,
        cx: &ApplyContext,
    ) -> Result<(), ProviderError> {
        let api = self.api_required(id, t).await?;
        if t.spec.adopt && self.get(id, t, &api).await?.is_none() {
            return Err(self.not_found(id, t));
        }
        let verb = if t.spec.force {
            "apply (force)"
        } else {
            "apply"
        };
        apply_unread(
            &api,
            &t.reference.name,
            &ssa_params(t.spec.force, cx.dry_run),
            &t.object,
        )
        .await
        .map_err(|e| error::map(&self.cx(id, t, verb), e))
    }

    /// Deletes the object when fleetform manages it; a missing object is a success.
    pub(crate) async fn delete_owned(
        &self,
        id: &ResourceId,
        t: &Target,
        cx: &ApplyContext,
    ) -> Result<bool, ProviderError> {
        let Some(api) = self.api(id, t).await? else {
            return Ok(false);
        };
        let Some(live) = self.get(id, t, &api).await? else {
            return Ok(false);
        };
        let managers = fields::managers(
            live.pointer("/metadata/managedFields")
                .unwrap_or(&Value::Null),
        );
        if !managers.iter().any(|m| m == FIELD_MANAGER) {
            return Err(ProviderError::permanent(
                id,
                format!(
                    "refusing to delete {} in cluster {}: fleetform does not manage it (field managers: {})",
                    t.reference.describe(),
                    t.spec.cluster,
                    if managers.is_empty() {
                        "none".to_string()
                    } else {
                        managers.join(", ")
                    }
                ),
            ));
        }
        let params = DeleteParams {
            dry_run: cx.dry_run,
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&t.reference.name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(error::map(&self.cx(id, t, "delete"), e)),
        }
    }

    pub(crate) async fn wait_gone(&self, id: &ResourceId, t: &Target) -> Result<(), ProviderError> {
        let api = self.api_required(id, t).await?;
        while self.get(id, t, &api).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Releases the fields fleetform owns on an adopted object by applying only its identity:
    /// the server removes what fleetform alone owned; the object stays.
    pub(crate) async fn release(
        &self,
        id: &ResourceId,
        t: &Target,
        cx: &ApplyContext,
    ) -> Result<(), ProviderError> {
        let Some(api) = self.api(id, t).await? else {
            return Ok(());
        };
        if self.get(id, t, &api).await?.is_none() {
            return Ok(());
        }
        let mut bare = json!({"apiVersion": t.reference.api_version, "kind": t.reference.kind,
            "metadata": {"name": t.reference.name}});
        if let Some(ns) = &t.reference.namespace {
            bare["metadata"]["namespace"] = json!(ns);
        }
        api.patch(
            &t.reference.name,
            &ssa_params(false, cx.dry_run),
            &Patch::Apply(&bare),
        )
        .await
        .map_err(|e| error::map(&self.cx(id, t, "release fields of"), e))?;
        Ok(())
    }

    pub(crate) async fn apply_inner(
        &self,
        request: &ApplyRequest<'_>,
        cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        let change = request.change;
        let id = &change.id;
        let desired_spec = request.desired.map(|d| &d.spec);
        let spec = desired_spec.or(request.last_applied).ok_or_else(|| {
            ProviderError::permanent(
                id,
                "nothing to apply: neither a desired nor a last-applied spec was given",
            )
        })?;
        let t = self.target(id, spec)?;
        match change.action {
            Action::NoOp => {}
            // A recreated hook (see `KubeSpec::recreate`): deleted and created again, as Helm
            // does with `before-hook-creation`.
            Action::Update if t.spec.recreate && !change.requires_replace.is_empty() => {
                if self.delete_owned(id, &t, cx).await? && !cx.dry_run {
                    self.wait_gone(id, &t).await?;
                }
                if !cx.dry_run {
                    self.server_side_apply(id, &t, cx).await?;
                }
            }
            Action::Create | Action::Update => self.server_side_apply(id, &t, cx).await?,
            Action::Replace => {
                if t.spec.adopt {
                    return Err(ProviderError::permanent(
                        id,
                        "an adopted object is never replaced: change it in place",
                    ));
                }
                if self.delete_owned(id, &t, cx).await? && !cx.dry_run {
                    self.wait_gone(id, &t).await?;
                }
                if !cx.dry_run {
                    self.server_side_apply(id, &t, cx).await?;
                }
            }
            Action::Delete => {
                if t.spec.adopt {
                    self.release(id, &t, cx).await?;
                } else {
                    self.delete_owned(id, &t, cx).await?;
                }
            }
        }
        Ok(Applied {
            id: id.clone(),
            spec: spec.clone(),
        })
    }
}
