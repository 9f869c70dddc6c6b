//! The daemon's `/metrics`: an OpenMetrics registry with the figures an
//! operator alerts on (stale revision, failed reconciles, drift).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RevisionLabels {
    commit: String,
    reference: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResourceLabels {
    provider: String,
    state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DriftLabels {
    tenant: String,
    provider: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
}

/// fleetform's metrics. Cheap to share (`Arc<Metrics>`); every setter takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    revision: Family<RevisionLabels, Gauge>,
    last_apply: Gauge<f64, AtomicU64>,
    reconcile: Histogram,
    resources: Family<ResourceLabels, Gauge>,
    drifted: Family<DriftLabels, Gauge>,
    errors: Family<ErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every fleetform metric registered (all `fleetform_`-prefixed).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetform");
        let revision = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "last_applied_revision",
            "The revision last applied: 1 for the current commit and ref, no other series",
            revision.clone(),
        );
        let last_apply = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_apply_timestamp_seconds",
            "Unix time of the last successful apply",
            last_apply.clone(),
        );
        let reconcile = Histogram::new(exponential_buckets(0.25, 2.0, 12));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile (fetch to report)",
            reconcile.clone(),
        );
        let resources = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "resources",
            "Managed resources by provider and state",
            resources.clone(),
        );
        let drifted = Family::<DriftLabels, Gauge>::default();
        registry.register(
            "drifted_resources",
            "Resources whose live state differs from the manifest",
            drifted.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Errors by kind (fetch, verify, validate, apply, notify…)",
            errors.clone(),
        );
        Self {
            registry,
            revision,
            last_apply,
            reconcile,
            resources,
            drifted,
            errors,
        }
    }

    /// Records a successful apply of `commit` (from `reference`, e.g. `branch main`) at `unix_seconds`.
    pub fn applied(&self, commit: &str, reference: &str, unix_seconds: f64) {
        self.revision.clear();
        self.revision
            .get_or_create(&RevisionLabels {
                commit: commit.into(),
                reference: reference.into(),
            })
            .set(1);
        self.last_apply.set(unix_seconds);
    }

    /// Records how long a reconcile took.
    pub fn observe_reconcile(&self, seconds: f64) {
        self.reconcile.observe(seconds);
    }

    /// Replaces the resource counts: `((provider, state), count)`.
    pub fn set_resources<'a>(&self, counts: impl IntoIterator<Item = ((&'a str, &'a str), i64)>) {
        self.resources.clear();
        for ((provider, state), n) in counts {
            self.resources
                .get_or_create(&ResourceLabels {
                    provider: provider.into(),
                    state: state.into(),
                })
                .set(n);
        }
    }

    /// Replaces the drift counts: `((tenant, provider), count)`.
    pub fn set_drifted<'a>(&self, counts: impl IntoIterator<Item = ((&'a str, &'a str), i64)>) {
        self.drifted.clear();
        for ((tenant, provider), n) in counts {
            self.drifted
                .get_or_create(&DriftLabels {
                    tenant: tenant.into(),
                    provider: provider.into(),
                })
                .set(n);
        }
    }

    /// Counts one error of a kind.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }

    /// The OpenMetrics text exposition (serve it with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// A strict-enough reader of the text format: every line is HELP, TYPE,
    /// UNIT, EOF or a sample of a declared family with a numeric value.
    fn parse(text: &str) -> BTreeMap<String, f64> {
        let mut families: BTreeMap<String, String> = BTreeMap::new();
        let mut helped = BTreeSet::new();
        let mut samples = BTreeMap::new();
        let mut eof = false;
        for line in text.lines() {
            assert!(!eof, "content after # EOF: {line}");
            if line == "# EOF" {
                eof = true;
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty());
                helped.insert(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "info", "unknown"].contains(&ty),
                    "{line}"
                );
                families.insert(name.to_string(), ty.to_string());
            } else {
                assert!(!line.starts_with('#'), "unknown comment line: {line}");
                let (series, value) = line.rsplit_once(' ').unwrap();
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line}"));
                let name = series.split('{').next().unwrap();
                if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                    for pair in labels[1..labels.len() - 1].split("\",") {
                        let (k, v) = pair.split_once('=').unwrap();
                        assert!(
                            k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                            "{line}"
                        );
                        assert!(v.starts_with('"'), "{line}");
                    }
                }
                let family = families
                    .keys()
                    .filter(|f| {
                        name == f.as_str()
                            || name
                                .strip_prefix(f.as_str())
                                .is_some_and(|s| s.starts_with('_'))
                    })
                    .max_by_key(|f| f.len())
                    .unwrap_or_else(|| panic!("sample {name} without a TYPE"));
                assert!(helped.contains(family), "{family} has no HELP");
                samples.insert(series.to_string(), value);
            }
        }
        assert!(eof, "no # EOF");
        samples
    }

    #[test]
    fn the_exposition_parses_back_with_every_metric() {
        let m = Metrics::new();
        m.applied("4f2a9c0e", "branch main", 1_764_200_000.0);
        m.applied("5e3b0d1f", "branch main", 1_764_200_060.5);
        m.observe_reconcile(1.5);
        m.observe_reconcile(30.0);
        m.set_resources([(("kube", "ready"), 12), (("redfish", "pending"), 3)]);
        m.set_drifted([(("acme", "kube"), 2)]);
        m.error("fetch");
        m.error("fetch");
        m.error("apply");
        let text = m.encode();
        let s = parse(&text);
        assert_eq!(
            s["fleetform_last_applied_revision{commit=\"5e3b0d1f\",reference=\"branch main\"}"],
            1.0
        );
        assert!(
            !text.contains("4f2a9c0e"),
            "the previous revision's series is gone:\n{text}"
        );
        assert_eq!(s["fleetform_last_apply_timestamp_seconds"], 1_764_200_060.5);
        assert_eq!(s["fleetform_reconcile_duration_seconds_count"], 2.0);
        assert_eq!(s["fleetform_reconcile_duration_seconds_sum"], 31.5);
        assert_eq!(
            s["fleetform_resources{provider=\"kube\",state=\"ready\"}"],
            12.0
        );
        assert_eq!(
            s["fleetform_drifted_resources{tenant=\"acme\",provider=\"kube\"}"],
            2.0
        );
        assert_eq!(s["fleetform_errors_total{kind=\"fetch\"}"], 2.0);
        assert_eq!(s["fleetform_errors_total{kind=\"apply\"}"], 1.0);
    }
}
