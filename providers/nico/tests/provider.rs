//! The nico provider against the NICo stand-in (tests/standin) on loopback: idempotency as
//! steps, adoption by name, conflicts, a create whose answer is lost, tokens, paging, faults.
#![allow(clippy::unwrap_used)]

mod standin;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use fleetform_contract::provider::{
    Action, ApplyContext, ApplyRequest, Change, Disruption, ErrorKind, Health, ObserveRequest,
    Observed, Provider, ProviderError,
};
use fleetform_contract::resource::Desired;
use fleetform_contract::secret::{SecretError, SecretRef, SecretResolver};
use fleetform_contract::sensitive::Sensitive;
use fleetform_nico::{NicoProvider, nico_id};
use serde_json::{Value, json};
use standin::{Fault, ORG, SITE_ID, Standin, TENANT_ID, token};

/// Hands out whatever token the test put in.
struct Tokens(Mutex<String>);

impl SecretResolver for Tokens {
    fn resolve(&self, _: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new(self.0.lock().unwrap().clone()))
    }
}

const BOTH: &[&str] = &["PROVIDER_ADMIN", "TENANT_ADMIN"];

fn provider(tok: String) -> (NicoProvider, Arc<Tokens>) {
    let t = Arc::new(Tokens(Mutex::new(tok)));
    (NicoProvider::new(t.clone()), t)
}

fn desired(endpoint: &str, kind: &str, name: &str, fields: Value, refs: Value) -> Desired {
    Desired::new(
        nico_id("pdx-1", kind, name),
        json!({
            "endpoint": endpoint, "org": ORG, "site": "pdx-1", "token": {"env": "NICO_TOKEN"},
            "kind": kind, "name": name, "fields": fields, "refs": refs,
        }),
    )
}

/// A site: an instance type, a VPC, a subnet in it and an instance on one machine.
fn site(endpoint: &str, it_description: &str) -> Vec<Desired> {
    vec![
        desired(
            endpoint,
            "instance-type",
            "gb200",
            json!({
                "siteId": SITE_ID, "description": it_description, "labels": {"rack": "r01"},
            }),
            json!({}),
        ),
        desired(
            endpoint,
            "vpc",
            "tenant-a",
            json!({"siteId": SITE_ID, "labels": {"tenant": "a"}}),
            json!({}),
        ),
        desired(
            endpoint,
            "subnet",
            "tenant-a-0",
            json!({"prefixLength": 24, "description": "hosts"}),
            json!({"/vpcId": {"kind": "vpc", "name": "tenant-a"}}),
        ),
        desired(
            endpoint,
            "instance",
            "r01-n01",
            json!({
                "tenantId": TENANT_ID,
                "machineId": "fm100ht4v4mce2qstjnl8970nnj3ie6ecek4mtjn27pea4kre5gsa49jg0g",
                "interfaces": [{"isPhysical": true}],
                "labels": {"role": "worker"},
            }),
            json!({
                "/instanceTypeId": {"kind": "instance-type", "name": "gb200"},
                "/vpcId": {"kind": "vpc", "name": "tenant-a"},
                "/interfaces/0/subnetId": {"kind": "subnet", "name": "tenant-a-0"},
            }),
        ),
    ]
}

async fn observe(p: &NicoProvider, ds: &[Desired]) -> Vec<Result<Option<Observed>, ProviderError>> {
    let reqs: Vec<ObserveRequest<'_>> = ds
        .iter()
        .map(|d| ObserveRequest {
            id: &d.id,
            spec: &d.spec,
            desired: true,
            unchanged: false,
        })
        .collect();
    p.observe(&reqs).await
}

async fn plan(p: &NicoProvider, ds: &[Desired]) -> Vec<(Change, Option<Observed>)> {
    let obs = observe(p, ds).await;
    ds.iter()
        .zip(obs)
        .map(|(d, o)| {
            let o = o.unwrap();
            (p.diff(d, o.as_ref()).unwrap(), o)
        })
        .collect()
}

fn cx() -> ApplyContext {
    ApplyContext {
        timeout: Duration::from_secs(10),
        dry_run: false,
    }
}

