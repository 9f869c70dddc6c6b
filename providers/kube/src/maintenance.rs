//! `NodeMaintenance`: cordon and drain of Nodes around disruptive changes, and which Nodes
//! are down now (for rollout budgets).

use super::*;

/// Nodes of the fleet's clusters: cordon and drain around disruptive changes.
#[async_trait]
impl NodeMaintenance for KubeProvider {
    /// Cordons a Node with server-side apply under its own field manager
    /// ([`MAINTENANCE_FIELD_MANAGER`]); releasing applies an empty object under
    /// that manager, which drops only its own claim: a Node also cordoned by a
    /// person, `kubectl cordon` or break/fix stays cordoned.
    async fn cordon(
        &self,
        node: &ResourceId,
        reason: Option<&str>,
    ) -> Result<Cordon, ProviderError> {
        let (cluster, name) = node_of(node)?;
        let mut object = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
        if let Some(reason) = reason {
            object["metadata"]["annotations"] = json!({ MAINTENANCE_ANNOTATION: reason });
            object["spec"] = json!({ "unschedulable": true });
        }
        let t = Target {
            spec: KubeSpec {
                cluster: cluster.clone(),
                object: object.clone(),
                force: false,
                adopt: true,
                wait: true,
                recreate: false,
            },
            reference: ObjectRef::of(&object).map_err(|e| ProviderError::permanent(node, e))?,
            object,
        };
        let client = self.client(node, &cluster).await?;
        let api: Api<DynamicObject> = Api::all_with(
            client,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Node")),
        );
        let verb = "patch";
        match api.get_opt(&name).await {
            Ok(None) => return Ok(Cordon::NoSuchNode),
            Ok(Some(_)) => {}
            Err(e) => return Err(error::map(&self.cx(node, &t, "get"), e)),
        }
        // Force: the manager only ever writes these two fields of a Node it
        // was asked to take out of service.
        let params = PatchParams::apply(MAINTENANCE_FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&t.object))
            .await
            .map_err(|e| error::map(&self.cx(node, &t, verb), e))?;
        Ok(Cordon::Done)
    }

    /// Evicts the node's pods as `kubectl drain` does (see the `drain` module) and waits for
    /// them, at most `timeout`; what remains at the deadline is named in the error.
    async fn drain(&self, node: &ResourceId, timeout: Duration) -> Result<(), ProviderError> {
        let (cluster, name) = node_of(node)?;
        let client = self.client(node, &cluster).await?;
        drain::drain(&client, &name, timeout)
            .await
            .map_err(|e| ProviderError::permanent(node, e))
    }

    /// Lists the Nodes of each cluster once (a budget re-reads them while an apply waits, so
    /// one LIST per cluster, not a GET per node) and says whether each serves: cordoned,
    /// NotReady or claimed for maintenance is down (see `disruption::availability`).
    async fn availability(
        &self,
        nodes: &[ResourceId],
    ) -> Vec<Result<NodeAvailability, ProviderError>> {
        let mut live: HashMap<String, Result<HashMap<String, Value>, String>> = HashMap::new();
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let (cluster, name) = match node_of(node) {
                Ok(x) => x,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            if !live.contains_key(&cluster) {
                let listed = self.list_nodes(node, &cluster).await;
                live.insert(cluster.clone(), listed);
            }
            out.push(match &live[&cluster] {
                Ok(by_name) => Ok(by_name
                    .get(&name)
                    .map_or_else(NodeAvailability::default, |n| {
                        disruption::availability(n, MAINTENANCE_ANNOTATION)
                    })),
                Err(e) => Err(ProviderError::transient(node, e.clone())),
            });
        }
        out
    }
}

impl KubeProvider {
    /// Every Node of `cluster` by name, or why they could not be read.
    pub(crate) async fn list_nodes(
        &self,
        node: &ResourceId,
        cluster: &str,
    ) -> Result<HashMap<String, Value>, String> {
        let client = self
            .client(node, cluster)
            .await
            .map_err(|e| e.message.clone())?;
        let api: Api<DynamicObject> = Api::all_with(
            client,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Node")),
        );
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list Nodes in cluster {cluster}: {e}"))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| {
                let name = o.metadata.name.clone()?;
                Some((name, serde_json::to_value(&o).ok()?))
            })
            .collect())
    }
}
