//! One NIM service: its pull secret, image (resolved by ngc), NIMCache and NIMService, and
//! the GPUs a replica asks for.

use super::{Cx, ImageRef, fleet_image, namespace, registry_host, strip_nulls};
use crate::diag::Diagnostic;
use crate::manifest::{NimService, Tenant};
use crate::resource::{Desired, ResourceId};
use crate::sharing;
use base64::Engine as _;
use serde_json::{Value, json};

impl Cx<'_> {
    pub(super) fn pull_secret(
        &mut self,
        tenant: &Tenant,
        namespace: &str,
        ns_id: &ResourceId,
    ) -> Option<ResourceId> {
        let ngc = tenant.spec.ngc.as_ref()?;
        let key = match self.secrets.resolve(&ngc.api_key) {
            Ok(k) => k,
            Err(e) => {
                let span = self.fleet.nearest_span(tenant.doc, "/spec/ngc/apiKey");
                self.diags.push(
                    Diagnostic::error("secret-unreadable", format!("tenant {}: {e}", tenant.name()))
                        .at(span)
                        .field("spec.ngc.apiKey")
                        .hint("set the variable or create the file; the fleet only names where the key lives"),
                );
                return None;
            }
        };
        let registry = &self.fleet.fleet.spec.registries.ngc;
        let host = registry_host(&registry.endpoint);
        let user = registry.username.as_deref().unwrap_or("$oauthtoken");
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", key.expose()));
        let config = json!({ "auths": { host: { "username": user, "password": key.expose(), "auth": auth } } });
        let data = base64::engine::general_purpose::STANDARD.encode(config.to_string());
        let obj = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": { "name": "ngc-pull", "namespace": namespace },
            "data": { ".dockerconfigjson": data }
        });
        let origin = self.origin(tenant.doc, "/spec/ngc/apiKey", &tenant.origin);
        let id = self.kube(tenant.name(), obj, origin);
        if let Some(d) = self.out.get_mut(&id) {
            d.sensitive = vec!["/object/data/.dockerconfigjson".into()];
        }
        self.dep(&id, ns_id, format!("namespace {namespace} first"));
        Some(id)
    }

    pub(super) fn nim(&mut self, tenant: &Tenant, nim: &NimService, cluster_policy: &ResourceId) {
        let t = tenant.name().to_string();
        let ns = nim.spec.namespace.clone();
        let origin = nim.origin.clone();
        let ns_id = self.kube(&t, namespace(&ns), origin.clone());
        let pull = self.pull_secret(tenant, &ns, &ns_id);
        if let Some(gpus) = tenant.spec.quotas.gpus {
            let q = json!({ "apiVersion": "v1", "kind": "ResourceQuota", "metadata": { "name": "gpu-quota", "namespace": ns }, "spec": { "hard": { "requests.nvidia.com/gpu": gpus.to_string() } } });
            let q_id = self.kube(&t, q, origin.clone());
            self.dep(&q_id, &ns_id, format!("namespace {ns} first"));
        }
        // The NGC API key the NIM uses to download models.
        let mut auth_id = None;
        if let Some(ngc) = &tenant.spec.ngc
            && let Ok(key) = self.secrets.resolve(&ngc.api_key)
        {
            let obj = json!({ "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": { "name": "ngc-api", "namespace": ns }, "data": { "NGC_API_KEY": base64::engine::general_purpose::STANDARD.encode(key.expose()) } });
            let id = self.kube(&t, obj, origin.clone());
            if let Some(d) = self.out.get_mut(&id) {
                d.sensitive = vec!["/object/data/NGC_API_KEY".into()];
            }
            self.dep(&id, &ns_id, format!("namespace {ns} first"));
            auth_id = Some(id);
        }
        // The repository is named in the fleet's registry (validate refused any other), so
        // the object names exactly the repository whose digest is pinned and whose pull
        // secret it carries.
        let registry = &self.fleet.fleet.spec.registries.ngc;
        let parsed = ImageRef::parse(&nim.spec.image)
            .map_err(|e| e.to_string())
            .and_then(|i| fleet_image(&i, registry).map(|(h, p)| (i, h, p)));
        let (image, host, path) = match parsed {
            Ok(x) => x,
            Err(why) => {
                let span = self.fleet.nearest_span(nim.doc, "/spec/image");
                self.diags.push(
                    Diagnostic::error("image-ref", format!("NIM {}: {why}", nim.name()))
                        .at(span)
                        .field("spec.image"),
                );
                return;
            }
        };
        let repo = format!("{host}/{path}");
        let tag = image.operator_tag();
        let puller = match (&image.tag, &image.digest) {
            (_, Some(d)) if image.tag.is_none() => format!("{repo}@{d}"),
            (Some(t), Some(d)) => format!("{repo}:{t}@{d}"),
            (Some(t), None) => format!("{repo}:{t}"),
            (None, _) => repo.clone(),
        };
        let image_id = self.image(tenant, nim, &image, &host, &path);
        let mut cache_id = None;
        if let Some(cache) = &nim.spec.cache {
            let mut storage = json!({ "pvc": { "create": true, "size": cache.size, "volumeAccessMode": "ReadWriteOnce" } });
            if let Some(sc) = &cache.storage_class {
                storage["pvc"]["storageClass"] = json!(sc);
            }
            let c = json!({
                "apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMCache", "metadata": { "name": nim.name(), "namespace": ns },
                "spec": { "source": { "ngc": { "modelPuller": puller, "pullSecret": "ngc-pull", "authSecret": "ngc-api" } }, "storage": storage }
            });
            let o = self.origin(nim.doc, "/spec/cache", &origin);
            let id = self.kube(&t, c, o);
            self.dep(
                &id,
                cluster_policy,
                "NIM workloads need the GPU Operator ready",
            );
            cache_id = Some(id);
        }
        let pool = self.fleet.pool(&nim.spec.pool);
        let request = sharing::request(
            pool.and_then(|p| p.spec.gpu_sharing.as_ref()),
            self.fleet.operators_for(&t).gpu_operator.mig_strategy,
            nim.spec.mig_profile.as_deref(),
            nim.spec.gpus_per_replica,
        );
        let (resources, dra) = gpu_request(&request);
        let mut spec = json!({
            "image": { "repository": repo, "tag": tag, "pullSecrets": ["ngc-pull"] },
            "authSecret": "ngc-api",
            "replicas": nim.spec.replicas,
            "resources": resources,
            "expose": { "service": { "type": "ClusterIP", "port": 8000 } },
        });
        if let Some(d) = dra {
            spec["draResources"] = d;
        }
        if cache_id.is_some() {
            spec["storage"] = json!({ "nimCache": { "name": nim.name() } });
        }
        let svc = json!({ "apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMService", "metadata": { "name": nim.name(), "namespace": ns }, "spec": spec });
        let id = self.kube(&t, svc, origin);
        self.dep(
            &id,
            cluster_policy,
            "NIM workloads need the GPU Operator ready",
        );
        self.dep(&id, &ns_id, format!("namespace {ns} first"));
        // Only the service's image is pinned: the NIMCache's `modelPuller` is immutable
        // (NIM Operator CRD), so pinning it would turn every tag move into a destructive
        // replace of the model cache, for an image that only downloads the model once.
        self.pin(&id, "/object/spec/image/tag", &image_id, nim);
        for dep in [pull, auth_id, cache_id, image_id].into_iter().flatten() {
            let reason = match dep.provider() {
                "ngc" => format!("image tag {repo}:{tag} must resolve in the registry"),
                _ if dep.as_str().contains("NIMCache") => {
                    "the model cache is filled before the service starts".into()
                }
                _ => "credentials before anything that pulls from NGC".into(),
            };
            self.dep(&id, &dep, reason);
        }
    }

    /// With `registries.pinDigests`, records that the string at `path` of
    /// `id` gets the digest of `image` appended at plan time, and orders the
    /// image first so its digest is known before the object is observed.
    fn pin(&mut self, id: &ResourceId, path: &str, image: &Option<ResourceId>, nim: &NimService) {
        let Some(image) = image else { return };
        if !self.fleet.fleet.spec.registries.pin_digests {
            return;
        }
        let origin = self.origin(nim.doc, "/spec/image", &nim.origin);
        if let Some(d) = self.out.get_mut(id) {
            d.pins.push(crate::resource::Pin {
                path: path.into(),
                image: image.clone(),
                origin: Some(origin),
            });
        }
        self.dep(id, image, format!("pins the digest of {image}"));
    }

    /// An ngc image resource for a NIM's image, resolved against the fleet's registry endpoint.
    pub(super) fn image(
        &mut self,
        tenant: &Tenant,
        nim: &NimService,
        image: &ImageRef,
        host: &str,
        repository: &str,
    ) -> Option<ResourceId> {
        let registry = &self.fleet.fleet.spec.registries.ngc;
        let tag = image.reference();
        let user = registry.username.as_deref().unwrap_or("$oauthtoken");
        // The tenant's own key, else the fleet-wide one: resolving a digest runs in fleetform,
        // so the fleet key never reaches a tenant cluster (pull secrets use tenant keys only).
        let credentials = tenant
            .spec
            .ngc
            .as_ref()
            .map(|n| &n.api_key)
            .or(registry.api_key.as_ref())
            .map(|key| json!({ "username": user, "password": key }));
        let spec = json!({
            "tenant": tenant.name(),
            "registry": { "endpoint": registry.endpoint, "insecure": registry.insecure, "caBundle": registry.ca_bundle },
            "repository": repository, "tag": tag, "credentials": credentials,
        });
        let id = ResourceId::new(
            "ngc",
            format!("image/{}/{host}/{repository}:{tag}", tenant.name()),
        );
        let mut d = Desired::new(id.clone(), strip_nulls(spec));
        d.origin = Some(self.origin(nim.doc, "/spec/image", &nim.origin));
        self.add(d);
        Some(id)
    }
}

/// The NIMService fields that ask for the GPUs of one replica: a device-plugin limit,
/// or a DRA claim the NIM Operator generates (`draResources`), as [`sharing::request`]
/// says the pool's sharing mode exposes them.
fn gpu_request(request: &sharing::Request) -> (Value, Option<Value>) {
    match request {
        sharing::Request::Extended { resource, count } => (
            json!({ "limits": { resource.as_str(): count.to_string() } }),
            None,
        ),
        sharing::Request::Dra {
            class,
            profile,
            count,
        } => {
            let mut device = json!({
                "name": class.device_type(), "deviceClassName": class.name(),
                "driverName": class.driver(), "count": count,
            });
            if let Some(p) = profile {
                device["attributeSelectors"] =
                    json!([{ "key": "profile", "op": "Equal", "value": { "stringValue": p } }]);
            }
            (
                json!({}),
                Some(json!([{ "claimCreationSpec": { "devices": [device] } }])),
            )
        }
    }
}
