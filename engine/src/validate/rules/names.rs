//! Names: DNS labels, unique per kind.

use crate::manifest::*;
use crate::validate::Cx;

impl Cx<'_> {
    pub(super) fn names(&mut self, f: &Fleet) {
        fn check<S>(cx: &mut Cx<'_>, kind: Kind, list: &[Doc<S>]) {
            let mut prev: Option<&Doc<S>> = None;
            for d in list {
                let n = &d.metadata.name;
                let valid = !n.is_empty()
                    && n.len() <= 63
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !n.starts_with('-')
                    && !n.ends_with('-');
                if !valid {
                    let e = cx
                        .err("invalid-name", d.doc.0, "/metadata/name", format!("{kind} name `{n}` is not a DNS label"))
                        .hint("use lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit");
                    cx.push(e);
                }
                if let Some(p) = prev
                    && p.metadata.name == *n
                {
                    let e = cx
                        .err(
                            "duplicate-name",
                            d.doc.0,
                            "/metadata/name",
                            format!("{kind} `{n}` is defined twice (also at {})", p.origin),
                        )
                        .hint("names are unique per kind; rename one");
                    cx.push(e);
                }
                prev = Some(d);
            }
        }
        check(self, Kind::Fleet, std::slice::from_ref(&f.fleet));
        check(self, Kind::Rack, &f.racks);
        check(self, Kind::Host, &f.hosts);
        check(self, Kind::Tenant, &f.tenants);
        check(self, Kind::NodePool, &f.pools);
        check(self, Kind::NimService, &f.nims);
    }
}
