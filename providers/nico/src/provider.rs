//! The [`Provider`] impl: observe (one paged list per kind per call), field-level diff,
//! apply (create-or-adopt by name, PATCH, DELETE polled to completion) and health.
//!
//! Size: just over 1,000 lines; the request-body building (references resolved to ids,
//! ownership marks) is the part that would move out to its own module first.

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

/// The lists one observe call read, by (endpoint, org, kind); an error is kept as its message.
type Lists = BTreeMap<(String, String, String), Result<Arc<Vec<Value>>, String>>;

/// How long one observe call may take.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a deleting object is polled.
const POLL: Duration = Duration::from_millis(250);

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

/// True when `obj` carries this fleet's ownership mark (another fleet's is not enough).
fn owned(k: &Kind, obj: &Value, spec: &NicoSpec) -> bool {
    match k.owner {
        Owner::Label => {
            obj.pointer(&format!("/labels/{}", OWNER_LABEL.replace('/', "~1")))
                == Some(&json!(spec.owner_value()))
        }
        Owner::Site => true,
        Owner::Description => obj
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| d.ends_with(spec.owner_mark().trim_start())),
    }
}

/// Finds the objects named `name` (and, when both say, on the same site).
fn by_name<'a>(objects: &'a [Value], spec: &NicoSpec) -> Vec<&'a Value> {
    let site = spec.fields.get("siteId");
    // A machine's name in fleetform is its NICo id.
    let key = if spec.kind == "machine" { "id" } else { "name" };
    objects
        .iter()
        .filter(|o| o.get(key).and_then(Value::as_str) == Some(spec.name.as_str()))
        .filter(|o| match (site, o.get("siteId")) {
            (Some(a), Some(b)) if !b.is_null() => a == b,
            _ => true,
        })
        .collect()
}

fn conflict(id: &ResourceId, k: &Kind, obj: &Value, spec: &NicoSpec) -> ProviderError {
    let how = match k.owner {
        Owner::Label => format!("label {OWNER_LABEL}={}", spec.owner_value()),
        Owner::Description => {
            format!("description ending in `{}`", spec.owner_mark().trim_start())
        }
        Owner::Site => String::new(),
    };
    ProviderError::permanent(
        id,
        format!(
            "conflict: NICo already has a {} named `{}` (id {}) that fleetform did not create (no {how}); rename it in the manifest, or mark the existing one to let fleetform adopt it",
            k.name,
            obj.get("name").and_then(Value::as_str).unwrap_or("?"),
            obj.get("id").and_then(Value::as_str).unwrap_or("?"),
        ),
    )
}

/// The live value in the shape of the desired one: objects keep only the keys the desired
/// value names (the server owns the rest); arrays are compared element by element.
fn project(desired: &Value, live: Option<&Value>) -> Value {
    match (desired, live) {
        (_, None) => Value::Null,
        (Value::Object(d), Some(Value::Object(l))) => Value::Object(
            d.iter()
                .map(|(k, dv)| (k.clone(), project(dv, l.get(k))))
                .collect(),
        ),
        (Value::Array(d), Some(Value::Array(l))) => Value::Array(
            l.iter()
                .enumerate()
                .map(|(i, lv)| match d.get(i) {
                    Some(dv) => project(dv, Some(lv)),
                    None => lv.clone(),
                })
                .collect(),
        ),
        (_, Some(l)) => l.clone(),
    }
}

/// The live object in the desired spec's shape: `{fields, refs}`.
fn observed_state(
    k: &Kind,
    spec: &NicoSpec,
    obj: &Value,
    names: &HashMap<String, HashMap<String, String>>,
) -> Value {
    let mut fields = Map::new();
    for (key, want) in &spec.fields {
        let live = obj.get(key);
        let v = match key.as_str() {
            // A PATCH replaces labels whole: compare them whole, less the ownership label.
            "labels" => {
                let mut l = live.cloned().unwrap_or(json!({}));
                if let Some(m) = l.as_object_mut() {
                    m.remove(OWNER_LABEL);
                }
                l
            }
            // Maintenance mode shows as the machine's status.
            "maintenance" if k.owner == Owner::Site => project(
                want,
                Some(&json!({
                    "enabled": obj.get("status").and_then(Value::as_str) == Some("Maintenance"),
                    "message": obj.get("maintenanceMessage").cloned().unwrap_or(Value::Null),
                })),
            ),
            "description" if k.owner == Owner::Description => live
                .and_then(Value::as_str)
                .map(|d| {
                    json!(
                        d.strip_suffix(spec.owner_mark().trim_start())
                            .unwrap_or(d)
                            .trim_end()
                    )
                })
                .unwrap_or(Value::Null),
            _ => project(want, live),
        };
        fields.insert(key.clone(), v);
    }
    let mut refs = Map::new();
    for (ptr, r) in &spec.refs {
        let name = obj
            .pointer(ptr)
            .and_then(Value::as_str)
            .and_then(|id| names.get(&r.kind).and_then(|m| m.get(id)))
            .map_or(Value::Null, |n| json!({"kind": r.kind, "name": n}));
        refs.insert(ptr.clone(), name);
    }
    json!({"fields": fields, "refs": refs})
}

