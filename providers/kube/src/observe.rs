//! Observe: objects read by one LIST per kind (labelled, or grouped per namespace) where
//! that answers, by GET and a server-side-apply dry-run otherwise; settled without the server
//! when the live object already says everything (the re-plan fast path).

use super::*;

impl KubeProvider {
    /// Observes one object: reads it unless `known` says what a LIST found, then settles it
    /// without the server when it can, and dry-runs it otherwise.
    pub(crate) async fn observe_one(
        &self,
        req: &ObserveRequest<'_>,
        t: Target,
        known: Known,
        missing_namespaces: &HashSet<(String, String)>,
    ) -> Result<Option<Observed>, ProviderError> {
        let id = req.id;
        let _permit = self.limit(&t.spec.cluster).acquire_owned().await;
        let Some(api) = self.api(id, &t).await? else {
            if t.spec.adopt {
                return Err(self.not_found(id, &t));
            }
            return Ok(None);
        };
        let live = match known {
            Known::Compared(live) => return self.dry_run(id, &t, &api, live).await,
            Known::Listed(live) => live,
            Known::Unread => self.get(id, &t, &api).await?,
        };
        let Some(live) = live else {
            if !req.desired {
                return Ok(None);
            }
            if t.spec.adopt {
                return Err(self.not_found(id, &t));
            }
            if let Some(ns) = &t.reference.namespace
                && missing_namespaces.contains(&(t.spec.cluster.clone(), ns.clone()))
            {
                return Ok(None);
            }
            // Absent: a dry-run create still has the server validate the object (schema, strict
            // fields, CEL, admission), unless its namespace is itself still to be created.
            return match api
                .patch(
                    &t.reference.name,
                    &ssa_params(true, true),
                    &Patch::Apply(&t.object),
                )
                .await
            {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(error::map(&self.cx(id, &t, "dry-run apply"), e)),
            };
        };
        match settle(req, &t, Live::of(&t, live)) {
            Settled::Done(observed) => Ok(Some(observed)),
            Settled::NeedsDryRun(live) => self.dry_run(id, &t, &api, live).await,
        }
    }

    /// Observes a live object through a server-side dry-run of the desired one: what the
    /// object would become, with defaults, admission and other managers' fields.
    pub(crate) async fn dry_run(
        &self,
        id: &ResourceId,
        t: &Target,
        api: &Api<DynamicObject>,
        live: Live,
    ) -> Result<Option<Observed>, ProviderError> {
        let shape = live.shape(t).clone();
        let Live {
            object: live,
            managed_fields,
            ..
        } = live;
        let params = ssa_params(true, true);
        match api
            .patch(&t.reference.name, &params, &Patch::Apply(&t.object))
            .await
        {
            Ok(dry) => {
                let mut dry = serde_json::to_value(dry).map_err(|e| {
                    ProviderError::permanent(id, "unreadable object").with_source(e)
                })?;
                fields::clean(&mut dry);
                fields::digest_secret_data(&mut dry);
                Ok(Some(Observed {
                    id: id.clone(),
                    state: fields::project(&dry, &shape),
                    private: crate::seen::Seen::DryRun {
                        live,
                        dry_run: dry,
                        managed_fields,
                    }
                    .into_private(),
                }))
            }
            Err(kube::Error::Api(status)) if error::is_immutable(&status) => Ok(Some(Observed {
                id: id.clone(),
                state: fields::project(&live, &shape),
                private: crate::seen::Seen::Replace {
                    live,
                    managed_fields,
                    replace: error::invalid_fields(&status),
                    reason: status.message,
                }
                .into_private(),
            })),
            // A CRD upgrade that drops a version objects are still stored in would strand them.
            Err(kube::Error::Api(status))
                if t.reference.kind == "CustomResourceDefinition"
                    && status.message.contains("storedVersions") =>
            {
                Err(ProviderError::permanent(
                    id,
                    format!(
                        "refusing to upgrade CRD {}: the new version list drops a version objects are still stored in \
                         (status.storedVersions); migrate them to a served version first (e.g. kube-storage-version-migrator), \
                         then drop it. The server said: {}",
                        t.reference.name, status.message
                    ),
                ))
            }
            Err(e) => Err(error::map(&self.cx(id, t, "dry-run apply"), e)),
        }
    }

    pub(crate) async fn observe_indexed(
        &self,
        i: usize,
        req: &ObserveRequest<'_>,
        target: Result<Target, ProviderError>,
        known: Known,
        missing_namespaces: Arc<HashSet<(String, String)>>,
    ) -> (usize, Result<Option<Observed>, ProviderError>) {
        let observed = match target {
            Ok(t) => self.observe_one(req, t, known, &missing_namespaces).await,
            Err(e) => Err(e),
        };
        (i, observed)
    }

