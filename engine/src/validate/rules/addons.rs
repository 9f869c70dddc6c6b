//! Rules of the add-ons compile/addons.rs emits (KAI queues, Kyverno policies, Karpenter).

use std::collections::HashMap;

use crate::manifest::*;
use crate::validate::Cx;
use crate::validate::suggest::did_you_mean;

impl Cx<'_> {
    pub(super) fn addons(&mut self, f: &Fleet) {
        self.kai_queues(f);
        self.signed_images(f);
        self.karpenter_hosts(f);
    }

    /// Every queue's parent exists and is not its own ancestor; children's GPU quotas fit
    /// in their parent's (KAI gives a parent's quota out to its children).
    fn kai_queues(&mut self, f: &Fleet) {
        let Some(kai) = &f.fleet.spec.schedulers.kai else {
            return;
        };
        let i = f.fleet.doc.0;
        let by_name: HashMap<&str, (usize, &KaiQueue)> = kai
            .queues
            .iter()
            .enumerate()
            .map(|(n, q)| (q.name.as_str(), (n, q)))
            .collect();
        for (n, q) in kai.queues.iter().enumerate() {
            let Some(parent) = &q.parent else { continue };
            let ptr = format!("/spec/schedulers/kai/queues/{n}/parent");
            if !by_name.contains_key(parent.as_str()) {
                let names: Vec<&str> = kai.queues.iter().map(|q| q.name.as_str()).collect();
                let mut e = self.err(
                    "kai-queue-parent",
                    i,
                    &ptr,
                    format!(
                        "queue `{}` names parent `{parent}`, which is not a queue",
                        q.name
                    ),
                );
                e = match did_you_mean(parent, names.iter().copied()) {
                    Some(s) => e.hint(format!("did you mean `{s}`?")),
                    None => e.hint(
                        "add the parent queue, or drop `parent` to make this a top-level queue",
                    ),
                };
                self.push(e);
                continue;
            }
            // Walk up: a queue met twice is a cycle.
            let mut seen = vec![q.name.as_str()];
            let mut at = parent.as_str();
            while let Some((_, up)) = by_name.get(at) {
                if seen.contains(&at) {
                    if at == q.name {
                        let e = self
                            .err(
                                "kai-queue-parent",
                                i,
                                &ptr,
                                format!(
                                    "queue `{}` is its own ancestor ({} -> {at})",
                                    q.name,
                                    seen.join(" -> ")
                                ),
                            )
                            .hint("queues form a tree: one queue of the loop must be top-level");
                        self.push(e);
                    }
                    break;
                }
                seen.push(at);
                match &up.parent {
                    Some(p) => at = p.as_str(),
                    None => break,
                }
            }
        }
        // Children's quotas against their parent's (unlimited parents take anything).
        for parent in &kai.queues {
            let Some(limit) = parent.gpu_quota.filter(|q| *q >= 0.0) else {
                continue;
            };
            let mut sum = 0.0;
            for (n, q) in kai.queues.iter().enumerate() {
                if q.parent.as_deref() != Some(parent.name.as_str()) {
                    continue;
                }
                let quota = q.gpu_quota.unwrap_or(0.0);
                if quota < 0.0 || sum + quota > limit {
                    let what = if quota < 0.0 {
                        "an unlimited GPU quota (-1)".to_string()
                    } else {
                        format!("GPU quota {quota} (siblings before it: {sum})")
                    };
                    let e = self
                        .err(
                            "kai-queue-quota",
                            i,
                            &format!("/spec/schedulers/kai/queues/{n}/gpuQuota"),
                            format!(
                                "queue `{}` asks for {what}, past parent `{}`'s GPU quota {limit}",
                                q.name, parent.name
                            ),
                        )
                        .hint("children share their parent's quota: lower theirs, or raise the parent's (-1 = unlimited)");
                    self.push(e);
                    break;
                }
                sum += quota;
            }
        }
    }

    /// A signed-images policy has keys to verify with, and Kyverno to enforce it.
    fn signed_images(&mut self, f: &Fleet) {
        let p = &f.fleet.spec.policies;
        let Some(s) = &p.signed_images else { return };
        let i = f.fleet.doc.0;
        if s.keys.is_empty() {
            let e = self
                .err_key(
                    "signed-images",
                    i,
                    "/spec/policies/signedImages",
                    "signedImages lists no keys, so no image could ever pass verification",
                )
                .hint("add `keys: [path/to/cosign.pub]` (paths relative to the fleet directory)");
            self.push(e);
        } else if p.kyverno.is_none() {
            let e = self
                .err_key(
                    "signed-images",
                    i,
                    "/spec/policies/signedImages",
                    "signedImages is enforced by Kyverno, but `policies.kyverno` is not set",
                )
                .hint("add `policies.kyverno: {version: ...}`");
            self.push(e);
        }
    }

    /// Karpenter picks a pool's hosts, so the pool must not list them.
    fn karpenter_hosts(&mut self, f: &Fleet) {
        for p in &f.pools {
            if p.spec.autoscaling.as_ref().is_some_and(|a| a.karpenter) && !p.spec.hosts.is_empty()
            {
                let e = self
                    .err(
                        "karpenter-hosts",
                        p.doc.0,
                        "/spec/autoscaling/karpenter",
                        format!(
                            "pool {} is scaled by Karpenter but lists its hosts; a fixed list cannot grow or shrink",
                            p.name()
                        ),
                    )
                    .hint("replace `hosts` with `selector: {rack: ..., gpuModel: ..., count: N}`, or drop `karpenter`");
                self.push(e);
            }
        }
    }
}