/// Applies each change in order and waits for each object's ready state (dependents need it).
async fn apply(p: &NicoProvider, ds: &[Desired], planned: &[(Change, Option<Observed>)]) {
    for (d, (c, o)) in ds.iter().zip(planned) {
        if c.action == Action::NoOp {
            continue;
        }
        let req = ApplyRequest {
            change: c,
            desired: Some(d),
            last_applied: None,
            observed: o.as_ref(),
        };
        p.apply(&req, &cx()).await.unwrap();
        wait_ready(p, d).await;
    }
}

async fn wait_ready(p: &NicoProvider, d: &Desired) -> Health {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let h = p.health(&d.id, &d.spec).await.unwrap();
        if !matches!(h, Health::Progressing(_)) || Instant::now() > until {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn actions(planned: &[(Change, Option<Observed>)]) -> Vec<Action> {
    planned.iter().map(|(c, _)| c.action).collect()
}

fn list_calls(s: &Standin, from: usize) -> usize {
    s.requests()[from..]
        .iter()
        .filter(|(m, u)| m == "GET" && u.contains("pageNumber"))
        .count()
}

#[tokio::test]
async fn apply_then_replan_is_noop_then_one_field_changes_alone() {
    let s = Standin::start().await;
    let (p, _) = provider(token(BOTH, 3600));
    let ds = site(&s.endpoint, "GB200 NVL72 trays");

    let first = plan(&p, &ds).await;
    assert_eq!(actions(&first), [Action::Create; 4]);
    apply(&p, &ds, &first).await;
    for d in &ds {
        assert_eq!(wait_ready(&p, d).await, Health::Ready, "{}", d.id);
    }
    // The instance was created with the ids its references name.
    let inst = &s.named("instance", "r01-n01")[0];
    assert_eq!(
        inst["instanceTypeId"],
        s.named("instance/type", "gb200")[0]["id"]
    );
    assert_eq!(
        inst["interfaces"][0]["subnetId"],
        s.named("subnet", "tenant-a-0")[0]["id"]
    );

    // Re-plan: all NoOp, and each kind was listed once (one page each), not read per object.
    let mark = s.requests().len();
    let again = plan(&p, &ds).await;
    assert_eq!(actions(&again), [Action::NoOp; 4], "{again:#?}");
    assert_eq!(list_calls(&s, mark), 4);

    // One field changes: only it.
    let ds2 = site(&s.endpoint, "GB200 NVL72 trays, rev B");
    let changed = plan(&p, &ds2).await;
    assert_eq!(
        actions(&changed),
        [Action::Update, Action::NoOp, Action::NoOp, Action::NoOp]
    );
    let paths: Vec<_> = changed[0]
        .0
        .fields
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(paths, ["/fields/description"]);
    assert!(changed[0].0.requires_replace.is_empty());
    let mark = s.requests().len();
    apply(&p, &ds2, &changed).await;
    let patches: Vec<_> = s.requests()[mark..]
        .iter()
        .filter(|(m, _)| m == "PATCH")
        .cloned()
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(actions(&plan(&p, &ds2).await), [Action::NoOp; 4]);
    // The ownership label survived the PATCH (labels are replaced whole).
    assert_eq!(
        s.named("instance/type", "gb200")[0]["labels"]["fleetform.io/managed-by"],
        "fleetform"
    );

    // A create-only field is a replacement, said as such.
    let mut ds3 = ds2.clone();
    ds3[3].spec["fields"]["machineId"] =
        json!("fm100ht4v4mce2qstjnl8970nnj3ie6ecek4mtjn27pea4kre5gsa49jg0h");
    let replace = plan(&p, &ds3).await;
    assert_eq!(replace[3].0.action, Action::Replace);
    assert_eq!(replace[3].0.requires_replace, ["/fields/machineId"]);
    // What each does to the host: a new instance on the machine reprovisions it, a new
    // description or label touches nothing running, and releasing an instance reboots it.
    assert_eq!(replace[3].0.disruption, Disruption::HostReboot);
    assert_eq!(changed[0].0.disruption, Disruption::None);
    let mut relabel = ds2.clone();
    relabel[3].spec["fields"]["labels"] = json!({"role": "spare"});
    let relabelled = plan(&p, &relabel).await;
    assert_eq!(relabelled[3].0.action, Action::Update);
    assert_eq!(relabelled[3].0.disruption, Disruption::None);
    let mut new_nic = ds2.clone();
    new_nic[3].spec["fields"]["interfaces"] = json!([{"isPhysical": false}]);
    let reprovision = plan(&p, &new_nic).await;
    assert_eq!(
        reprovision[3].0.disruption,
        Disruption::HostReboot,
        "{reprovision:#?}"
    );
    assert_eq!(p.delete_disruption(&ds2[3].id), Disruption::HostReboot);
    assert_eq!(p.delete_disruption(&ds2[0].id), Disruption::None);

    // Delete answers 202 and is polled until the object is gone.
    let del = Change::new(ds2[3].id.clone(), Action::Delete);
    let req = ApplyRequest {
        change: &del,
        desired: None,
        last_applied: Some(&ds2[3].spec),
        observed: again[3].1.as_ref(),
    };
    p.apply(&req, &cx()).await.unwrap();
    assert!(s.named("instance", "r01-n01").is_empty());
    assert_eq!(s.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn an_owned_object_is_adopted_by_name_and_a_foreign_one_is_a_conflict() {
    let s = Standin::start().await;
    let (p, _) = provider(token(BOTH, 3600));
    s.seed(
        "instance/type",
        json!({"name": "adopt-me", "siteId": SITE_ID, "description": "old",
        "labels": {"fleetform.io/managed-by": "fleetform"}}),
    );
    s.seed(
        "instance/type",
        json!({"name": "taken", "siteId": SITE_ID, "labels": {"owner": "alice"}}),
    );
    let adopt = vec![desired(
        &s.endpoint,
        "instance-type",
        "adopt-me",
        json!({"siteId": SITE_ID, "description": "new"}),
        json!({}),
    )];
    let planned = plan(&p, &adopt).await;
    assert_eq!(actions(&planned), [Action::Update]);
    apply(&p, &adopt, &planned).await;
    let live = s.named("instance/type", "adopt-me");
    assert_eq!(
        (live.len(), live[0]["description"].clone()),
        (1, json!("new"))
    );

    let taken = vec![desired(
        &s.endpoint,
        "instance-type",
        "taken",
        json!({"siteId": SITE_ID}),
        json!({}),
    )];
    let err = observe(&p, &taken).await.remove(0).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("conflict") && err.message.contains("did not create"),
        "{}",
        err.message
    );
    // Even when the plan saw nothing (the object appeared after), create meets 409 and says so.
    let create = Change::new(taken[0].id.clone(), Action::Create);
    let req = ApplyRequest {
        change: &create,
        desired: Some(&taken[0]),
        last_applied: None,
        observed: None,
    };
    let err = p.apply(&req, &cx()).await.unwrap_err();
    assert!(err.message.contains("conflict"), "{}", err.message);
    assert_eq!(s.named("instance/type", "taken").len(), 1);
    assert_eq!(s.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn two_fleets_in_one_org_and_site_never_adopt_each_others_objects() {
    let s = Standin::start().await;
    let (p, _) = provider(token(BOTH, 3600));
    let of = |fleet: &str, kind: &str, name: &str, fields: Value| {
        let mut d = desired(&s.endpoint, kind, name, fields, json!({}));
        d.spec["fleet"] = json!(fleet);
        d
    };
    // Fleet `east` creates an instance type (ownership by label).
    let east = vec![of(
        "east",
        "instance-type",
        "gb200",
        json!({"siteId": SITE_ID}),
    )];
    let planned = plan(&p, &east).await;
    apply(&p, &east, &planned).await;
    let live = s.named("instance/type", "gb200");
    assert_eq!(
        live[0]["labels"]["fleetform.io/managed-by"],
        "fleetform.east"
    );
    assert_eq!(
        actions(&plan(&p, &east).await),
        [Action::NoOp],
        "east adopts its own"
    );
    // Fleet `west` names the same object: a conflict naming the mark it would need, never an
    // adoption (which would let west change or delete east's object).
    let west = vec![of(
        "west",
        "instance-type",
        "gb200",
        json!({"siteId": SITE_ID, "description": "west's"}),
    )];
    let err = observe(&p, &west).await.remove(0).unwrap_err();
    assert!(
        err.message.contains("conflict") && err.message.contains("fleetform.west"),
        "{}",
        err.message
    );
    assert_eq!(s.named("instance/type", "gb200").len(), 1);
    assert_eq!(s.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_makes_no_duplicate() {
    let s = Standin::start().await;
    let (p, _) = provider(token(BOTH, 3600));
    let ds = vec![desired(
        &s.endpoint,
        "instance-type",
        "gb300",
        json!({"siteId": SITE_ID}),
        json!({}),
    )];
    // The stand-in commits the create and drops the connection before answering.
    s.fault(Method::POST, "instance/type", Fault::DropAfterCommit);
    let planned = plan(&p, &ds).await;
    assert_eq!(actions(&planned), [Action::Create]);
    let req = ApplyRequest {
        change: &planned[0].0,
        desired: Some(&ds[0]),
        last_applied: None,
        observed: None,
    };
    p.apply(&req, &cx()).await.unwrap();
    // Run again, as after a crash, with a fresh provider: still one object, nothing to do.
    let (p2, _) = provider(token(BOTH, 3600));
    p2.apply(&req, &cx()).await.unwrap();
    assert_eq!(s.named("instance/type", "gb300").len(), 1);
    assert_eq!(actions(&plan(&p2, &ds).await), [Action::NoOp]);
    let posts = s.requests().iter().filter(|(m, _)| m == "POST").count();
    assert_eq!(posts, 1);
    // The lookup before a create asks NICo for that name, not for the whole collection.
    assert!(s.requests().iter().any(|(_, u)| u.contains("query=gb300")));
    assert_eq!(s.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn expired_or_wrong_role_tokens_are_permanent_and_say_why() {
    let s = Standin::start().await;
    let ds = vec![desired(
        &s.endpoint,
        "instance-type",
        "gb200",
        json!({"siteId": SITE_ID}),
        json!({}),
    )];
    let (p, tokens) = provider(token(BOTH, -10));
    let err = observe(&p, &ds).await.remove(0).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("rejected the token"),
        "{}",
        err.message
    );
    *tokens.0.lock().unwrap() = token(&["TENANT_ADMIN"], 3600);
    let err = observe(&p, &ds).await.remove(0).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("PROVIDER_ADMIN"), "{}", err.message);
    // No token, key or secret in any message.
    assert!(!err.to_string().contains("eyJ"));
    *tokens.0.lock().unwrap() = "not-a-jwt".into();
    assert!(observe(&p, &ds).await.remove(0).is_err());
    assert_eq!(s.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_list_that_changes_while_paged_is_read_again() {
    let s = Standin::start().await;
    let (p, _) = provider(token(BOTH, 3600));
    for i in 0..100 {
        s.seed(
            "instance/type",
            json!({"name": format!("other-{i:03}"), "siteId": SITE_ID}),
        );
    }
    // Ours is the first object of page 2; removing one object after page 1 shifts it onto
    // page 1, which a naive reader would never see (and then create a duplicate).
    s.seed("instance/type", json!({"name": "mine", "siteId": SITE_ID, "labels": {"fleetform.io/managed-by": "fleetform"}}));
    for i in 100..120 {
        s.seed(
            "instance/type",
            json!({"name": format!("other-{i:03}"), "siteId": SITE_ID}),
        );
    }
    s.fault(Method::GET, "instance/type", Fault::ShiftDuringList);
    let ds = vec![desired(
        &s.endpoint,
        "instance-type",
        "mine",
        json!({"siteId": SITE_ID}),
        json!({}),
    )];
    assert_eq!(actions(&plan(&p, &ds).await), [Action::NoOp]);
    // Two pages, then the total changed: read again from page 1 (two more).
    assert_eq!(list_calls(&s, 0), 4);
    // Every page asked for at most 100.
    assert!(
        s.requests()
            .iter()
            .all(|(_, u)| !u.contains("pageSize=") || u.contains("pageSize=100"))
    );
    assert_eq!(s.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn faults_are_retried_or_reported() {
    let s = Standin::start().await;
    let (p, _) = provider(token(BOTH, 3600));
    let ds = vec![desired(
        &s.endpoint,
        "vpc",
        "v1",
        json!({"siteId": SITE_ID}),
        json!({}),
    )];
    // 429 with Retry-After: honoured, then the list succeeds.
    s.fault(Method::GET, "vpc", Fault::RateLimited(1));
    let t = Instant::now();
    assert_eq!(actions(&plan(&p, &ds).await), [Action::Create]);
    assert!(t.elapsed() >= Duration::from_secs(1));
    // A transient 500 on a GET is retried.
    s.fault(Method::GET, "vpc", Fault::Status(500));
    assert_eq!(actions(&plan(&p, &ds).await), [Action::Create]);
    // A create that goes to Error: health fails and shows the status history.
    s.fault(Method::POST, "vpc", Fault::ErrorTransition);
    let planned = plan(&p, &ds).await;
    let req = ApplyRequest {
        change: &planned[0].0,
        desired: Some(&ds[0]),
        last_applied: None,
        observed: None,
    };
    p.apply(&req, &cx()).await.unwrap();
    match wait_ready(&p, &ds[0]).await {
        Health::Failed(m) => assert!(
            m.contains("Pending") && m.contains("DPU did not come up"),
            "{m}"
        ),
        h => panic!("{h:?}"),
    }
    // A request the real API would reject is rejected with the spec's error shape.
    let bad = [desired(
        &s.endpoint,
        "subnet",
        "s1",
        json!({"description": "no prefix length"}),
        json!({"/vpcId": {"kind": "vpc", "name": "v1"}}),
    )];
    let c = Change::new(bad[0].id.clone(), Action::Create);
    let req = ApplyRequest {
        change: &c,
        desired: Some(&bad[0]),
        last_applied: None,
        observed: None,
    };
    let err = p.apply(&req, &cx()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("refused") && err.message.contains("prefixLength"),
        "{}",
        err.message
    );
    assert_eq!(s.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn api_down_is_transient() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let (p, _) = provider(token(BOTH, 3600));
    let ds = vec![desired(
        &endpoint,
        "vpc",
        "v1",
        json!({"siteId": SITE_ID}),
        json!({}),
    )];
    let err = observe(&p, &ds).await.remove(0).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
}

#[tokio::test]
async fn too_many_labels_are_refused_before_any_request() {
    let (p, _) = provider(String::new());
    let labels: serde_json::Map<String, Value> =
        (0..10).map(|i| (format!("k{i}"), json!("v"))).collect();
    let d = desired(
        "http://127.0.0.1:9",
        "vpc",
        "v1",
        json!({"siteId": SITE_ID, "labels": labels}),
        json!({}),
    );
    let err = p.diff(&d, None).unwrap_err();
    assert!(err.message.contains("at most 9"), "{}", err.message);
}

#[tokio::test]
async fn the_rate_limit_holds_ten_per_second_after_a_burst_of_thirty() {
    let l = fleetform_nico::RateLimiter::new(10.0, 30.0);
    let t = Instant::now();
    for _ in 0..35 {
        l.acquire().await;
    }
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn the_standin_checks_against_the_spec_not_vacuously() {
    assert!(
        standin::check("InstanceType", &json!({"name": "x"})).len() == 1,
        "name is minLength 2"
    );
    assert!(
        !standin::check("InstanceTypeCreateRequest", &json!({"name": "gb200"})).is_empty(),
        "siteId is required"
    );
    assert!(
        !standin::check(
            "Labels",
            &json!(
                (0..11)
                    .map(|i| (format!("k{i}"), json!("v")))
                    .collect::<serde_json::Map<_, _>>()
            )
        )
        .is_empty()
    );
    assert!(
        standin::check(
            "NICoAPIError",
            &json!({"source": "nico", "message": "m", "data": null})
        )
        .is_empty()
    );
    assert!(!standin::check("InstanceStatus", &json!("Running")).is_empty());
}

struct AnySecret;
impl SecretResolver for AnySecret {
    fn resolve(&self, _: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new("unused".into()))
    }
}

/// What compile emits for the every-field fleet's NICo site is accepted by the stand-in as it
/// is (every request checked against the spec), becomes ready, and re-plans to NoOp.
#[tokio::test]
async fn the_compiled_every_field_site_applies_and_replans_to_noop() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/every-field");
    let files = fleetform_engine::load::read_dir(&root).unwrap();
    let (docs, diags) = fleetform_engine::load::load(&files);
    assert!(diags.is_empty(), "{diags:?}");
    let fleet = fleetform_engine::validate::validate(&docs).unwrap();
    let compiled = fleetform_engine::compile::compile(&fleet, &AnySecret).unwrap();
    let s = Standin::start().await;
    s.seed(
        "machine",
        json!({"id": "fm100ht4v4mce2qstjnl8970nnj3ie6ecek4mtjn27pea4kre5gsa49jg0g", "siteId": SITE_ID}),
    );
    s.seed(
        "operating-system",
        json!({"name": "ubuntu-24.04", "description": "someone else's image"}),
    );
    let order = |d: &Desired| {
        fleetform_nico::KINDS
            .iter()
            .position(|k| k.name == d.spec["kind"])
            .unwrap()
    };
    let mut ds: Vec<Desired> = compiled
        .resources
        .into_iter()
        .filter(|d| d.id.provider() == "nico")
        .map(|mut d| {
            d.spec["endpoint"] = json!(s.endpoint);
            d
        })
        .collect();
    ds.sort_by_key(order);
    assert_eq!(ds.len(), 9);
    let (p, _) = provider(token(BOTH, 3600));
    let first = plan(&p, &ds).await;
    // Everything is new but the machine, which NICo has: it only gets its instance type.
    for (d, (c, _)) in ds.iter().zip(&first) {
        let want = if d.spec["kind"] == "machine" {
            Action::Update
        } else {
            Action::Create
        };
        assert_eq!(c.action, want, "{}", d.id);
    }
    apply(&p, &ds, &first).await;
    for d in &ds {
        assert_eq!(wait_ready(&p, d).await, Health::Ready, "{}", d.id);
    }
    assert_eq!(actions(&plan(&p, &ds).await), [Action::NoOp; 9]);
    let alloc = &s.named("allocation", "tenant-a-gb200")[0];
    assert_eq!(
        alloc["allocationConstraints"][0]["resourceTypeId"],
        s.named("instance/type", "gb200")[0]["id"]
    );
    assert_eq!(s.violations(), Vec::<String>::new());
}

/// A machine: found by id, never created; instance type, maintenance mode and labels each go
/// in their own PATCH (the stand-in refuses them together, as the spec says).
#[tokio::test]
async fn a_machine_changes_in_separate_requests_and_is_never_created() {
    let s = Standin::start().await;
    let (p, _) = provider(token(BOTH, 3600));
    let mid = "fm100ht4v4mce2qstjnl8970nnj3ie6ecek4mtjn27pea4kre5gsa49jg0g";
    // The seeded machine's NICo id is its name in fleetform.
    let machine = s.seed(
        "machine",
        json!({"siteId": SITE_ID, "labels": {"RackIdentifier": "r01"}}),
    );
    let it = s.seed("instance/type", json!({"name": "gb200", "siteId": SITE_ID}));
    let m = desired(
        &s.endpoint,
        "machine",
        &machine,
        json!({
            "maintenance": {"enabled": true, "message": "re-cabling"},
            "labels": {"RackIdentifier": "r01", "ServerName": "n01"},
        }),
        json!({"/instanceTypeId": {"kind": "instance-type", "name": "gb200"}}),
    );
    let ds = vec![m];
    let planned = plan(&p, &ds).await;
    assert_eq!(actions(&planned), [Action::Update]);
    let mark = s.requests().len();
    apply(&p, &ds, &planned).await;
    let patches = s.requests()[mark..]
        .iter()
        .filter(|(m, _)| m == "PATCH")
        .count();
    assert_eq!(patches, 3, "one request per group");
    assert_eq!(actions(&plan(&p, &ds).await), [Action::NoOp]);
    let live = &s.named_by_id("machine", &machine);
    assert_eq!(
        (live["status"].clone(), live["instanceTypeId"].clone()),
        (json!("Maintenance"), json!(it))
    );
    // A machine NICo does not have is an error, not a create.
    let ghost = [desired(
        &s.endpoint,
        "machine",
        mid,
        json!({"labels": {}}),
        json!({}),
    )];
    let c = Change::new(ghost[0].id.clone(), Action::Create);
    let req = ApplyRequest {
        change: &c,
        desired: Some(&ghost[0]),
        last_applied: None,
        observed: None,
    };
    let err = p.apply(&req, &cx()).await.unwrap_err();
    assert!(err.message.contains("never creates"), "{}", err.message);
    assert_eq!(s.violations(), Vec::<String>::new());
}
