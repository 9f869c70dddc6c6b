//! The [`Provider`] impl: observe (one paged list per kind per call), field-level diff,
//! apply (create-or-adopt by name, PATCH, DELETE polled to completion) and health.
//!
//! The shapes it compares and sends (ownership, projections, request bodies) are in [`shape`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fleetform_contract::provider::{
    Action, Applied, ApplyContext, ApplyRequest, Change, Disruption, FieldChange, Health,
    ObserveRequest, Observed, Provider, ProviderError,
};
use fleetform_contract::resource::{Desired, ResourceId};
use fleetform_contract::secret::SecretResolver;
use reqwest::Method;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::client::{ApiError, BURST, NicoClient, RATE_PER_SECOND, RateLimiter, http_client};
use crate::kinds::{Kind, MAX_LABELS, OWNER_LABEL, Owner, kind};
use crate::spec::{NicoSpec, PROVIDER};

mod shape;
use shape::*;

/// The lists one observe call read, by (endpoint, org, kind); an error is kept as its message.
type Lists = BTreeMap<(String, String, String), Result<Arc<Vec<Value>>, String>>;

/// How long one observe call may take.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a deleting object is polled.
const POLL: Duration = Duration::from_millis(250);

/// What observe keeps in `Observed.private` for apply: the object's NICo id (so apply
/// addresses it without a list) and its status.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Seen {
    id: Option<String>,
    #[serde(default)]
    status: Option<Value>,
}

impl Seen {
    fn into_private(self) -> Option<Value> {
        serde_json::to_value(self).ok()
    }
}

/// The nico provider.
pub struct NicoProvider {
    secrets: Arc<dyn SecretResolver>,
    http: reqwest::Client,
    /// One rate limiter per site (endpoint + site name), shared by every call.
    limiters: Mutex<HashMap<(String, String), Arc<RateLimiter>>>,
    /// NICo ids of the objects seen, so health reads one object instead of a list.
    ids: Mutex<HashMap<ResourceId, String>>,
    poll: Duration,
}

impl NicoProvider {
    /// A provider reading tokens through `secrets`.
    pub fn new(secrets: Arc<dyn SecretResolver>) -> Self {
        Self {
            secrets,
            http: http_client(),
            limiters: Mutex::new(HashMap::new()),
            ids: Mutex::new(HashMap::new()),
            poll: POLL,
        }
    }

    fn client(&self, id: &ResourceId, spec: &NicoSpec) -> Result<NicoClient, ProviderError> {
        let token = self.secrets.resolve(&spec.token).map_err(|e| {
            ProviderError::permanent(id, "cannot read the NICo token").with_source(e)
        })?;
        let limiter = self
            .limiters
            .lock()
            .map_err(|_| ProviderError::permanent(id, "rate limiter poisoned"))?
            .entry((spec.endpoint.clone(), spec.site.clone()))
            .or_insert_with(|| Arc::new(RateLimiter::new(RATE_PER_SECOND, BURST)))
            .clone();
        Ok(NicoClient::new(
            self.http.clone(),
            &spec.endpoint,
            &spec.org,
            token,
            limiter,
        ))
    }

    fn remember(&self, id: &ResourceId, nico_id: Option<&str>) {
        if let Ok(mut ids) = self.ids.lock() {
            match nico_id {
                Some(n) => ids.insert(id.clone(), n.to_string()),
                None => ids.remove(id),
            };
        }
    }
}

