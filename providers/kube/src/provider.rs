//! The `Provider` impl: the engine's calls (observe in batches, diff, apply, health and the
//! capabilities) routed to the stages in `observe`, `apply`, `fields` and `health`.

use super::*;

#[async_trait]
impl Provider for KubeProvider {
    fn name(&self) -> &'static str {
        "kube"
    }

    /// Large batches: objects of one kind in one namespace are read with one
    /// LIST per batch, so small batches would read the same list many times.
    fn observe_batch(&self) -> Option<usize> {
        Some(OBSERVE_BATCH)
    }

    async fn observe(
        &self,
        requests: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>> {
        let clusters = self.clusters.len().max(1);
        let targets: Vec<Result<Target, ProviderError>> =
            requests.iter().map(|r| self.target(r.id, r.spec)).collect();
        // Large groups of one kind in one namespace are read with one LIST each.
        let keys: Vec<Option<ListKey>> = targets
            .iter()
            .map(|t| t.as_ref().ok().map(Target::list_key))
            .collect();
        let mut sizes: HashMap<&ListKey, (usize, usize)> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(k) = k {
                sizes.entry(k).or_insert((0, i)).0 += 1;
            }
        }
        let lists: Vec<_> = sizes
            .into_iter()
            .filter(|(_, (n, _))| *n >= LIST_THRESHOLD)
            .filter_map(|(k, (_, first))| {
                let t = targets[first].as_ref().ok()?;
                Some(self.list_group(k.clone(), requests[first].id, t))
            })
            .collect();
        let mut lists: HashMap<ListKey, Listed> = futures::stream::iter(lists)
            .buffer_unordered(self.concurrency * clusters)
            .filter_map(|(k, l)| async move { l.map(|l| (k, l)) })
            .collect()
            .await;
        // The rest, where two or more of a kind carry the same managed-by label: one
        // cluster-wide LIST with that label selector per kind.
        let labelled: Vec<Option<LabelledKey>> = keys
            .iter()
            .zip(&targets)
            .map(|(k, t)| match (k, t) {
                (Some(k), Ok(t)) if !lists.contains_key(k) => t.labelled_key(),
                _ => None,
            })
            .collect();
        let mut labelled_sizes: HashMap<&LabelledKey, (usize, usize)> = HashMap::new();
        for (i, k) in labelled.iter().enumerate() {
            if let Some(k) = k {
                labelled_sizes.entry(k).or_insert((0, i)).0 += 1;
            }
        }
        let labelled_lists: Vec<_> = labelled_sizes
            .into_iter()
            .filter(|(_, (n, _))| *n >= 2)
            .filter_map(|(k, (_, first))| {
                let t = targets[first].as_ref().ok()?;
                Some(self.list_labelled(k.clone(), requests[first].id, t))
            })
            .collect();
        let mut labelled_lists: HashMap<LabelledKey, LabelledListed> =
            futures::stream::iter(labelled_lists)
                .buffer_unordered(self.concurrency * clusters)
                .filter_map(|(k, l)| async move { l.map(|l| (k, l)) })
                .collect()
                .await;
        // Namespaces that do not exist yet (they are created by this plan):
        // objects in them are not dry-run, the server could only answer 404.
        let mut namespaces: Vec<(String, String, &ResourceId)> = keys
            .iter()
            .zip(requests)
            .filter(|(_, r)| r.desired)
            .filter_map(|(k, r)| {
                let (cluster, _, _, ns) = k.as_ref()?;
                Some((cluster.clone(), ns.clone()?, r.id))
            })
            .collect();
        // A namespace a LIST found objects in exists: no need to ask.
        let populated: HashSet<(&str, &str)> = lists
            .iter()
            .filter(|(_, objects)| !objects.is_empty())
            .filter_map(|((cluster, _, _, ns), _)| Some((cluster.as_str(), ns.as_deref()?)))
            .chain(labelled_lists.iter().flat_map(|((cluster, ..), objects)| {
                objects
                    .keys()
                    .filter_map(move |(ns, _)| Some((cluster.as_str(), ns.as_deref()?)))
            }))
            .collect();
        namespaces.retain(|(cluster, ns, _)| !populated.contains(&(cluster.as_str(), ns.as_str())));
        namespaces.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        namespaces.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let checks: Vec<_> = namespaces
            .into_iter()
            .map(|(cluster, ns, id)| self.namespace_missing(cluster, ns, id))
            .collect();
        let missing: Arc<HashSet<(String, String)>> = Arc::new(
            futures::stream::iter(checks)
                .buffer_unordered(self.concurrency * clusters)
                .filter_map(|m| async move { m })
                .collect()
                .await,
        );
        // Each listed object goes to the one request for it, moved rather than copied, and is
        // settled at once where it can be; the rest reads, dry-runs or reports errors.
        let mut quick: Vec<ListedObject<'_>> = Vec::new();
        let mut slow: Vec<(usize, Result<Target, ProviderError>, Known)> = Vec::new();
        for (i, (r, target)) in requests.iter().zip(targets).enumerate() {
            let listed = match (&keys[i], &labelled[i], &target) {
                (Some(k), _, Ok(t)) if lists.contains_key(k) => {
                    lists.get_mut(k).map(|l| l.remove(&t.reference.name))
                }
                // Found by the labelled LIST, or else read with a GET (it may exist unlabelled).
                (_, Some(k), Ok(t)) => labelled_lists
                    .get_mut(k)
                    .and_then(|l| {
                        l.remove(&(t.reference.namespace.clone(), t.reference.name.clone()))
                    })
                    .map(Some),
                _ => None,
            };
            match (target, listed) {
                (Ok(t), Some(Some(live))) => quick.push((i, r, t, live)),
                (target, Some(None)) => slow.push((i, target, Known::Listed(None))),
                (target, _) => slow.push((i, target, Known::Unread)),
            }
        }
        let mut results: Vec<(usize, Result<Option<Observed>, ProviderError>)> = Vec::new();
        for (i, t, settled) in settle_all(quick) {
            match settled {
                Settled::Done(observed) => results.push((i, Ok(Some(observed)))),
                Settled::NeedsDryRun(live) => slow.push((i, Ok(t), Known::Compared(live))),
            }
        }
        // Futures built up front: a closure inside the stream trips the async-trait lifetimes.
        let futures: Vec<_> = slow
            .into_iter()
            .map(|(i, target, known)| {
                self.observe_indexed(i, &requests[i], target, known, missing.clone())
            })
            .collect();
        results.extend(
            futures::stream::iter(futures)
                .buffer_unordered(self.concurrency * clusters)
                .collect::<Vec<_>>()
                .await,
        );
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    fn diff(
        &self,
        desired: &Desired,
        observed: Option<&Observed>,
    ) -> Result<Change, ProviderError> {
        let id = &desired.id;
        // Observe proved the live object is what fleetform last applied (and had resolved
        // the spec to get there).
        let seen = observed.map(crate::seen::Seen::of).transpose()?.flatten();
        if seen == Some(crate::seen::Seen::Unchanged) {
            return Ok(Change::new(id.clone(), Action::NoOp));
        }
        let t = self.target(id, &desired.spec)?;
        if observed.is_none() {
            return Ok(Change::new(id.clone(), Action::Create));
        }
        let (live, managed_fields) = seen
            .as_ref()
            .map(crate::seen::Seen::live)
            .unwrap_or((Value::Null, Value::Null));
        let mut shape = t.object.clone();
        fields::digest_secret_data(&mut shape);

        let mut diffs = Vec::new();
        let mut requires_replace = Vec::new();
        let mut action = Action::Update;
        match seen {
            Some(crate::seen::Seen::DryRun { dry_run: dry, .. }) => {
                let mut all = Vec::new();
                fields::differences(Some(&live), Some(&dry), "", &mut all);
                diffs = all
                    .into_iter()
                    .filter(|(p, _, _)| {
                        fields::covered(&shape, &dry, p)
                            || fields::owners(&live, &managed_fields, p)
                                .iter()
                                .any(|m| m == FIELD_MANAGER)
                    })
                    .collect();
            }
            Some(crate::seen::Seen::Replace { replace, .. }) => {
                // A hook Helm recreates anyway: an update that deletes and creates (apply).
                action = if t.spec.recreate {
                    Action::Update
                } else {
                    Action::Replace
                };
                requires_replace = replace;
                fields::differences(
                    Some(&fields::project(&live, &shape)),
                    Some(&shape),
                    "",
                    &mut diffs,
                );
                if requires_replace.is_empty() {
                    requires_replace = diffs.iter().map(|d| d.0.clone()).collect();
                }
            }
            _ => fields::differences(
                Some(&fields::project(&live, &shape)),
                Some(&shape),
                "",
                &mut diffs,
            ),
        }
        let secret = fields::is_secret(&shape);
        let sensitive: Vec<&str> = desired
            .sensitive
            .iter()
            .filter_map(|p| p.strip_prefix("/object"))
            .collect();
        let changes: Vec<FieldChange> = diffs
            .into_iter()
            .map(|(path, before, after)| {
                let hidden =
                    (secret && under(&path, "/data")) || sensitive.iter().any(|s| under(&path, s));
                let others: Vec<String> = fields::owners(&live, &managed_fields, &path)
                    .into_iter()
                    .filter(|m| m != FIELD_MANAGER)
                    .collect();
                let mask = |v: Option<Value>| v.map(|_| Value::String(MASK.to_string()));
                FieldChange {
                    before: if hidden { mask(before) } else { before },
                    after: if hidden { mask(after) } else { after },
                    sensitive: hidden,
                    changed_by: (!others.is_empty()).then(|| others.join(", ")),
                    path,
                }
            })
            .collect();
        if changes.is_empty() && action != Action::Replace {
            action = Action::NoOp;
        }
        Ok(Change {
            id: id.clone(),
            disruption: disruption::classify(
                &t.reference.api_version,
                &t.reference.kind,
                action,
                &changes,
            ),
            action,
            fields: changes,
            requires_replace,
        })
    }

    async fn apply(
        &self,
        request: &ApplyRequest<'_>,
        cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        let id = &request.change.id;
        match tokio::time::timeout(cx.timeout, self.apply_inner(request, cx)).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::transient(
                id,
                format!(
                    "{:?} did not finish within {} s",
                    request.change.action,
                    cx.timeout.as_secs()
                ),
            )),
        }
    }

    fn maintenance(&self) -> Option<&dyn NodeMaintenance> {
        Some(self)
    }

    /// Deleting a workload stops its pods (see `disruption::of_delete`).
    fn delete_disruption(&self, id: &ResourceId) -> Disruption {
        disruption::of_delete(id)
    }

    /// A heal takes drifted fields back from whichever field manager changed
    /// them: the server-side apply is forced.
    fn prepare_heal(&self, spec: &mut Value) {
        spec["force"] = Value::Bool(true);
    }

    /// The cluster of the object (a tenant's name, or `mgmt`).
    fn tenant<'a>(&self, id: &'a ResourceId) -> Option<&'a str> {
        fleetform_contract::address::kube_cluster(id)
    }

    async fn health(&self, id: &ResourceId, spec: &Value) -> Result<Health, ProviderError> {
        let t = self.target(id, spec)?;
        // The engine asks after a successful apply: a kind without a readiness rule is Ready
        // then, and reading it back would only double the requests of a large apply.
        if !t.spec.wait || !health::has_rule(&t.reference.api_version, &t.reference.kind) {
            return Ok(Health::Ready);
        }
        let Some(api) = self.api(id, &t).await? else {
            return Ok(Health::Progressing(format!(
                "cluster {} does not serve {} yet",
                t.spec.cluster, t.reference.kind
            )));
        };
        match self.get(id, &t, &api).await? {
            Some(live) => match health::of(&live) {
                Health::Ready
                    if t.reference.kind == "ClusterPolicy"
                        && t.reference.group() == "nvidia.com" =>
                {
                    self.driver_rollout(id, &t).await
                }
                h => Ok(h),
            },
            None => Ok(Health::Progressing(format!(
                "{} does not exist yet",
                t.reference.describe()
            ))),
        }
    }
}
