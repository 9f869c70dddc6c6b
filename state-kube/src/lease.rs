//! A `coordination.k8s.io/v1` Lease used as a lock: acquire (create, renew or take over an
//! expired one), release, and who holds it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::LOCK_ANNOTATION;
use fleetform_engine::state::{LockInfo, StateError};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// One Lease used as a lock: acquire, renew, release.
#[derive(Clone)]
pub struct LeaseHandle {
    api: Api<Lease>,
    name: String,
    namespace: String,
    duration: Duration,
    labels: BTreeMap<String, String>,
}

impl LeaseHandle {
    /// A handle on Lease `name` in `namespace`, held for `duration` per renewal.
    pub fn new(client: kube::Client, namespace: &str, name: &str, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            namespace: namespace.into(),
            duration,
            labels: BTreeMap::new(),
        }
    }

    /// Labels written on the Lease whenever this handle takes it (to find it by selector).
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn object(&self) -> String {
        format!("{}/leases/{}", self.namespace, self.name)
    }

    fn remote(&self, message: &str) -> impl FnOnce(kube::Error) -> StateError {
        let object = self.object();
        let message = message.to_string();
        move |e| StateError::Remote {
            object,
            message,
            source: Some(Box::new(e)),
        }
    }

    fn lease(
        &self,
        info: &LockInfo,
        rv: Option<String>,
        transitions: i32,
        acquired: Timestamp,
    ) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: rv,
                labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
                annotations: Some(BTreeMap::from([(
                    LOCK_ANNOTATION.into(),
                    serde_json::to_string(info).unwrap_or_default(),
                )])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(info.id.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(MicroTime(acquired)),
                renew_time: Some(MicroTime(Timestamp::now())),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    /// Takes the Lease for `info`, or renews it when `info` holds it. Ok(true): newly taken
    /// (from nobody, or from a holder whose lease ran out). A live other holder: `Locked`.
    pub async fn acquire(&self, info: &LockInfo) -> Result<bool, StateError> {
        for _ in 0..5 {
            let current = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(self.remote("cannot read the lock"))?;
            let written = match current {
                None => {
                    let lease = self.lease(info, None, 0, Timestamp::now());
                    self.api
                        .create(&PostParams::default(), &lease)
                        .await
                        .map(|_| true)
                }
                Some(current) => {
                    let spec = current.spec.clone().unwrap_or_default();
                    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
                    let mine = holder.as_deref() == Some(info.id.as_str());
                    if holder.is_some() && !mine && !expired(&spec) {
                        return Err(StateError::Locked {
                            holder: Box::new(holder_info(&current)),
                        });
                    }
                    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
                    let acquired = match (mine, spec.acquire_time) {
                        (true, Some(t)) => t.0,
                        _ => Timestamp::now(),
                    };
                    let lease = self.lease(
                        info,
                        current.metadata.resource_version,
                        transitions,
                        acquired,
                    );
                    self.api
                        .replace(&self.name, &PostParams::default(), &lease)
                        .await
                        .map(|_| !mine)
                }
            };
            match written {
                Ok(taken) => return Ok(taken),
                // Someone else wrote it between our read and write: read it again and decide.
                Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => continue,
                Err(e) => return Err(self.remote("cannot take the lock")(e)),
            }
        }
        Err(StateError::Conflict {
            object: self.object(),
            message: "the lock changed under five attempts to take it".into(),
        })
    }

    /// Renews the Lease while `info` holds it; Ok(false) when another holds it now.
    pub async fn renew(&self, info: &LockInfo) -> Result<bool, StateError> {
        let Some(current) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(self.remote("cannot read the lock"))?
        else {
            return Ok(false);
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(info.id.as_str()) {
            return Ok(false);
        }
        let mut lease = current;
        if let Some(s) = lease.spec.as_mut() {
            s.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(self.remote("cannot renew the lock")(e)),
        }
    }

    /// Clears the holder when it is `id` (`force`: a different holder is an error naming it).
    /// The Lease itself stays, so its transition count keeps growing.
    pub async fn release(&self, id: Option<&str>, force: bool) -> Result<(), StateError> {
        let Some(current) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(self.remote("cannot read the lock"))?
        else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        match holder {
            None => return Ok(()),
            Some(h) if Some(h.as_str()) != id => {
                return if force {
                    Err(StateError::LockMismatch {
                        given: id.unwrap_or_default().into(),
                        current: h,
                    })
                } else {
                    Ok(())
                };
            }
            Some(_) => {}
        }
        let mut lease = current;
        if let Some(s) = lease.spec.as_mut() {
            s.holder_identity = None;
            s.renew_time = None;
        }
        if let Some(a) = lease.metadata.annotations.as_mut() {
            a.remove(LOCK_ANNOTATION);
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() => Err(StateError::Conflict {
                object: self.object(),
                message: "the lock changed while releasing it; it is no longer this process's"
                    .into(),
            }),
            Err(e) => Err(self.remote("cannot release the lock")(e)),
        }
    }

    /// Who holds the Lease now, if anyone holds a live one.
    pub async fn holder(&self) -> Result<Option<LockInfo>, StateError> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(self.remote("cannot read the lock"))?;
        Ok(current.and_then(|l| {
            let spec = l.spec.clone().unwrap_or_default();
            let live = spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty())
                && !expired(&spec);
            live.then(|| holder_info(&l))
        }))
    }
}

/// True when the holder did not renew within the lease duration (or never set one).
pub(crate) fn expired(spec: &LeaseSpec) -> bool {
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(t), Some(d)) => {
            t.0.as_millisecond() + i64::from(d) * 1000 < Timestamp::now().as_millisecond()
        }
        _ => true,
    }
}

/// The holder as its annotation describes it, else as the Lease's fields do.
fn holder_info(lease: &Lease) -> LockInfo {
    if let Some(info) = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOCK_ANNOTATION))
        .and_then(|s| serde_json::from_str::<LockInfo>(s).ok())
    {
        return info;
    }
    let spec = lease.spec.clone().unwrap_or_default();
    let id = spec.holder_identity.unwrap_or_default();
    LockInfo {
        who: id.clone(),
        id,
        operation: "unknown".into(),
        created: spec
            .acquire_time
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        // A Lease's holder is judged by its renew time, not by a local pid.
        host: String::new(),
        pid: 0,
    }
}