fn desired_state(spec: &NicoSpec) -> Value {
    let fields: Map<String, Value> = spec
        .fields
        .iter()
        .map(|(k, v)| {
            let v = if k == "description" {
                json!(v.as_str().unwrap_or("").trim_end())
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    let refs: Map<String, Value> = spec
        .refs
        .iter()
        .map(|(p, r)| (p.clone(), json!({"kind": r.kind, "name": r.name})))
        .collect();
    json!({"fields": fields, "refs": refs})
}

fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Sets `value` at JSON pointer `ptr`, creating objects and array slots on the way.
fn set_pointer(root: &mut Value, ptr: &str, value: Value) {
    let mut cur = root;
    let segs: Vec<String> = ptr
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        if let Ok(n) = seg.parse::<usize>()
            && let Value::Array(a) = cur
        {
            while a.len() <= n {
                a.push(json!({}));
            }
            if last {
                a[n] = value;
                return;
            }
            cur = &mut a[n];
            continue;
        }
        if !cur.is_object() {
            *cur = json!({});
        }
        let Value::Object(m) = cur else { return };
        if last {
            m.insert(seg.clone(), value);
            return;
        }
        let next_is_index = segs[i + 1].parse::<usize>().is_ok();
        cur = m
            .entry(seg.clone())
            .or_insert_with(|| if next_is_index { json!([]) } else { json!({}) });
    }
}

/// The full request body: fields, name, resolved references and the ownership mark.
async fn body(
    id: &ResourceId,
    spec: &NicoSpec,
    k: &Kind,
    client: &NicoClient,
    deadline: Instant,
) -> Result<Value, ProviderError> {
    let mut b = Value::Object(spec.fields.clone());
    if k.owner != Owner::Site {
        b["name"] = json!(spec.name);
    }
    let mut lists: HashMap<&str, Vec<Value>> = HashMap::new();
    for (ptr, r) in &spec.refs {
        let rk = kind(&r.kind).ok_or_else(|| {
            ProviderError::permanent(id, format!("refs {ptr}: unknown kind `{}`", r.kind))
        })?;
        if !lists.contains_key(rk.name) {
            let l = client
                .list(rk.collection, deadline)
                .await
                .map_err(|e| api_err(id, spec, e))?;
            lists.insert(rk.name, l);
        }
        let target = lists[rk.name]
            .iter()
            .find(|o| o.get("name").and_then(Value::as_str) == Some(r.name.as_str()))
            .and_then(|o| o.get("id").cloned())
            .ok_or_else(|| {
                ProviderError::transient(
                    id,
                    format!(
                        "waits for {}: NICo has no {} named `{}` yet",
                        crate::spec::nico_id(&spec.site, &r.kind, &r.name),
                        r.kind,
                        r.name
                    ),
                )
            })?;
        set_pointer(&mut b, ptr, target);
    }
    match k.owner {
        Owner::Label => {
            if !b.get("labels").is_some_and(Value::is_object) {
                b["labels"] = json!({});
            }
            b["labels"][OWNER_LABEL] = json!(spec.owner_value());
        }
        Owner::Description => {
            let d = b.get("description").and_then(Value::as_str).unwrap_or("");
            let d = format!("{}{}", d.trim_end(), spec.owner_mark());
            b["description"] = json!(d.trim_start());
        }
        Owner::Site => {}
    }
    Ok(b)
}

fn top_segment(path: &str) -> String {
    // `/fields/labels` → labels; `/refs/~1interfaces~10~1subnetId` → interfaces
    let mut it = path.split('/').skip(1);
    match it.next() {
        Some("fields") => it
            .next()
            .unwrap_or("")
            .replace("~1", "/")
            .replace("~0", "~"),
        Some("refs") => {
            let ptr = it
                .next()
                .unwrap_or("")
                .replace("~1", "/")
                .replace("~0", "~");
            ptr.split('/').nth(1).unwrap_or("").to_string()
        }
        _ => String::new(),
    }
}

fn field_changes(desired: &Value, live: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    for section in ["fields", "refs"] {
        let empty = Map::new();
        let d = desired[section].as_object().unwrap_or(&empty);
        let l = live[section].as_object().unwrap_or(&empty);
        for (key, dv) in d {
            let lv = l.get(key).filter(|v| !v.is_null());
            if lv != Some(dv) {
                out.push(FieldChange {
                    path: format!("/{section}/{}", escape(key)),
                    before: lv.cloned(),
                    after: Some(dv.clone()),
                    sensitive: false,
                    changed_by: None,
                });
            }
        }
    }
    out
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
            .and_then(|o| o.private.as_ref())
            .and_then(|p| p.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
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
            private: Some(json!({"id": oid, "status": obj.get("status")})),
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
