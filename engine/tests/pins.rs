//! Digest pinning (`registries.pinDigests`) end to end with in-memory
//! providers standing in for kube, redfish and ngc: compile records the pins,
//! plan substitutes the digest each image tag resolved to, apply applies and
//! records exactly that, and a tag moving upstream becomes a planned update.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use fleetform_engine::apply::ApplyOptions;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::provider::Action;
use fleetform_engine::reconcile::{ObserveOptions, Planned, make_plan, run_apply};
use fleetform_engine::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_engine::testing::{MemoryProvider, Script};
use fleetform_engine::{Desired, ResourceId, Sensitive, compile, load, report, synth, validate};
use serde_json::{Value, json};

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

struct FixedSecrets;
impl SecretResolver for FixedSecrets {
    fn resolve(&self, _r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new("pin-test-secret".into()))
    }
}

/// A small synthetic fleet (one tenant, one cached NIM), compiled with pinning on or off.
fn compiled(pin: bool) -> Vec<Desired> {
    let (docs, diags) = load::load(&synth::synthetic_fleet(4, 1));
    assert!(diags.is_empty(), "{diags:?}");
    let mut fleet = validate::validate(&docs).expect("valid");
    fleet.fleet.spec.registries.pin_digests = pin;
    compile::compile(&fleet, &FixedSecrets)
        .expect("compiles")
        .resources
}

fn nim_objects(desired: &[Desired]) -> Vec<&Desired> {
    desired
        .iter()
        .filter(|d| d.id.as_str().contains("/NIMService/"))
        .collect()
}

fn nim_cache(desired: &[Desired]) -> &Desired {
    desired
        .iter()
        .find(|d| d.id.as_str().contains("/NIMCache/"))
        .expect("the synthetic NIM has a cache")
}

fn images(desired: &[Desired]) -> Vec<&Desired> {
    desired
        .iter()
        .filter(|d| d.id.as_str().starts_with("ngc:image/"))
        .collect()
}

struct World {
    ngc: Arc<MemoryProvider>,
    kube: Arc<MemoryProvider>,
    providers: Providers,
    store: LocalStateStore,
    _dir: tempfile::TempDir,
}

impl World {
    /// Every image of `desired` already in the registry at `digest`.
    fn new(desired: &[Desired], digest: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ngc = Arc::new(MemoryProvider::named("ngc"));
        let kube = Arc::new(MemoryProvider::named("kube"));
        let providers = Providers::new()
            .with(ngc.clone())
            .with(kube.clone())
            .with(Arc::new(MemoryProvider::named("redfish")));
        let store = LocalStateStore::open(dir.path().join("state")).expect("state store");
        let w = Self {
            ngc,
            kube,
            providers,
            store,
            _dir: dir,
        };
        for d in images(desired) {
            let mut live = d.spec.clone();
            live["digest"] = json!(digest);
            w.ngc.put(&d.id, live);
        }
        w
    }

    fn tag_moves(&self, desired: &[Desired], digest: &str) {
        for d in images(desired) {
            self.ngc.tamper(&d.id, |v| v["digest"] = json!(digest));
        }
    }

    async fn plan(&self, desired: &[Desired]) -> Planned {
        let state = self.store.load().await.expect("state loads");
        make_plan(
            desired,
            &state,
            &self.providers,
            &PlanOptions::default(),
            ObserveOptions::default(),
            Some("rev".into()),
        )
        .await
        .expect("present")
    }

    async fn apply(&self, planned: &Planned, desired: &[Desired]) {
        assert!(
            planned.plan.problems.is_empty(),
            "{:?}",
            planned.plan.problems
        );
        let mut state = self.store.load().await.expect("state loads");
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let options = ApplyOptions {
            base_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            health_poll: Duration::from_millis(1),
            health_timeout: Duration::from_secs(5),
            ..ApplyOptions::default()
        };
        let report = run_apply(
            planned,
            desired,
            &mut state,
            &self.store,
            &self.providers,
            &options,
            None,
            rx,
        )
        .await
        .expect("present");
        assert!(report.succeeded(), "{report:?}");
    }
}