    /// `Some((cluster, namespace))` when the namespace provably does not
    /// exist; `None` when it does or cannot be told (the caller dry-runs).
    pub(crate) async fn namespace_missing(
        &self,
        cluster: String,
        namespace: String,
        id: &ResourceId,
    ) -> Option<(String, String)> {
        let client = self.client(id, &cluster).await.ok()?;
        let api: Api<DynamicObject> = Api::all_with(
            client,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Namespace")),
        );
        match api.get_opt(&namespace).await {
            Ok(None) => Some((cluster, namespace)),
            _ => None,
        }
    }

    /// One LIST of the group `t` belongs to, or `None` when it cannot be listed (kind not
    /// served yet, LIST forbidden, any error): those objects are then read one by one, which
    /// reports errors per object as before. Items are decoded straight into JSON values.
    pub(crate) async fn list_group(
        &self,
        key: ListKey,
        id: &ResourceId,
        t: &Target,
    ) -> (ListKey, Option<Listed>) {
        let listed = async {
            let api = self.api(id, t).await.ok()??;
            let mut out = Listed::new();
            for v in self.list_items(api, &ListParams::default(), t).await? {
                let name = v
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)?
                    .to_string();
                out.insert(name, v);
            }
            Some(out)
        }
        .await;
        (key, listed)
    }

    /// The items of one LIST through `api`, each given back the apiVersion and kind LIST
    /// items lack (GET answers always carry them); `None` on any error. The request runs on
    /// its own task: large answers of several kinds are then decoded on several cores.
    pub(crate) async fn list_items(
        &self,
        api: Api<DynamicObject>,
        params: &ListParams,
        t: &Target,
    ) -> Option<Vec<Value>> {
        let request = kube::core::Request::new(api.resource_url())
            .list(params)
            .ok()?;
        let _permit = self.limit(&t.spec.cluster).acquire_owned().await;
        let client = api.into_client();
        let list: RawList = tokio::spawn(async move { client.request(request).await })
            .await
            .ok()?
            .ok()?;
        let mut items = list.items;
        for v in &mut items {
            v["apiVersion"] = json!(t.reference.api_version);
            v["kind"] = json!(t.reference.kind);
        }
        Some(items)
    }

    /// One LIST of every object of `t`'s kind in all namespaces that carries the
    /// [`MANAGED_BY_LABEL`] value of `key`, or `None` when that cannot be done (kind not
    /// served, cluster-wide LIST forbidden to this identity, any error): the objects are then
    /// read one by one.
    pub(crate) async fn list_labelled(
        &self,
        key: LabelledKey,
        id: &ResourceId,
        t: &Target,
    ) -> (LabelledKey, Option<LabelledListed>) {
        let listed = async {
            // Discovery (cached) tells the resource; the scope check is api()'s.
            self.api(id, t).await.ok()??;
            let kind = (
                t.spec.cluster.clone(),
                t.reference.api_version.clone(),
                t.reference.kind.clone(),
            );
            let (resource, _) = self
                .kinds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&kind)
                .cloned()?;
            let client = self.client(id, &t.spec.cluster).await.ok()?;
            let api: Api<DynamicObject> = Api::all_with(client, &resource);
            let selector = format!("{MANAGED_BY_LABEL}={}", key.3);
            let params = ListParams::default().labels(&selector);
            let mut out = LabelledListed::new();
            for v in self.list_items(api, &params, t).await? {
                let name = v
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)?
                    .to_string();
                let namespace = v
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                out.insert((namespace, name), v);
            }
            Some(out)
        }
        .await;
        (key, listed)
    }

    /// Where the GPU Operator's driver rollout stands on the ClusterPolicy's cluster: the
    /// nodes carrying its upgrade-state label (see [`health::driver_rollout`]).
    pub(crate) async fn driver_rollout(
        &self,
        id: &ResourceId,
        t: &Target,
    ) -> Result<Health, ProviderError> {
        let client = self.client(id, &t.spec.cluster).await?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
        let list = nodes
            .list_metadata(&ListParams::default().labels(health::DRIVER_UPGRADE_STATE))
            .await
            .map_err(|e| error::map(&self.cx(id, t, "list nodes"), e))?;
        let states: Vec<(String, String)> = list
            .items
            .into_iter()
            .filter_map(|n| {
                let state = n.metadata.labels?.remove(health::DRIVER_UPGRADE_STATE)?;
                Some((n.metadata.name?, state))
            })
            .collect();
        Ok(health::driver_rollout(&states))
    }

    pub(crate) fn not_found(&self, id: &ResourceId, t: &Target) -> ProviderError {
        ProviderError::permanent(
            id,
            format!(
                "{} {} not found in cluster {} (adopted objects are never created by fleetform)",
                t.reference.kind.to_lowercase(),
                t.reference.name,
                t.spec.cluster
            ),
        )
    }
}
