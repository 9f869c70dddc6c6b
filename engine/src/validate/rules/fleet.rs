//! The Fleet document's own settings: endpoints are URLs, budgets can be met.

use crate::manifest::*;
use crate::validate::Cx;

impl Cx<'_> {
    pub(super) fn fleet_settings(&mut self, f: &Fleet) {
        let i = f.fleet.doc.0;
        let s = &f.fleet.spec;
        self.url(
            i,
            "/spec/registries/ngc/endpoint",
            &s.registries.ngc.endpoint.clone(),
        );
        if let Some(p) = &s.observability.otel {
            self.url(i, "/spec/observability/otel/endpoint", &p.endpoint);
        }
        if s.rollout.max_unavailable == 0 || s.rollout.max_unavailable_per_fault_domain == 0 {
            let which = if s.rollout.max_unavailable == 0 {
                "maxUnavailable"
            } else {
                "maxUnavailablePerFaultDomain"
            };
            let e = self
                .err(
                    "rollout-budget",
                    i,
                    &format!("/spec/rollout/{which}"),
                    "a disruption budget of 0 blocks every disruptive change forever",
                )
                .hint("use at least 1; to pause changes, stop applying instead");
            self.push(e);
        }
        let frac = s.prune.max_delete_fraction;
        if !(frac > 0.0 && frac <= 1.0) {
            let e = self
                .err(
                    "prune-fraction",
                    i,
                    "/spec/prune/maxDeleteFraction",
                    format!("maxDeleteFraction {frac} is outside (0, 1]"),
                )
                .hint("0.3 refuses plans that delete more than 30% of managed resources");
            self.push(e);
        }
    }
}