fn pinned_field(v: &Value, _id: &ResourceId) -> Option<String> {
    v.pointer("/object/spec/image/tag")
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[test]
fn pinning_off_compiles_no_pins_and_keeps_the_tag_edge_reason() {
    let desired = compiled(false);
    assert!(desired.iter().all(|d| d.pins.is_empty()));
    let svc = nim_objects(&desired)
        .into_iter()
        .find(|d| d.id.as_str().contains("/NIMService/"))
        .expect("present");
    assert!(
        svc.deps
            .iter()
            .any(|e| e.reason.contains("must resolve in the registry"))
    );
    // The spec carries no pins field at all, so saved specs and goldens do not change.
    assert!(
        serde_json::to_value(svc)
            .expect("present")
            .get("pins")
            .is_none()
    );
}

#[test]
fn pinning_on_records_which_fields_take_the_digest_and_orders_the_image_first() {
    let desired = compiled(true);
    let objects = nim_objects(&desired);
    assert_eq!(objects.len(), 1, "one NIMService");
    // The cache's modelPuller is immutable in the NIM Operator CRD: pinning it would make
    // every tag move a destructive replace, so it keeps the tag.
    assert!(nim_cache(&desired).pins.is_empty());
    for d in objects {
        assert_eq!(d.pins.len(), 1, "{}", d.id);
        let pin = &d.pins[0];
        assert!(pin.image.as_str().starts_with("ngc:image/"));
        assert!(
            pin.origin
                .as_ref()
                .is_some_and(|o| o.file.ends_with("nims.yaml"))
        );
        let edge = d
            .deps
            .iter()
            .find(|e| e.on == pin.image)
            .expect("edge to the image");
        assert_eq!(edge.reason, format!("pins the digest of {}", pin.image));
        assert!(
            pinned_field(&d.spec, &d.id).is_some(),
            "{} has the pinned field",
            d.id
        );
    }
}

#[tokio::test]
async fn the_planned_applied_and_recorded_spec_carries_the_digest_and_a_replan_is_empty() {
    let desired = compiled(true);
    let w = World::new(&desired, D1);
    let planned = w.plan(&desired).await;
    let objects = nim_objects(&desired);
    for d in &objects {
        let c = planned
            .plan
            .changes
            .iter()
            .find(|c| c.id == d.id)
            .expect("present");
        assert_eq!(c.action, Action::Create);
        let shown = pinned_field(c.spec.as_ref().expect("present"), &d.id).expect("present");
        assert!(shown.ends_with(&format!("@{D1}")), "{shown}");
    }
    w.apply(&planned, &desired).await;

    let live = w.kube.world().objects;
    let state = w.store.load().await.expect("state loads");
    for d in &objects {
        let applied = pinned_field(&live[&d.id], &d.id).expect("present");
        assert!(applied.ends_with(&format!("@{D1}")), "applied {applied}");
        let recorded = state.resources[&d.id].spec.as_ref().expect("present");
        assert_eq!(
            pinned_field(recorded, &d.id).expect("present"),
            applied,
            "state records what was applied"
        );
    }
    let again = w.plan(&desired).await.plan;
    assert!(again.problems.is_empty(), "{:?}", again.problems);
    assert!(
        !again.summary.has_changes(),
        "{}",
        report::plan_text(&again, false)
    );
}

#[tokio::test]
async fn a_tag_moving_upstream_is_a_planned_update_from_the_old_digest_to_the_new() {
    let desired = compiled(true);
    let w = World::new(&desired, D1);
    let first = w.plan(&desired).await;
    w.apply(&first, &desired).await;
    let saved = w.plan(&desired).await.plan;

    w.tag_moves(&desired, D2);
    let moved = w.plan(&desired).await;
    let plan = &moved.plan;
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    let updates: Vec<_> = plan.actionable().collect();
    let objects = nim_objects(&desired);
    assert_eq!(
        updates.len(),
        objects.len(),
        "only the objects naming the image change"
    );
    for c in &updates {
        assert_eq!(c.action, Action::Update, "{}", c.id);
        assert_eq!(c.fields.len(), 1, "{:?}", c.fields);
        let f = &c.fields[0];
        let s = |v: &Option<Value>| v.as_ref().and_then(Value::as_str).unwrap_or("").to_string();
        assert!(s(&f.before).ends_with(&format!("@{D1}")), "{f:?}");
        assert!(s(&f.after).ends_with(&format!("@{D2}")), "{f:?}");
    }
    // Every rendering shows the new digest.
    assert!(report::plan_text(plan, false).contains(D2));
    assert!(report::plan_json(plan).contains(D2));
    assert!(report::plan_markdown(plan, "plan", &[]).contains(D2));
    // A plan saved before the tag moved no longer matches: apply of it is refused.
    assert_ne!(saved.digest, plan.digest);

    w.apply(&moved, &desired).await;
    for d in &objects {
        let applied = pinned_field(&w.kube.world().objects[&d.id], &d.id).expect("present");
        assert!(applied.ends_with(&format!("@{D2}")), "{applied}");
    }
    assert!(!w.plan(&desired).await.plan.summary.has_changes());
}

#[tokio::test]
async fn a_saved_plan_that_creates_a_pinned_object_is_refused_once_the_tag_moved() {
    let desired = compiled(true);
    let w = World::new(&desired, D1);
    let saved = w.plan(&desired).await.plan;
    w.tag_moves(&desired, D2);
    let fresh = w.plan(&desired).await.plan;
    // Both plans create the NIMService; only the pinned digest in its spec differs.
    assert_eq!(saved.summary, fresh.summary);
    assert_ne!(saved.digest, fresh.digest);
}

#[tokio::test]
async fn an_image_that_cannot_be_resolved_is_skipped_never_an_unpinned_apply() {
    let desired = compiled(true);
    let w = World::new(&desired, D1);
    let image = images(&desired)[0].id.clone();
    w.ngc.script(
        &image,
        Script {
            observe_fails: true,
            ..Script::default()
        },
    );
    let plan = w.plan(&desired).await.plan;
    for d in nim_objects(&desired) {
        // The registry's error was transient: the object is skipped this time (not a
        // problem that blocks the whole plan), and never planned unpinned.
        let p = plan
            .skipped
            .iter()
            .find(|p| p.id == d.id)
            .unwrap_or_else(|| panic!("{} skipped: {:?}", d.id, plan.skipped));
        assert!(p.reason.contains(image.as_str()), "{}", p.reason);
        assert!(
            p.reason.contains("nims.yaml:"),
            "names the manifest line: {}",
            p.reason
        );
        assert!(
            plan.changes.iter().all(|c| c.id != d.id),
            "{} is not planned unpinned",
            d.id
        );
    }
    assert!(w.kube.world().objects.is_empty());
}

#[tokio::test]
async fn with_pinning_off_the_plan_applies_the_tag_as_written() {
    let desired = compiled(false);
    let w = World::new(&desired, D1);
    let planned = w.plan(&desired).await;
    assert!(planned.pinned.is_empty());
    w.apply(&planned, &desired).await;
    for d in nim_objects(&desired) {
        let applied = pinned_field(&w.kube.world().objects[&d.id], &d.id).expect("present");
        assert!(!applied.contains('@'), "{applied}");
    }
}
