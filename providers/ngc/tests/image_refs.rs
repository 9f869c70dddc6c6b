//! NIM image references against the real registry (tests/peers/registry.sh): compile a
//! fleet whose NIMs name one repository three ways (no registry host, the registry's
//! own host, and `nvcr.io` while `registries.ngc.endpoint` is a mirror), resolve the
//! compiled `ngc:image/...` resources, and check that the digest is the one the registry
//! gives for exactly the repository written, not for a neighbour whose path is the
//! written one minus its first component (which a parser that takes `nvidia/` for a
//! host would resolve).
//! Needs the registry; without it it is skipped, or fails with FLEETFORM_REQUIRE_PEERS=1.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use fleetform_engine::Sensitive;
use fleetform_engine::secret::LocalSecrets;
use fleetform_engine::{compile, load, validate};
use fleetform_ngc::registry::BasicCredentials;
use fleetform_ngc::{ImageSpec, NgcProvider, RegistryClient, RegistrySpec};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

const REQUIRE: &str = "FLEETFORM_REQUIRE_PEERS";

/// The htpasswd registry: (url, user, password file), as tests/pinning.rs finds it.
fn registry() -> Option<(String, String, PathBuf)> {
    let mut vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("FLEETFORM_REGISTRY_"))
        .collect();
    if !vars.contains_key("FLEETFORM_REGISTRY_BASIC_URL") {
        let dir = std::env::var("FLEETFORM_PEERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers")
            });
        if let Ok(text) = std::fs::read_to_string(dir.join("registry.env")) {
            for line in text.lines() {
                if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                    vars.insert(k.to_string(), v.trim_matches('\'').to_string());
                }
            }
        }
    }
    let get = |k: &str| vars.get(k).cloned();
    match (
        get("FLEETFORM_REGISTRY_BASIC_URL"),
        get("FLEETFORM_REGISTRY_BASIC_USERNAME"),
        get("FLEETFORM_REGISTRY_BASIC_PASSWORD_FILE"),
    ) {
        (Some(u), Some(n), Some(p)) => Some((u, n, p.into())),
        _ if std::env::var(REQUIRE).as_deref() == Ok("1") => {
            panic!("registry peer not running: run tests/peers/registry.sh start ({REQUIRE}=1)")
        }
        _ => {
            eprintln!("skipped: registry not running (tests/peers/registry.sh start)");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}{}x{nanos:x}", std::process::id())
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

async fn push_blob(c: &RegistryClient, endpoint: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let (status, headers, _) = c
        .send(
            Method::POST,
            &format!("{endpoint}/v2/{repo}/blobs/uploads/"),
            repo,
            "pull,push",
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "upload start for {repo}");
    let location = headers.get("location").unwrap().to_str().unwrap();
    let location = if location.starts_with('/') {
        format!("{endpoint}{location}")
    } else {
        location.to_string()
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let (status, _, _) = c
        .send_with_body(
            Method::PUT,
            &format!("{location}{sep}digest={digest}"),
            repo,
            "pull,push",
            Some("application/octet-stream"),
            Some(data.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "blob PUT for {repo}");
    digest
}

/// Pushes a one-layer image (its layer unique per repository) under `repo:tag`.
async fn push_image(c: &RegistryClient, endpoint: &str, repo: &str, tag: &str) -> String {
    let layer = format!("fleetform image-ref test {repo} {tag}").into_bytes();
    let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]}})
        .to_string()
        .into_bytes();
    let layer_digest = push_blob(c, endpoint, repo, &layer).await;
    let config_digest = push_blob(c, endpoint, repo, &config).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let (status, _, _) = c
        .send_with_body(
            Method::PUT,
            &format!("{endpoint}/v2/{repo}/manifests/{tag}"),
            repo,
            "pull,push",
            Some("application/vnd.oci.image.manifest.v1+json"),
            Some(manifest.clone()),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "manifest PUT for {repo}:{tag}");
    sha256(&manifest)
}

