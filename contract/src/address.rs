//! Addresses: one function per kind of address, used by compile (which names
//! the resources) and by the providers (which find them again) alike, so the
//! two can never build the same address two ways.

use serde_json::Value;

use crate::resource::ResourceId;

/// The provider name of Kubernetes objects.
pub const KUBE: &str = "kube";

/// The address of a Kubernetes object in a named cluster:
/// `kube:<cluster>/<apiVersion>/<kind>[/<namespace>]/<name>`, with `apiVersion`
/// as `v1` or `group/version`: `kube:acme/nvidia.com/v1/ClusterPolicy/cluster-policy`,
/// `kube:acme/v1/Namespace/gpu-operator`, `kube:acme/v1/ConfigMap/gpu-operator/mig-config`.
///
/// A cluster-scoped object has no namespace segment, and an empty namespace
/// counts as none (the API server treats `namespace: ""` as absent), so no
/// address ever holds `//`. Missing `apiVersion`, `kind` or `name` show as `_`
/// (the kube provider then refuses the object with a clear message).
pub fn kube_object_id(cluster: &str, object: &Value) -> ResourceId {
    let s = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("_")
    };
    let mut path = format!("{cluster}/{}/{}", s("/apiVersion"), s("/kind"));
    if let Some(ns) = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
    {
        path.push('/');
        path.push_str(ns);
    }
    path.push('/');
    path.push_str(s("/metadata/name"));
    ResourceId::new(KUBE, path)
}

/// The address of a Kubernetes Node (cluster-scoped, core API group):
/// `kube:<cluster>/v1/Node/<node>`. The same as [`kube_object_id`] of the Node object.
pub fn kube_node_id(cluster: &str, node: &str) -> ResourceId {
    ResourceId::new(KUBE, format!("{cluster}/v1/Node/{node}"))
}

/// The provider name of NICo objects.
pub const NICO: &str = "nico";

/// The address of an object in a NICo site: `nico:<site>/<kind>/<name>`, e.g.
/// `nico:pdx-1/instance-type/gb200`. NICo names are unique per tenant and site.
pub fn nico_id(site: &str, kind: &str, name: &str) -> ResourceId {
    ResourceId::new(NICO, format!("{site}/{kind}/{name}"))
}

/// The cluster a Kubernetes object's address names (its first path segment),
/// `None` for an address of another provider.
pub fn kube_cluster(id: &ResourceId) -> Option<&str> {
    (id.provider() == KUBE).then(|| id.path().split('/').next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn namespaced_object_has_a_namespace_segment() {
        let id = kube_object_id(
            "acme",
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"namespace": "gpu-operator", "name": "mig-config"}}),
        );
        assert_eq!(
            id.as_str(),
            "kube:acme/v1/ConfigMap/gpu-operator/mig-config"
        );
    }

    #[test]
    fn empty_namespace_is_cluster_scoped_never_a_double_slash() {
        let object = |ns: Option<&str>| {
            let mut o = json!({"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy",
                               "metadata": {"name": "cluster-policy"}});
            if let Some(ns) = ns {
                o["metadata"]["namespace"] = json!(ns);
            }
            o
        };
        let expected = "kube:acme/nvidia.com/v1/ClusterPolicy/cluster-policy";
        assert_eq!(kube_object_id("acme", &object(None)).as_str(), expected);
        assert_eq!(kube_object_id("acme", &object(Some(""))).as_str(), expected);
    }

    #[test]
    fn missing_fields_show_as_underscore() {
        let id = kube_object_id("acme", &json!({"kind": "Namespace"}));
        assert_eq!(id.as_str(), "kube:acme/_/Namespace/_");
    }

    #[test]
    fn node_address_is_the_node_objects_address() {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "r01-n03"}});
        assert_eq!(
            kube_node_id("acme", "r01-n03"),
            kube_object_id("acme", &node)
        );
    }

    #[test]
    fn cluster_of_an_address() {
        assert_eq!(
            kube_cluster(&ResourceId::new("kube", "acme/v1/Namespace/ml")),
            Some("acme")
        );
        assert_eq!(
            kube_cluster(&ResourceId::new("redfish", "host/r01/bios")),
            None
        );
    }
}
