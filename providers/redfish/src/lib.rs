//! fleetform's redfish provider: BMC-level state of GPU hosts (power, boot
//! override, BIOS attributes, secure boot, virtual media, firmware versions
//! and a read-only hardware inventory), one resource per aspect of a host:
//! `redfish:host/<host>/<aspect>`. The spec shapes are in [`spec`] and
//! docs/providers/redfish.md.
//!
//! Size: each aspect's observe and apply are still methods of the provider here (the client,
//! spec and typed shapes are modules); one module per aspect is the planned split.

pub mod client;
mod firmware;

use firmware::InventoryMember;
pub mod spec;
mod typed;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleetform_contract::provider::{
    Action, Applied, ApplyContext, ApplyRequest, Change, Disruption, FieldChange, Health,
    ObserveRequest, Observed, Provider, ProviderError,
};
use fleetform_contract::resource::{Desired, ResourceId};
use fleetform_contract::secret::SecretResolver;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

pub use client::{AuthMode, ClientConfig};
use client::{BmcHttp, Conn, HttpError, Limits, odata_id};
use spec::{
    Aspect, BiosSpec, BmcSpec, BootSpec, FirmwareSpec, FirmwareUpdate, InventorySpec, PowerSpec,
    PowerState, ResetSettings, SecureBootSpec, VirtualMediaSpec,
};

/// Tunables of the provider beyond HTTP limits.
#[derive(Debug, Clone)]
pub struct RedfishOptions {
    /// HTTP limits and timeouts.
    pub client: ClientConfig,
    /// How long `apply` waits for a power change to land (the fake BMC takes up to 11 s).
    pub power_timeout: Duration,
    /// How often `apply` re-reads state while waiting (power, tasks).
    pub poll_interval: Duration,
    /// How long `apply` follows a firmware update task.
    pub task_timeout: Duration,
    /// How long a graceful restart (applying staged settings) may take to start before the
    /// provider, having read the power state back, escalates once to a forced restart.
    pub graceful_timeout: Duration,
}

impl Default for RedfishOptions {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            power_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            task_timeout: Duration::from_secs(600),
            graceful_timeout: Duration::from_secs(300),
        }
    }
}

type ClientKey = (String, Option<PathBuf>, bool);

/// The redfish provider.
pub struct RedfishProvider {
    secrets: Arc<dyn SecretResolver>,
    options: RedfishOptions,
    limits: Arc<Limits>,
    clients: Mutex<HashMap<ClientKey, Arc<BmcHttp>>>,
    /// (endpoint, system selector) -> System @odata.id
    systems: Mutex<HashMap<(String, String), String>>,
    /// Hosts whose BMC applied BIOS settings at once (no reboot needed).
    bios_immediate: Mutex<HashSet<String>>,
    /// One lock per System: never two resets in flight to one host.
    reset_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A parsed address: `host/<host>/<aspect>`.
struct Target {
    host: String,
    aspect: Aspect,
}

fn parse_id(id: &ResourceId) -> Result<Target, ProviderError> {
    let bad = || {
        ProviderError::permanent(
            id,
            "redfish addresses are redfish:host/<host>/<aspect> with aspect one of power, boot, bios, \
             secure-boot, virtual-media, firmware, inventory",
        )
    };
    let mut parts = id.path().split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("host"), Some(host), Some(aspect), None) if !host.is_empty() => Ok(Target {
            host: host.to_string(),
            aspect: Aspect::parse(aspect).ok_or_else(bad)?,
        }),
        _ => Err(bad()),
    }
}

fn parse_spec<T: DeserializeOwned>(id: &ResourceId, spec: &Value) -> Result<T, ProviderError> {
    serde_json::from_value(spec.clone())
        .map_err(|e| ProviderError::permanent(id, format!("invalid spec: {e}")))
}

/// What the provider keeps between observe and diff/apply.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Private {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    extra: Map<String, Value>,
}

/// A resolved host: the connection and the System.
struct Host<'a> {
    id: &'a ResourceId,
    name: String,
    conn: Conn,
    system_path: String,
    system: Value,
    system_etag: Option<String>,
}