/// Parses and checks a spec: a known kind and labels within NICo's limit.
pub fn parse_spec(
    id: &ResourceId,
    spec: &Value,
) -> Result<(NicoSpec, &'static Kind), ProviderError> {
    let s: NicoSpec = serde_json::from_value(spec.clone())
        .map_err(|e| ProviderError::permanent(id, format!("not a nico spec: {e}")))?;
    let k = kind(&s.kind).ok_or_else(|| {
        ProviderError::permanent(
            id,
            format!(
                "unknown nico kind `{}` (known: {})",
                s.kind,
                crate::kinds::KINDS
                    .iter()
                    .map(|k| k.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    if let Some(Value::Object(l)) = s.fields.get("labels") {
        if k.owner == Owner::Label && l.len() >= MAX_LABELS {
            return Err(ProviderError::permanent(
                id,
                format!(
                    "labels: {} entries; NICo allows {MAX_LABELS} and fleetform's ownership label `{OWNER_LABEL}` takes one, so at most {}",
                    l.len(),
                    MAX_LABELS - 1
                ),
            ));
        }
        if l.contains_key(OWNER_LABEL) {
            return Err(ProviderError::permanent(
                id,
                format!("labels: `{OWNER_LABEL}` is fleetform's ownership label and set by it"),
            ));
        }
    }
    Ok((s, k))
}

fn api_err(id: &ResourceId, spec: &NicoSpec, e: ApiError) -> ProviderError {
    let retry = e.retry_after();
    let message = match e.status() {
        Some(401) => format!(
            "NICo rejected the token from {} (expired or not valid): renew it",
            spec.token
        ),
        Some(403) => format!(
            "the token's role may not do this ({e}); instance types, allocations and machines need PROVIDER_ADMIN, tenant objects TENANT_ADMIN"
        ),
        Some(400) => match &e {
            ApiError::Status { message, data, .. } => {
                format!("NICo refused the request: {message} {data}")
            }
            _ => e.to_string(),
        },
        _ => e.to_string(),
    };
    let out = if e.is_transient() {
        ProviderError::transient(id, message)
    } else {
        ProviderError::permanent(id, message)
    };
    let out = out.with_source(e);
    match retry {
        Some(r) => out.with_retry_after(r),
        None => out,
    }
}

impl NicoProvider {
    async fn find(
        &self,
        id: &ResourceId,
        spec: &NicoSpec,
        k: &Kind,
        client: &NicoClient,
        deadline: Instant,
        narrow: bool,
    ) -> Result<Option<Value>, ProviderError> {
        // One object's lookup asks NICo to narrow the list by `query` (a superset of the
        // name's matches); a full list is the fallback after a 409 the narrow one missed.
        let all = client
            .search(k.collection, narrow.then_some(spec.name.as_str()), deadline)
            .await
            .map_err(|e| api_err(id, spec, e))?;
        let found = by_name(&all, spec);
        match found.as_slice() {
            [] => Ok(None),
            [o] if owned(k, o, spec) => Ok(Some((*o).clone())),
            [o] => Err(conflict(id, k, o, spec)),
            _ => Err(ProviderError::permanent(
                id,
                format!(
                    "NICo has {} {} objects named `{}`; names should be unique per tenant and site",
                    found.len(),
                    k.name,
                    spec.name
                ),
            )),
        }
    }

    async fn create_or_adopt(
        &self,
        id: &ResourceId,
        spec: &NicoSpec,
        k: &Kind,
        client: &NicoClient,
        deadline: Instant,
    ) -> Result<(), ProviderError> {
        let mut attempts = 0;
        let mut narrow = true;
        loop {
            attempts += 1;
            // NICo has no idempotency key: look for the name first, so a create whose
            // answer was lost (or a 409) adopts the object instead of making a second one.
            if let Some(obj) = self.find(id, spec, k, client, deadline, narrow).await? {
                let oid = obj
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                self.remember(id, Some(&oid));
                let live =
                    observed_state(k, spec, &obj, &self.names(spec, client, deadline).await?);
                let changes = field_changes(&desired_state(spec), &live);
                if !changes.is_empty() {
                    self.patch(id, spec, k, client, &oid, &changes, deadline)
                        .await?;
                }
                return Ok(());
            }
            if k.owner == Owner::Site {
                return Err(ProviderError::permanent(
                    id,
                    format!(
                        "NICo has no {} `{}`; fleetform changes NICo's {}s but never creates them",
                        k.name, spec.name, k.name
                    ),
                ));
            }
            let b = body(id, spec, k, client, deadline).await?;
            match client
                .request(Method::POST, k.collection, &[], Some(&b), deadline)
                .await
            {
                Ok(a) => {
                    self.remember(id, a.body.get("id").and_then(Value::as_str));
                    return Ok(());
                }
                Err(e)
                    if attempts < 4
                        && Instant::now() < deadline
                        && (e.status() == Some(409) || e.is_transient()) =>
                {
                    tracing::debug!(%id, "nico: create answered {e}; looking the name up again");
                    narrow = e.status() != Some(409);
                    tokio::time::sleep(e.retry_after().unwrap_or(self.poll)).await;
                }
                Err(e) => return Err(api_err(id, spec, e)),
            }
        }
    }

    /// id → name of every kind a spec refers to.
    async fn names(
        &self,
        spec: &NicoSpec,
        client: &NicoClient,
        deadline: Instant,
    ) -> Result<HashMap<String, HashMap<String, String>>, ProviderError> {
        let id = crate::spec::nico_id(&spec.site, &spec.kind, &spec.name);
        let mut out = HashMap::new();
        for r in spec.refs.values() {
            if out.contains_key(&r.kind) {
                continue;
            }
            let Some(rk) = kind(&r.kind) else { continue };
            let l = client
                .list(rk.collection, deadline)
                .await
                .map_err(|e| api_err(&id, spec, e))?;
            out.insert(r.kind.clone(), id_names(&l));
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        id: &ResourceId,
        spec: &NicoSpec,
        k: &Kind,
        client: &NicoClient,
        oid: &str,
        changes: &[FieldChange],
        deadline: Instant,
    ) -> Result<(), ProviderError> {
        let full = body(id, spec, k, client, deadline).await?;
        let mut patch = Map::new();
        for c in changes {
            let top = top_segment(&c.path);
            if let Some(v) = full.get(&top) {
                patch.insert(top, v.clone());
            }
        }
        if patch.is_empty() {
            return Ok(());
        }
        if k.owner == Owner::Site {
            // Instance type, maintenance mode and labels go in separate requests.
            for (key, v) in patch {
                let one = match key.as_str() {
                    "maintenance" => {
                        let mut m = json!({"setMaintenanceMode": v.get("enabled").cloned().unwrap_or(json!(false))});
                        if let Some(msg) = v.get("message").filter(|m| !m.is_null()) {
                            m["maintenanceMessage"] = msg.clone();
                        }
                        m
                    }
                    "instanceTypeId" if v.is_null() => json!({"clearInstanceType": true}),
                    _ => json!({ key: v }),
                };
                client
                    .request(
                        Method::PATCH,
                        &format!("{}/{oid}", k.collection),
                        &[],
                        Some(&one),
                        deadline,
                    )
                    .await
                    .map_err(|e| api_err(id, spec, e))?;
            }
            return Ok(());
        }
        client
            .request(
                Method::PATCH,
                &format!("{}/{oid}", k.collection),
                &[],
                Some(&Value::Object(patch)),
                deadline,
            )
            .await
            .map_err(|e| api_err(id, spec, e))?;
        Ok(())
    }

    async fn delete(
        &self,
        id: &ResourceId,
        spec: &NicoSpec,
        k: &Kind,
        client: &NicoClient,
        known: Option<String>,
        deadline: Instant,
    ) -> Result<(), ProviderError> {
        if k.owner == Owner::Site {
            // NICo's machines outlive fleetform's interest in them: nothing to delete.
            return Ok(());
        }
        let oid = match known {
            Some(o) => o,
            None => match self.find(id, spec, k, client, deadline, true).await? {
                Some(o) => o
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                None => return Ok(()),
            },
        };
        let path = format!("{}/{oid}", k.collection);
        match client
            .request(Method::DELETE, &path, &[], None, deadline)
            .await
        {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(api_err(id, spec, e)),
        }
        // DELETE answers 202: the object is gone when a GET says 404.
        loop {
            match client
                .request(Method::GET, &path, &[], None, deadline)
                .await
            {
                Err(e) if e.status() == Some(404) => {
                    self.remember(id, None);
                    return Ok(());
                }
                Err(e) => return Err(api_err(id, spec, e)),
                Ok(a) if a.body.get("status").and_then(Value::as_str) == Some("Error") => {
                    return Err(ProviderError::permanent(
                        id,
                        format!("deleting failed: {}", history(&a.body)),
                    ));
                }
                Ok(_) => {}
            }
            if Instant::now() + self.poll > deadline {
                return Err(ProviderError::transient(
                    id,
                    format!("still deleting {path} when the call's time ran out"),
                ));
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

fn id_names(objects: &[Value]) -> HashMap<String, String> {
    objects
        .iter()
        .filter_map(|o| {
            Some((
                o.get("id")?.as_str()?.to_string(),
                o.get("name")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The status history, oldest first, as one line.
fn history(obj: &Value) -> String {
    let mut h: Vec<String> = obj
        .get("statusHistory")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.get("status").and_then(Value::as_str).unwrap_or("?"),
                        s.get("message").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if h.is_empty() {
        h.push(format!(
            "status {}",
            obj.get("status").and_then(Value::as_str).unwrap_or("?")
        ));
    }
    h.join("; ")
}

#[async_trait]
impl Provider for NicoProvider {
    /// Releasing an instance wipes its host and reboots it out of the tenant's hands.
    fn delete_disruption(&self, id: &ResourceId) -> Disruption {
        if id.path().split('/').nth(1) == Some("instance") {
            Disruption::HostReboot
        } else {
            Disruption::None
        }
    }

    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn observe_batch(&self) -> Option<usize> {
        // Each kind is listed once per call: take the whole plan in one call.
        Some(100_000)
    }

    async fn observe(
        &self,
        requests: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>> {
        let deadline = Instant::now() + OBSERVE_TIMEOUT;
        // (endpoint, org, kind) → the paged list, read once per call.
        let mut lists: Lists = BTreeMap::new();
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(self.observe_one(r, &mut lists, deadline).await);
        }
        out
    }

    fn diff(
        &self,
        desired: &Desired,
        observed: Option<&Observed>,
    ) -> Result<Change, ProviderError> {
        let (spec, k) = parse_spec(&desired.id, &desired.spec)?;
        let Some(obs) = observed else {
            return Ok(Change::new(desired.id.clone(), Action::Create));
        };
        let fields = field_changes(&desired_state(&spec), &obs.state);
        let mut requires_replace: Vec<String> = fields
            .iter()
            .filter(|f| k.requires_replace(&top_segment(&f.path)))
            .map(|f| f.path.clone())
            .collect();
        requires_replace.dedup();
        let action = if fields.is_empty() {
            Action::NoOp
        } else if requires_replace.is_empty() {
            Action::Update
        } else {
            Action::Replace
        };
        Ok(Change {
            id: desired.id.clone(),
            action,
            // A new OS, iPXE script or interfaces reprovision the host, and so does a new
            // instance in its place: the host reboots into the new image.
            disruption: if k.name == "instance"
                && (action == Action::Replace
                    || fields.iter().any(|f| {
                        matches!(
                            top_segment(&f.path).as_str(),
                            "operatingSystemId" | "ipxeScript" | "userData" | "interfaces"
                        )
                    })) {
                Disruption::HostReboot
            } else {
                Disruption::None
            },
            fields,
            requires_replace,
        })
    }

    async fn apply(
        &self,
        request: &ApplyRequest<'_>,
        cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        let id = &request.change.id;
        let raw = request
            .desired
            .map(|d| &d.spec)
            .or(request.last_applied)
            .ok_or_else(|| ProviderError::permanent(id, "nothing to apply: no spec"))?;
        let (spec, k) = parse_spec(id, raw)?;
        let client = self.client(id, &spec)?;
        let deadline = Instant::now() + cx.timeout;
        let known = request
            .observed
            .and_then(|o| o.private.clone())
            .and_then(|p| serde_json::from_value::<Seen>(p).ok())
            .and_then(|seen| seen.id);
        if cx.dry_run {
            if request.change.action != Action::Delete {
                body(id, &spec, k, &client, deadline).await?;
            }
            return Ok(Applied {
                id: id.clone(),
                spec: raw.clone(),
            });
        }
        match request.change.action {
            Action::NoOp => {}
            Action::Create => {
                self.create_or_adopt(id, &spec, k, &client, deadline)
                    .await?
            }
            Action::Update => {
                let oid = match known {
                    Some(o) => o,
                    None => {
                        // No observation: create-or-adopt also patches what differs.
                        self.create_or_adopt(id, &spec, k, &client, deadline)
                            .await?;
                        return Ok(Applied {
                            id: id.clone(),
                            spec: raw.clone(),
                        });
                    }
                };
                self.patch(
                    id,
                    &spec,
                    k,
                    &client,
                    &oid,
                    &request.change.fields,
                    deadline,
                )
                .await?;
            }
            Action::Replace => {
                self.delete(id, &spec, k, &client, known, deadline).await?;
                self.create_or_adopt(id, &spec, k, &client, deadline)
                    .await?;
            }
            Action::Delete => self.delete(id, &spec, k, &client, known, deadline).await?,
        }
        Ok(Applied {
            id: id.clone(),
            spec: raw.clone(),
        })
    }

    async fn health(&self, id: &ResourceId, spec: &Value) -> Result<Health, ProviderError> {
        let (spec, k) = parse_spec(id, spec)?;
        let client = self.client(id, &spec)?;
        let deadline = Instant::now() + OBSERVE_TIMEOUT;
        let known = self.ids.lock().ok().and_then(|m| m.get(id).cloned());
        let obj = match known {
            Some(oid) => match client
                .request(
                    Method::GET,
                    &format!("{}/{oid}", k.collection),
                    &[],
                    None,
                    deadline,
                )
                .await
            {
                Ok(a) => Some(a.body),
                Err(e) if e.status() == Some(404) => None,
                Err(e) => return Err(api_err(id, &spec, e)),
            },
            None => self.find(id, &spec, k, &client, deadline, true).await?,
        };
        let Some(obj) = obj else {
            return Ok(Health::Progressing("not in NICo yet".into()));
        };
        let status = obj.get("status").and_then(Value::as_str).unwrap_or("");
        Ok(if k.ready.contains(&status) {
            Health::Ready
        } else if status == "Error" {
            Health::Failed(format!("status Error; history: {}", history(&obj)))
        } else {
            Health::Progressing(format!("status {status}"))
        })
    }
}

impl NicoProvider {
    async fn observe_one(
        &self,
        r: &ObserveRequest<'_>,
        lists: &mut Lists,
        deadline: Instant,
    ) -> Result<Option<Observed>, ProviderError> {
        let (spec, k) = parse_spec(r.id, r.spec)?;
        let client = self.client(r.id, &spec)?;
        let mut get = async |kind: &Kind| -> Result<Arc<Vec<Value>>, ProviderError> {
            let key = (
                spec.endpoint.clone(),
                spec.org.clone(),
                kind.name.to_string(),
            );
            if let Some(l) = lists.get(&key) {
                return l.clone().map_err(|m| ProviderError::transient(r.id, m));
            }
            let res = client.list(kind.collection, deadline).await;
            let (stored, ret) = match res {
                Ok(l) => {
                    let l = Arc::new(l);
                    (Ok(l.clone()), Ok(l))
                }
                Err(e) => {
                    let pe = api_err(r.id, &spec, e);
                    (Err(pe.message.clone()), Err(pe))
                }
            };
            lists.insert(key, stored);
            ret
        };
        let all = get(k).await?;
        let mut names = HashMap::new();
        for rr in spec.refs.values() {
            if let Some(rk) = kind(&rr.kind)
                && !names.contains_key(&rr.kind)
            {
                names.insert(rr.kind.clone(), id_names(&get(rk).await?));
            }
        }
        let found = by_name(&all, &spec);
        let obj = match found.as_slice() {
            [] => {
                self.remember(r.id, None);
                return Ok(None);
            }
            [o] if owned(k, o, &spec) => *o,
            [o] => return Err(conflict(r.id, k, o, &spec)),
            _ => {
                return Err(ProviderError::permanent(
                    r.id,
                    format!(
                        "NICo has {} {} objects named `{}`",
                        found.len(),
                        k.name,
                        spec.name
                    ),
                ));
            }
        };
        let oid = obj.get("id").and_then(Value::as_str);
        self.remember(r.id, oid);
        Ok(Some(Observed {
            id: r.id.clone(),
            state: observed_state(k, &spec, obj, &names),
            private: Seen {
                id: oid.map(str::to_string),
                status: obj.get("status").cloned(),
            }
            .into_private(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_build_nested_bodies() {
        let mut b = json!({"interfaces": [{"isPhysical": true}]});
        set_pointer(&mut b, "/interfaces/0/subnetId", json!("s1"));
        set_pointer(&mut b, "/sshKeyGroupIds/1", json!("k2"));
        set_pointer(&mut b, "/instanceTypeId", json!("t"));
        assert_eq!(
            b,
            json!({"interfaces": [{"isPhysical": true, "subnetId": "s1"}],
                   "sshKeyGroupIds": [{}, "k2"], "instanceTypeId": "t"})
        );
        assert_eq!(top_segment("/refs/~1interfaces~10~1subnetId"), "interfaces");
        assert_eq!(top_segment("/fields/labels"), "labels");
    }

    #[test]
    fn projection_ignores_server_owned_fields() {
        let d = json!([{"isPhysical": true}]);
        let l = json!([{"isPhysical": true, "status": "Ready", "id": "x"}]);
        assert_eq!(project(&d, Some(&l)), d);
    }
}
