//! The typed model: each document's `spec` deserialised into its kind's type (errors
//! located at the failing field), and exactly one Fleet document.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Cx, field_path};
use crate::diag::{Diagnostic, Span};
use crate::load::escape_segment;
use crate::manifest::*;

impl Cx<'_> {
    // ------------------------------------------------------------ typed model

    fn spec<T: DeserializeOwned>(&mut self, i: usize) -> Option<T> {
        let d = &self.docs[i];
        let spec = d.value.get("spec").unwrap_or(&Value::Null);
        match serde_path_to_error::deserialize::<_, T>(spec) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut ptr = String::from("/spec");
                for seg in e.path().iter() {
                    use serde_path_to_error::Segment;
                    match seg {
                        Segment::Seq { index } => ptr.push_str(&format!("/{index}")),
                        Segment::Map { key } => ptr.push_str(&format!("/{}", escape_segment(key))),
                        Segment::Enum { variant } => {
                            ptr.push_str(&format!("/{}", escape_segment(variant)))
                        }
                        Segment::Unknown => {}
                    }
                }
                let msg = e.inner().to_string();
                let diag = self.err("schema", i, &ptr, format!("`{}`: {msg}", field_path(&ptr)));
                self.push(diag);
                None
            }
        }
    }

    pub(super) fn typed(&mut self) -> Option<Fleet> {
        let mut fleet_docs = Vec::new();
        let mut racks = Vec::new();
        let mut hosts = Vec::new();
        let mut tenants = Vec::new();
        let mut pools = Vec::new();
        let mut nims = Vec::new();
        for (i, d) in self.docs.iter().enumerate() {
            let meta: Metadata = match serde_json::from_value(
                d.value.get("metadata").cloned().unwrap_or(Value::Null),
            ) {
                Ok(m) => m,
                Err(e) => {
                    let diag = self.err("schema", i, "/metadata", format!("`metadata`: {e}"));
                    self.push(diag);
                    continue;
                }
            };
            let origin = d.origin.clone();
            let doc = DocId(i);
            macro_rules! push {
                ($list:ident, $t:ty) => {
                    if let Some(spec) = self.spec::<$t>(i) {
                        $list.push(Doc {
                            metadata: meta,
                            spec,
                            origin,
                            doc,
                        });
                    }
                };
            }
            match Kind::parse(d.kind().unwrap_or("")) {
                Some(Kind::Fleet) => push!(fleet_docs, FleetSpec),
                Some(Kind::Rack) => push!(racks, RackSpec),
                Some(Kind::Host) => push!(hosts, HostSpec),
                Some(Kind::Tenant) => push!(tenants, TenantSpec),
                Some(Kind::NodePool) => push!(pools, NodePoolSpec),
                Some(Kind::NimService) => push!(nims, NimServiceSpec),
                None => {}
            }
        }
        if fleet_docs.len() != 1 {
            if fleet_docs.is_empty() {
                let mut d = Diagnostic::error("fleet-singleton", "no `kind: Fleet` document")
                    .hint("a fleet needs exactly one Fleet document with registries, operators and the management cluster");
                if let Some(first) = self.docs.first() {
                    d = d.at(Some(Span {
                        file: first.file.clone(),
                        line: 1,
                        column: 1,
                    }));
                }
                self.push(d);
            } else {
                for f in &fleet_docs[1..] {
                    let first = &fleet_docs[0].origin;
                    let d = self
                        .err_key(
                            "fleet-singleton",
                            f.doc.0,
                            "/kind",
                            format!("a second `kind: Fleet` document (the first is at {first})"),
                        )
                        .hint("keep exactly one Fleet document");
                    self.push(d);
                }
            }
        }
        if !self.diags.is_empty() {
            return None;
        }
        let fleet = fleet_docs.pop()?;
        {
            let list = &mut racks;
            list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        }
        hosts.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        tenants.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        nims.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Some(Fleet {
            fleet,
            racks,
            hosts,
            tenants,
            pools,
            nims,
            pool_members: BTreeMap::new(),
            tenant_operators: BTreeMap::new(),
            spans: self
                .docs
                .iter()
                .map(|d| d.spans.clone())
                .collect::<Vec<Arc<_>>>(),
        })
    }

    // ------------------------------------------------------------ rules
}
