//! The NICo stand-in of the tests as a program, so independent judges (Stoplight Prism as a
//! validating proxy, schemathesis) can be pointed at it: prints its endpoint and a token with
//! both roles, seeds a machine, and serves until interrupted. Test-only (a dev example).
#![allow(clippy::unwrap_used)]

#[path = "../tests/standin/mod.rs"]
mod standin;

#[tokio::main]
async fn main() {
    let s = standin::Standin::start().await;
    s.seed(
        "machine",
        serde_json::json!({"id": "fm100ht4v4mce2qstjnl8970nnj3ie6ecek4mtjn27pea4kre5gsa49jg0g", "siteId": standin::SITE_ID}),
    );
    println!("endpoint: {}/v2/org/{}/nico", s.endpoint, standin::ORG);
    println!(
        "token: {}",
        standin::token(&["PROVIDER_ADMIN", "TENANT_ADMIN"], 24 * 3600)
    );
    tokio::signal::ctrl_c().await.unwrap();
    let v = s.violations();
    println!("answers outside the spec: {}", v.len());
    for line in v {
        println!("  {line}");
    }
}
