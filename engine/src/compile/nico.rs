//! Hosts NICo manages: `Fleet.spec.nico` and every host with `managedBy: nico` become `nico:`
//! resources (providers/nico); such hosts get no `redfish:` resources, since NICo owns their BMCs.
//!
//! - each instance type → `nico:<site>/instance-type/<name>`;
//! - each allocation → `nico:<site>/allocation/<name>`, a `Reserved` constraint of `count`
//!   machines of its instance type;
//! - each VPC → `nico:<site>/vpc/<name>`, each subnet → `nico:<site>/subnet/<name>`;
//! - each host → `nico:<site>/machine/<machineId>` (NICo's machine, given the instance type)
//!   and `nico:<site>/instance/<host>` on it.
//!
//! Edges, with reasons: allocation → its instance type; subnet → its VPC; machine → its
//! instance type; instance → its machine, its instance type, the allocations of that type (the
//! tenant needs the quota), its VPC and subnet.

use fleetform_contract::address::nico_id;
use serde_json::{Map, Value, json};

use super::Cx;
use crate::manifest::{Host, ManagedBy, NicoSite};
use crate::resource::Desired;

/// A `nico:` spec. `fleet` names the owner: NICo objects carry it in their ownership mark,
/// so two fleets sharing an org and site never adopt each other's objects.
fn spec(site: &NicoSite, fleet: &str, kind: &str, name: &str, fields: Value, refs: Value) -> Value {
    json!({
        "endpoint": site.endpoint, "org": site.org, "site": site.site, "token": site.token,
        "kind": kind, "name": name, "fields": fields, "refs": refs, "fleet": fleet,
    })
}

fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .collect::<Map<_, _>>(),
        ),
        v => v,
    }
}