/// A one-host fleet whose registry is `url`, with one NIM per image.
fn fleet(url: &str, user: &str, password_file: &str, images: &[String]) -> String {
    let mut out = format!(
        r#"apiVersion: fleetform.dev/v1alpha1
kind: Fleet
metadata: {{name: fx}}
spec:
  registries:
    ngc: {{endpoint: "{url}", username: "{user}"}}
    pinDigests: true
  operators:
    gpuOperator: {{version: v26.7.0, driver: {{version: "595.91.07"}}}}
  managementCluster:
    kubeconfig: {{file: mgmt.kubeconfig}}
---
apiVersion: fleetform.dev/v1alpha1
kind: Rack
metadata: {{name: r01}}
spec: {{faultDomain: rack}}
---
apiVersion: fleetform.dev/v1alpha1
kind: Host
metadata: {{name: h1}}
spec:
  rack: r01
  bmc: {{endpoint: "http://127.0.0.1:8000", credentials: {{username: admin, password: {{file: bmc}}}}}}
  gpu: {{model: H100, count: 8}}
---
apiVersion: fleetform.dev/v1alpha1
kind: Tenant
metadata: {{name: acme}}
spec:
  flavor: tenant-managed
  kubernetes: {{version: "1.34", kubeconfig: {{file: t.kubeconfig}}, podCidr: 10.64.0.0/16, serviceCidr: 10.96.0.0/20}}
  nodeOs: {{byo: true}}
  ngc: {{apiKey: {{file: "{password_file}"}}}}
---
apiVersion: fleetform.dev/v1alpha1
kind: NodePool
metadata: {{name: p1}}
spec: {{tenant: acme, hosts: [h1]}}
"#
    );
    for (n, image) in images.iter().enumerate() {
        out += &format!(
            "---\napiVersion: fleetform.dev/v1alpha1\nkind: NIMService\nmetadata: {{name: n{n}}}\nspec: {{tenant: acme, pool: p1, image: \"{image}\", namespace: ns{n}}}\n"
        );
    }
    out
}

#[tokio::test]
async fn a_pinned_digest_is_the_registrys_digest_of_exactly_the_repository_written() {
    let Some((url, user, password_file)) = registry() else {
        return;
    };
    let host = url
        .split_once("://")
        .unwrap()
        .1
        .trim_end_matches('/')
        .to_string();
    let password = std::fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_string();
    let pusher = RegistryClient::new(
        &RegistrySpec::new(&url),
        Some(BasicCredentials {
            username: user.clone(),
            password: Sensitive::new(password),
        }),
        Arc::new(tokio::sync::Semaphore::new(4)),
    )
    .unwrap();
    // The repository written, and the neighbour a host-stripping parser would pick.
    let (first, second) = (unique("nvidia"), unique("nim"));
    let written = format!("{first}/{second}/llama");
    let neighbour = format!("{second}/llama");
    let want = push_image(&pusher, &url, &written, "1.0").await;
    let other = push_image(&pusher, &url, &neighbour, "1.0").await;
    assert_ne!(want, other);

    let images = [
        format!("{written}:1.0"),
        format!("{host}/{written}:1.0"),
        format!("nvcr.io/{written}:1.0"),
    ];
    let text = fleet(&url, &user, password_file.to_str().unwrap(), &images);
    let (docs, diags) = load::load(&[load::SourceFile {
        path: "fleet.yaml".into(),
        bytes: text.into_bytes(),
    }]);
    assert!(diags.is_empty(), "{diags:?}");
    let fleet = validate::validate(&docs).unwrap();
    let secrets = Arc::new(LocalSecrets::new("/"));
    let compiled = compile::compile(&fleet, secrets.as_ref()).unwrap();
    let provider = NgcProvider::new(secrets);
    let mut resolved = 0;
    for d in &compiled.resources {
        if d.id.provider() == "ngc" && d.id.as_str().contains(":image/") {
            let spec: ImageSpec = serde_json::from_value(d.spec.clone()).unwrap();
            assert_eq!(d.spec["repository"], json!(written), "{}", d.id);
            let digest = provider.resolve_digest(&spec).await.unwrap();
            assert_eq!(digest, want, "{} resolved another repository", d.id);
            resolved += 1;
        }
        if d.id.as_str().contains("/NIMService/") {
            assert_eq!(
                d.spec.pointer("/object/spec/image/repository"),
                Some(&Value::String(format!("{host}/{written}"))),
                "{}",
                d.id
            );
        }
    }
    // The three spellings are one image resource.
    assert_eq!(
        resolved,
        1,
        "{:?}",
        compiled.resources.iter().map(|d| &d.id).collect::<Vec<_>>()
    );
}