impl Host<'_> {
    fn err(&self, e: HttpError) -> ProviderError {
        e.into_provider(self.id, &self.name, &self.conn.user)
    }

    async fn get(&self, path: &str) -> Result<client::Response, ProviderError> {
        self.conn.get(path).await.map_err(|e| self.err(e))
    }

    /// GET that maps 404/501/405 to `None`.
    async fn get_opt(&self, path: &str) -> Result<Option<client::Response>, ProviderError> {
        match self.conn.get(path).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    fn link(&self, name: &str) -> Option<String> {
        odata_id(self.system.get(name)).map(str::to_string)
    }

    fn manager_path(&self) -> Option<String> {
        self.system
            .pointer("/Links/ManagedBy/0")
            .and_then(|v| v.get("@odata.id"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn permanent(&self, msg: impl std::fmt::Display) -> ProviderError {
        ProviderError::permanent(self.id, format!("host {}: {msg}", self.name))
    }

    /// One "unsupported by this BMC" problem: what the manifest asks, the BMC, and the
    /// Redfish property it lacks.
    fn unsupported(&self, what: &str, property: &str) -> ProviderError {
        self.permanent(format!(
            "{what} is unsupported by this BMC ({}): it has no `{property}`",
            self.conn.http().base()
        ))
    }
}

/// The last path segment of each member (its Id in the URL), for messages.
fn member_ids(members: &[String]) -> String {
    members
        .iter()
        .map(|m| m.rsplit('/').find(|s| !s.is_empty()).unwrap_or(m))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loose equality for BIOS attribute values: `true` == `"true"`, `10` == `"10"`.
fn loose_eq(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let s = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    matches!((s(a), s(b)), (Some(x), Some(y)) if x == y)
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn field(path: &str, before: Option<Value>, after: Option<Value>) -> FieldChange {
    FieldChange {
        path: path.to_string(),
        before,
        after,
        sensitive: false,
        changed_by: None,
    }
}

/// Allowable values for a parameter of an action: inline
/// `<Param>@Redfish.AllowableValues`, else the action's `@Redfish.ActionInfo`.
async fn allowable(
    host: &Host<'_>,
    action: &Value,
    param: &str,
) -> Result<Option<Vec<String>>, ProviderError> {
    let strs = |v: &Value| {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
    };
    if let Some(v) = action.get(format!("{param}@Redfish.AllowableValues")) {
        return Ok(strs(v));
    }
    if let Some(info) = action.get("@Redfish.ActionInfo").and_then(Value::as_str)
        && let Some(r) = host.get_opt(info).await?
        && let Some(params) = r.body.get("Parameters").and_then(Value::as_array)
    {
        for p in params {
            if p.get("Name").and_then(Value::as_str) == Some(param) {
                return Ok(p.get("AllowableValues").and_then(strs));
            }
        }
    }
    Ok(None)
}

impl RedfishProvider {
    /// A provider reading BMC passwords through `secrets`, with default limits
    /// (2 requests in flight per BMC, 64 overall).
    pub fn new(secrets: Arc<dyn SecretResolver>) -> Self {
        Self::with_options(secrets, RedfishOptions::default())
    }

    /// A provider with explicit limits and timeouts.
    pub fn with_options(secrets: Arc<dyn SecretResolver>, options: RedfishOptions) -> Self {
        Self {
            secrets,
            limits: Arc::new(Limits::new(options.client.clone())),
            options,
            clients: Mutex::new(HashMap::new()),
            systems: Mutex::new(HashMap::new()),
            bios_immediate: Mutex::new(HashSet::new()),
            reset_locks: Mutex::new(HashMap::new()),
        }
    }

    fn http(
        &self,
        id: &ResourceId,
        host: &str,
        bmc: &BmcSpec,
    ) -> Result<Arc<BmcHttp>, ProviderError> {
        if bmc.insecure {
            tracing::warn!(
                host,
                endpoint = %bmc.endpoint,
                "TLS VERIFICATION IS OFF for this BMC (bmc.insecure: true): anyone on the path can read its credentials"
            );
        }
        let key = (
            bmc.endpoint.trim_end_matches('/').to_string(),
            bmc.ca_bundle.clone(),
            bmc.insecure,
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let pem = match &bmc.ca_bundle {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                ProviderError::permanent(
                    id,
                    format!("host {host}: cannot read bmc.caBundle {}", p.display()),
                )
                .with_source(e)
            })?),
            None => None,
        };
        let c = Arc::new(
            BmcHttp::new(
                &bmc.endpoint,
                pem.as_deref(),
                bmc.insecure,
                self.limits.clone(),
            )
            .map_err(|e| e.into_provider(id, host, &bmc.credentials.username))?,
        );
        clients.insert(key, c.clone());
        Ok(c)
    }

    async fn connect(
        &self,
        id: &ResourceId,
        host: &str,
        bmc: &BmcSpec,
    ) -> Result<Conn, ProviderError> {
        let http = self.http(id, host, bmc)?;
        let password = self
            .secrets
            .resolve(&bmc.credentials.password)
            .map_err(|e| {
                ProviderError::permanent(id, format!("host {host}: cannot read the BMC password"))
                    .with_source(e)
            })?;
        let user = &bmc.credentials.username;
        Conn::open(http, user, password)
            .await
            .map_err(|e| e.into_provider(id, host, user))
    }

    /// Connects and finds the ComputerSystem named by `bmc.system`.
    async fn host<'a>(
        &self,
        id: &'a ResourceId,
        name: &str,
        bmc: &BmcSpec,
    ) -> Result<Host<'a>, ProviderError> {
        let conn = self.connect(id, name, bmc).await?;
        let mut host = Host {
            id,
            name: name.to_string(),
            conn,
            system_path: String::new(),
            system: Value::Null,
            system_etag: None,
        };
        let selector = bmc.system.clone().unwrap_or_default();
        let cache_key = (
            bmc.endpoint.trim_end_matches('/').to_string(),
            selector.clone(),
        );
        let cached = self
            .systems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
            .cloned();
        if let Some(path) = cached
            && let Some(r) = host.get_opt(&path).await?
        {
            host.system_etag = r.header("ETag");
            host.system = r.body;
            host.system_path = path;
            return Ok(host);
        }
        let systems = odata_id(host.conn.root.get("Systems"))
            .map(str::to_string)
            .ok_or_else(|| host.permanent("the BMC's service root links no Systems collection"))?;
        let matches = |sys: &Value| {
            ["Id", "Name", "UUID", "HostName"]
                .iter()
                .any(|k| sys.get(*k).and_then(Value::as_str) == Some(selector.as_str()))
        };
        let mut found: Option<(String, client::Response)> = None;
        if !selector.is_empty() {
            // Direct hit first (Id in the path, or a BMC that redirects names, like sushy).
            let direct = format!("{}/{}", systems.trim_end_matches('/'), selector);
            if let Some(r) = host.get_opt(&direct).await?
                && matches(&r.body)
            {
                let path = odata_id(Some(&r.body)).map_or(direct, str::to_string);
                found = Some((path, r));
            }
        }
        if found.is_none() {
            let coll = host.get(&systems).await?.body;
            let members = client::members(&coll);
            if selector.is_empty() {
                if members.len() != 1 {
                    return Err(host.permanent(format!(
                        "the BMC at {} has {} systems ({}): set bmc.systemId to one of them",
                        bmc.endpoint,
                        members.len(),
                        member_ids(&members)
                    )));
                }
                let r = host.get(&members[0]).await?;
                found = Some((members[0].clone(), r));
            } else {
                for m in &members {
                    let r = host.get(m).await?;
                    if matches(&r.body) {
                        found = Some((m.clone(), r));
                        break;
                    }
                }
                if found.is_none() {
                    return Err(host.permanent(format!(
                        "the BMC at {} has no system with Id, Name or UUID `{selector}` (bmc.systemId); it has: {}",
                        bmc.endpoint,
                        member_ids(&members)
                    )));
                }
            }
        }
        let Some((path, r)) = found else {
            return Err(host.permanent(format!(
                "the BMC at {} has no system `{selector}` (bmc.systemId)",
                bmc.endpoint
            )));
        };
        self.systems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, path.clone());
        host.system_etag = r.header("ETag");
        host.system = r.body;
        host.system_path = path;
        Ok(host)
    }

    async fn observe_one(
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

    async fn observe_aspect(
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

    async fn observe_bios(
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

    async fn vmedia_collection(&self, host: &Host<'_>) -> Result<Option<String>, ProviderError> {
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

    async fn observe_vmedia(
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

    async fn observe_firmware(
        &self,
        host: &Host<'_>,
        spec: &Value,
        mut p: Private,
    ) -> Result<(Value, Private), ProviderError> {
        let want: FirmwareSpec = parse_spec(host.id, spec)?;
        let mut versions: BTreeMap<String, Value> = BTreeMap::new();
        // BIOS and BMC from the System and the Manager where they say; the rest (and these,
        // where they do not) from the FirmwareInventory, through the alias table.
        for k in want.expected.keys() {
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
        let unread: Vec<&String> = want
            .expected
            .keys()
            .filter(|k| !versions.contains_key(*k))
            .collect();
        // An update without explicit targets needs its component's inventory member.
        let untargeted = want.updates.iter().any(|(_, u)| u.targets.is_empty());
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
        for k in want.expected.keys() {
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
        let missing: Vec<String> = want
            .expected
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
        Ok((json!({"expected": versions}), p))
    }

    async fn observe_inventory(
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

    fn diff_inner(
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
                for (k, v) in &w.expected {
                    let cur = st.pointer(&format!("/expected/{}", escape(k)));
                    if cur.and_then(Value::as_str) != Some(v.as_str()) {
                        fields.push(field(
                            &format!("/expected/{}", escape(k)),
                            cur.cloned(),
                            Some(json!(v)),
                        ));
                    }
                }
                // The BMC's own firmware activates with a reset of the BMC alone, the host
                // keeps running; any other component (BIOS, GPU, NIC) activates when the host
                // resets.
                if fields.iter().any(|f| f.path != "/expected/BMC") {
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

    async fn apply_aspect(
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
                let differing: Vec<&String> = w
                    .expected
                    .iter()
                    .filter(|(k, v)| {
                        observed
                            .pointer(&format!("/expected/{}", escape(k)))
                            .and_then(Value::as_str)
                            != Some(v.as_str())
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
                }
                Ok(())
            }
            Aspect::Inventory => Err(host.permanent("inventory is observed, not applied")),
        }
    }

    /// Follows a task monitor until the task ends (or a 404 for BMCs that
    /// answer 204 + Location but keep no task, like sushy).
    async fn follow_task(
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

    /// The staged settings of `s` that are not current on the host yet, in words.
    async fn awaiting_reset(
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
        Ok(out)
    }

    /// The reset action's target and the graceful and forced restart types the BMC allows.
    async fn restart_types(
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

    async fn reset_plan(&self, host: &Host<'_>) -> Result<String, ProviderError> {
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

    fn reset_lock(&self, host: &Host<'_>) -> Arc<tokio::sync::Mutex<()>> {
        self.reset_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(bios_key(host))
            .or_default()
            .clone()
    }

    /// Sends one reset POST; a dropped connection is not an error (the reset may have
    /// landed: the caller reads the power state back instead of resending).
    async fn send_reset(
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
    async fn reset_for_settings(
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
    async fn verify_after_reset(
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

    async fn read_power(&self, host: &Host<'_>) -> Result<Option<String>, ProviderError> {
        Ok(typed::system(&host.get(&host.system_path).await?.body).power_state)
    }

    async fn apply_power(
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

fn bios_key(host: &Host<'_>) -> String {
    format!("{}{}", host.conn.http().base(), host.system_path)
}

/// JSON-pointer escaping of one segment.
fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

#[async_trait]
impl Provider for RedfishProvider {
    fn name(&self) -> &'static str {
        "redfish"
    }

    async fn observe(
        &self,
        requests: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>> {
        let mut results =
            futures::future::join_all(requests.iter().map(|rq| self.observe_one(rq))).await;
        once_per_host(&mut results);
        results
    }

    fn diff(
        &self,
        desired: &Desired,
        observed: Option<&Observed>,
    ) -> Result<Change, ProviderError> {
        self.diff_inner(desired, observed)
    }

    async fn apply(
        &self,
        request: &ApplyRequest<'_>,
        cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        let id = &request.change.id;
        let t = parse_id(id)?;
        let Some(desired) = request.desired else {
            // Deleting a host aspect from the manifest stops managing it; the BMC keeps its state.
            return Ok(Applied {
                id: id.clone(),
                spec: request.last_applied.cloned().unwrap_or(Value::Null),
            });
        };
        if t.aspect == Aspect::Inventory {
            return Err(ProviderError::permanent(
                id,
                format!("host {}: inventory is observed, not applied", t.host),
            ));
        }
        let bmc: spec::AnyBmc = parse_spec(id, &desired.spec)?;
        let host = self.host(id, &t.host, &bmc.bmc).await?;
        let result = self.apply_aspect(&host, t.aspect, &desired.spec, cx).await;
        host.conn.close().await;
        result?;
        Ok(Applied {
            id: id.clone(),
            spec: desired.spec.clone(),
        })
    }

    async fn health(&self, id: &ResourceId, spec: &Value) -> Result<Health, ProviderError> {
        let rq = ObserveRequest {
            id,
            spec,
            desired: true,
            unchanged: false,
        };
        let observed = self.observe_one(&rq).await?;
        let desired = Desired::new(id.clone(), spec.clone());
        let change = self.diff_inner(&desired, observed.as_ref())?;
        if change.action == Action::NoOp {
            return Ok(Health::Ready);
        }
        // Staged settings wait for the host's reset, which its power resource plans.
        if change.fields.iter().all(|f| {
            f.changed_by
                .as_deref()
                .is_some_and(|c| c.starts_with("staged"))
        }) {
            return Ok(Health::Ready);
        }
        let what = change
            .fields
            .iter()
            .map(|f| {
                let staged = f
                    .changed_by
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                format!(
                    "{} is {} (want {}){staged}",
                    f.path,
                    f.before.as_ref().map_or("absent".into(), Value::to_string),
                    f.after.as_ref().map_or("absent".into(), Value::to_string)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Ok(Health::Progressing(what))
    }
}

/// A host-level failure (system lookup, credentials, an unsupported BMC) fails every aspect
/// of the host with the same words: say it in full once, on the first of them, and point the
/// others there, so a plan lists it once per host.
fn once_per_host(results: &mut [Result<Option<Observed>, ProviderError>]) {
    let mut first: HashMap<String, ResourceId> = HashMap::new();
    for r in results.iter_mut() {
        let Err(e) = r else { continue };
        if e.is_transient() {
            continue;
        }
        match first.get(&e.message) {
            None => {
                first.insert(e.message.clone(), e.id.clone());
            }
            Some(on) => {
                let host = e.message.split(':').next().unwrap_or("host").to_string();
                *r = Err(ProviderError::permanent(
                    &e.id,
                    format!("{host}: not observed: the same BMC error as {on} (reported there)"),
                ));
            }
        }
    }
}

/// Which way the conversation with this BMC authenticates (session or basic),
/// for diagnostics and tests.
pub async fn probe_auth(
    provider: &RedfishProvider,
    id: &ResourceId,
    host: &str,
    bmc: &BmcSpec,
) -> Result<AuthMode, ProviderError> {
    let conn = provider.connect(id, host, bmc).await?;
    let mode = conn.auth_mode();
    conn.close().await;
    Ok(mode)
}

/// The provider name, the address prefix it owns.
pub const NAME: &str = "redfish";

/// Registers the redfish provider: BMC passwords are read through the configuration's secrets.
pub fn register(registry: &mut fleetform_contract::Registry) {
    registry.register(NAME, |config| {
        Ok(Arc::new(RedfishProvider::new(config.secrets.clone())))
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_a_host_and_one_aspect() {
        let t = parse_id(&ResourceId::new("redfish", "host/r01-n03/secure-boot")).unwrap();
        assert_eq!((t.host.as_str(), t.aspect), ("r01-n03", Aspect::SecureBoot));
        let err = parse_id(&ResourceId::new("redfish", "host/r01-n03/gpus"))
            .err()
            .unwrap();
        assert!(err.message.contains("power, boot, bios"), "{err}");
        assert!(parse_id(&ResourceId::new("redfish", "r01-n03/power")).is_err());
    }

    #[test]
    fn bios_values_compare_loosely_across_json_types() {
        assert!(loose_eq(&json!(true), &json!("true")));
        assert!(loose_eq(&json!(10), &json!("10")));
        assert!(!loose_eq(&json!("Enabled"), &json!("Disabled")));
    }

    #[test]
    fn a_spec_with_an_unknown_key_is_refused() {
        let id = ResourceId::new("redfish", "host/a/power");
        let spec = json!({"bmc": {"endpoint": "https://x", "credentials": {"username": "u", "password": {"env": "P"}}},
                          "state": "On", "colour": "blue"});
        let err = parse_spec::<PowerSpec>(&id, &spec).unwrap_err();
        assert!(err.message.contains("colour"), "{err}");
    }

    #[test]
    fn diff_ignores_bios_attributes_not_in_the_spec() {
        let p = RedfishProvider::new(Arc::new(fleetform_contract::secret::LocalSecrets::default()));
        let id = ResourceId::new("redfish", "host/a/bios");
        let spec = json!({"bmc": {"endpoint": "https://x", "credentials": {"username": "u", "password": {"env": "P"}}},
                          "attributes": {"A": "1"}});
        let obs = Observed {
            id: id.clone(),
            state: json!({"attributes": {"A": 1}}),
            private: Some(json!({"extra": {"unknown": [], "appliesImmediately": true}})),
        };
        let c = p.diff(&Desired::new(id, spec), Some(&obs)).unwrap();
        assert_eq!(c.action, Action::NoOp);
    }
}