impl Cx<'_> {
    /// Emits the `nico:` resources of the fleet's NICo site and its hosts.
    pub(super) fn nico(&mut self) {
        let Some(site) = self.fleet.fleet.spec.nico.clone() else {
            return;
        };
        let fleet = self.fleet.fleet.name().to_string();
        let fdoc = self.fleet.fleet.doc;
        let forigin = self.fleet.fleet.origin.clone();
        let s = site.site.as_str();
        for (i, t) in site.instance_types.iter().enumerate() {
            let fields = without_nulls(json!({
                "siteId": site.site_id,
                "description": t.description,
                "labels": if t.labels.is_empty() { Value::Null } else { json!(t.labels) },
                "machineCapabilities": if t.machine_capabilities.is_empty() { Value::Null } else { json!(t.machine_capabilities) },
            }));
            let mut d = Desired::new(
                nico_id(s, "instance-type", &t.name),
                spec(&site, &fleet, "instance-type", &t.name, fields, json!({})),
            );
            d.origin = Some(self.origin(fdoc, &format!("/spec/nico/instanceTypes/{i}"), &forigin));
            self.add(d);
        }
        for (i, a) in site.allocations.iter().enumerate() {
            let fields = json!({
                "tenantId": site.tenant_id, "siteId": site.site_id,
                "allocationConstraints": [{"resourceType": "InstanceType", "constraintType": "Reserved", "constraintValue": a.count}],
            });
            let refs = json!({"/allocationConstraints/0/resourceTypeId": {"kind": "instance-type", "name": a.instance_type}});
            let mut d = Desired::new(
                nico_id(s, "allocation", &a.name),
                spec(&site, &fleet, "allocation", &a.name, fields, refs),
            );
            d.origin = Some(self.origin(fdoc, &format!("/spec/nico/allocations/{i}"), &forigin));
            let id = d.id.clone();
            self.add(d);
            self.dep(
                &id,
                &nico_id(s, "instance-type", &a.instance_type),
                format!(
                    "allocation {} reserves machines of instance type {}",
                    a.name, a.instance_type
                ),
            );
        }
        for (i, v) in site.vpcs.iter().enumerate() {
            let fields = without_nulls(json!({
                "siteId": site.site_id,
                "labels": if v.labels.is_empty() { Value::Null } else { json!(v.labels) },
            }));
            let vid = nico_id(s, "vpc", &v.name);
            let mut d = Desired::new(
                vid.clone(),
                spec(&site, &fleet, "vpc", &v.name, fields, json!({})),
            );
            d.origin = Some(self.origin(fdoc, &format!("/spec/nico/vpcs/{i}"), &forigin));
            self.add(d);
            for (j, n) in v.subnets.iter().enumerate() {
                let fields = without_nulls(
                    json!({"prefixLength": n.prefix_length, "ipv4BlockId": n.ipv4_block_id}),
                );
                let refs = json!({"/vpcId": {"kind": "vpc", "name": v.name}});
                let mut d = Desired::new(
                    nico_id(s, "subnet", &n.name),
                    spec(&site, &fleet, "subnet", &n.name, fields, refs),
                );
                d.origin =
                    Some(self.origin(fdoc, &format!("/spec/nico/vpcs/{i}/subnets/{j}"), &forigin));
                let id = d.id.clone();
                self.add(d);
                self.dep(
                    &id,
                    &vid,
                    format!("subnet {} is carved from VPC {}", n.name, v.name),
                );
            }
        }
        let hosts: Vec<Host> = self
            .fleet
            .hosts
            .iter()
            .filter(|h| h.spec.managed_by == Some(ManagedBy::Nico))
            .cloned()
            .collect();
        for h in &hosts {
            let Some(n) = &h.spec.nico else { continue };
            let mut fields = json!({
                "tenantId": site.tenant_id,
                "machineId": n.machine_id,
                "interfaces": [{"isPhysical": true}],
            });
            if !n.labels.is_empty() {
                fields["labels"] = json!(n.labels);
            }
            let mut refs = json!({
                "/instanceTypeId": {"kind": "instance-type", "name": n.instance_type},
                "/vpcId": {"kind": "vpc", "name": n.vpc},
                "/interfaces/0/subnetId": {"kind": "subnet", "name": n.subnet},
            });
            if let Some(os) = &n.operating_system {
                refs["/operatingSystemId"] = json!({"kind": "operating-system", "name": os});
            }
            let mut d = Desired::new(
                nico_id(s, "instance", h.name()),
                spec(&site, &fleet, "instance", h.name(), fields, refs),
            );
            d.origin = Some(self.origin(h.doc, "/spec/nico", &h.origin));
            let id = d.id.clone();
            self.add(d);
            let it = nico_id(s, "instance-type", &n.instance_type);
            // The machine (NICo's, found by id) is given the instance type first.
            let mut m = Desired::new(
                nico_id(s, "machine", &n.machine_id),
                spec(
                    &site,
                    &fleet,
                    "machine",
                    &n.machine_id,
                    json!({}),
                    json!({"/instanceTypeId": {"kind": "instance-type", "name": n.instance_type}}),
                ),
            );
            m.origin = Some(self.origin(h.doc, "/spec/nico/machineId", &h.origin));
            let mid = m.id.clone();
            self.add(m);
            self.dep(
                &mid,
                &it,
                format!(
                    "machine {} of host {} is assigned instance type {}",
                    n.machine_id,
                    h.name(),
                    n.instance_type
                ),
            );
            self.dep(
                &id,
                &mid,
                format!(
                    "an instance of type {} lands only on a machine of that type",
                    n.instance_type
                ),
            );
            self.dep(
                &id,
                &it,
                format!(
                    "host {} is an instance of type {}",
                    h.name(),
                    n.instance_type
                ),
            );
            for a in site
                .allocations
                .iter()
                .filter(|a| a.instance_type == n.instance_type)
            {
                self.dep(
                    &id,
                    &nico_id(s, "allocation", &a.name),
                    format!(
                        "the tenant may run {} instances only once allocation {} reserves them",
                        n.instance_type, a.name
                    ),
                );
            }
            self.dep(
                &id,
                &nico_id(s, "vpc", &n.vpc),
                format!("host {} joins VPC {}", h.name(), n.vpc),
            );
            self.dep(
                &id,
                &nico_id(s, "subnet", &n.subnet),
                format!("host {}'s interface is on subnet {}", h.name(), n.subnet),
            );
        }
    }
}
