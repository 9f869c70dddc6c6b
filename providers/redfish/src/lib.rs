//! fleetform's redfish provider: BMC-level state of GPU hosts (power, boot
//! override, BIOS attributes, secure boot, virtual media, firmware versions
//! and a read-only hardware inventory), one resource per aspect of a host:
//! `redfish:host/<host>/<aspect>`. The spec shapes are in [`spec`] and
//! docs/providers/redfish.md.
//!
//! Layout: the provider, its targets and the `Provider` impl here; each stage of an aspect's
//! life in its own module ([`observe`], [`diff`], [`apply`], [`reset`]), beside the HTTP
//! client, the spec shapes and the typed Redfish shapes.

mod apply;
pub mod client;
mod diff;
mod firmware;
mod observe;
mod reset;

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
    /// Firmware images this process installed and the BMC accepted (task completed), per
    /// (host, component): the version they stage. Until the host's reset activates them the
    /// inventory still reads the old version; this is how diff tells "staged, waiting for the
    /// reset" from "not installed" (an update is never sent twice for one version).
    staged_firmware: Mutex<HashMap<(String, String), String>>,
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
            staged_firmware: Mutex::new(HashMap::new()),
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
