//! Push webhooks from GitHub and GitLab: authenticate the request, then read
//! which ref moved to which commit. The daemon only uses a webhook as a poke
//! ("fetch now"); it still fetches and verifies the commit itself.

use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::sensitive::Sensitive;
use crate::source::GitRef;

/// Which forge sends the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookProvider {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, `X-GitHub-Event`.
    Github,
    /// `X-Gitlab-Token: <secret>`, `X-Gitlab-Event`.
    Gitlab,
}

/// A ref that moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// The full ref, e.g. `refs/heads/main`.
    pub reference: String,
    /// The branch, when the ref is one.
    pub branch: Option<String>,
    /// The tag, when the ref is one.
    pub tag: Option<String>,
    /// The new commit (`after`); all zeros when the ref was deleted.
    pub after: String,
    /// The ref was deleted.
    pub deleted: bool,
    /// The forge says the push was forced (GitHub only; `None` when unknown).
    pub forced: Option<bool>,
    /// `owner/name` of the repository, when the payload names it.
    pub repository: Option<String>,
}

impl PushEvent {
    /// Whether this push moved the ref a source follows (a commit ref never
    /// matches: it does not move).
    pub fn matches(&self, reference: &GitRef) -> bool {
        match reference {
            GitRef::Branch(b) => self.branch.as_deref() == Some(b.as_str()),
            GitRef::Tag(t) => self.tag.as_deref() == Some(t.as_str()),
            GitRef::Commit(_) => false,
        }
    }
}

/// What an authenticated webhook request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A push (branch or tag).
    Push(PushEvent),
    /// GitHub's `ping` on hook creation.
    Ping,
    /// Another event type (issues, merge requests…): nothing to do.
    Ignored {
        /// The event name from the header.
        event: String,
    },
}

/// Why a webhook request was refused. Never carries the secret or the signature.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The authentication header is absent.
    #[error("webhook: missing {header} header")]
    MissingHeader {
        /// The header.
        header: &'static str,
    },
    /// The signature header is not `sha256=<64 hex>`.
    #[error("webhook: {header} is not of the form sha256=<hex>")]
    MalformedSignature {
        /// The header.
        header: &'static str,
    },
    /// The HMAC does not match the body (wrong secret, or a modified body).
    #[error("webhook: signature does not match the body")]
    SignatureMismatch,
    /// The GitLab token does not match.
    #[error("webhook: token does not match")]
    TokenMismatch,
    /// The body is not a push payload of the expected shape.
    #[error("webhook: cannot read the {event} payload")]
    Payload {
        /// The event.
        event: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl WebhookError {
    /// The HTTP status to answer with: 401 for authentication failures, 400 for bad payloads.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::Payload { .. } => 400,
            _ => 401,
        }
    }
}

const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
const GITHUB_EVENT: &str = "x-github-event";
const GITLAB_TOKEN: &str = "x-gitlab-token";
const GITLAB_EVENT: &str = "x-gitlab-event";

/// Checks `X-Hub-Signature-256` (HMAC-SHA256 of the raw body, compared in constant time).
pub fn verify_github(
    secret: &[u8],
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), WebhookError> {
    let header = signature.ok_or(WebhookError::MissingHeader {
        header: "X-Hub-Signature-256",
    })?;
    let malformed = || WebhookError::MalformedSignature {
        header: "X-Hub-Signature-256",
    };
    let hex_sig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or_else(malformed)?;
    let expected = hex::decode(hex_sig).map_err(|_| malformed())?;
    if expected.len() != 32 {
        return Err(malformed());
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::SignatureMismatch)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::SignatureMismatch)
}

/// Checks `X-Gitlab-Token` against the secret in constant time.
pub fn verify_gitlab(secret: &[u8], token: Option<&str>) -> Result<(), WebhookError> {
    let token = token.ok_or(WebhookError::MissingHeader {
        header: "X-Gitlab-Token",
    })?;
    if bool::from(token.as_bytes().ct_eq(secret)) {
        Ok(())
    } else {
        Err(WebhookError::TokenMismatch)
    }
}

/// The `sha256=<hex>` header value GitHub would send for a body (for tests and tools).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Deserialize)]
struct GithubPush {
    #[serde(rename = "ref")]
    reference: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    forced: Option<bool>,
    #[serde(default)]
    repository: Option<GithubRepo>,
}

#[derive(Deserialize)]
struct GithubRepo {
    full_name: Option<String>,
}

#[derive(Deserialize)]
struct GitlabPush {
    #[serde(rename = "ref")]
    reference: String,
    after: String,
    #[serde(default)]
    project: Option<GitlabProject>,
}

#[derive(Deserialize)]
struct GitlabProject {
    path_with_namespace: Option<String>,
}

fn push_event(
    reference: String,
    after: String,
    deleted: bool,
    forced: Option<bool>,
    repository: Option<String>,
) -> PushEvent {
    let deleted = deleted || (!after.is_empty() && after.bytes().all(|b| b == b'0'));
    PushEvent {
        branch: reference.strip_prefix("refs/heads/").map(str::to_string),
        tag: reference.strip_prefix("refs/tags/").map(str::to_string),
        reference,
        after,
        deleted,
        forced,
        repository,
    }
}

/// Reads a GitHub payload for the `X-GitHub-Event` it came with.
pub fn parse_github(event: &str, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    match event {
        "ping" => Ok(WebhookEvent::Ping),
        "push" => {
            let p: GithubPush =
                serde_json::from_slice(body).map_err(|source| WebhookError::Payload {
                    event: event.to_string(),
                    source,
                })?;
            let repo = p.repository.and_then(|r| r.full_name);
            Ok(WebhookEvent::Push(push_event(
                p.reference,
                p.after,
                p.deleted,
                p.forced,
                repo,
            )))
        }
        other => Ok(WebhookEvent::Ignored {
            event: other.to_string(),
        }),
    }
}

/// Reads a GitLab payload for the `X-Gitlab-Event` it came with.
pub fn parse_gitlab(event: &str, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    match event {
        "Push Hook" | "Tag Push Hook" => {
            let p: GitlabPush =
                serde_json::from_slice(body).map_err(|source| WebhookError::Payload {
                    event: event.to_string(),
                    source,
                })?;
            let repo = p.project.and_then(|p| p.path_with_namespace);
            Ok(WebhookEvent::Push(push_event(
                p.reference,
                p.after,
                false,
                None,
                repo,
            )))
        }
        other => Ok(WebhookEvent::Ignored {
            event: other.to_string(),
        }),
    }
}

/// Authenticates a request and reads its event: what an HTTP handler calls
/// with the request's headers and raw body. Authentication comes first; an
/// unauthenticated body is never parsed.
pub fn receive(
    provider: WebhookProvider,
    secret: &Sensitive<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookEvent, WebhookError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = secret.expose().as_bytes();
    match provider {
        WebhookProvider::Github => {
            verify_github(secret, header(GITHUB_SIGNATURE), body)?;
            parse_github(header(GITHUB_EVENT).unwrap_or("push"), body)
        }
        WebhookProvider::Gitlab => {
            verify_gitlab(secret, header(GITLAB_TOKEN))?;
            parse_gitlab(header(GITLAB_EVENT).unwrap_or("Push Hook"), body)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    // Trimmed from GitHub's documented push payload (same field names and nesting).
    const GITHUB_PUSH: &str = r#"{
      "ref": "refs/heads/main",
      "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
      "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
      "created": false, "deleted": false, "forced": false,
      "base_ref": null,
      "compare": "https://github.com/acme/fleet/compare/6113728f27ae...0d1a26e67d8f",
      "commits": [{"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "add r02", "author": {"name": "Alice", "email": "alice@example.com"}}],
      "head_commit": {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "add r02"},
      "repository": {"id": 1296269, "name": "fleet", "full_name": "acme/fleet", "private": true, "clone_url": "https://github.com/acme/fleet.git"},
      "pusher": {"name": "alice", "email": "alice@example.com"},
      "sender": {"login": "alice", "id": 1}
    }"#;

    // Trimmed from GitLab's documented "Push Hook" payload.
    const GITLAB_PUSH: &str = r#"{
      "object_kind": "push", "event_name": "push",
      "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
      "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "ref": "refs/heads/main", "ref_protected": true,
      "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "user_username": "alice", "project_id": 15,
      "project": {"id": 15, "name": "fleet", "path_with_namespace": "acme/fleet", "default_branch": "main",
                  "git_http_url": "https://gitlab.example.com/acme/fleet.git"},
      "commits": [], "total_commits_count": 4
    }"#;

    fn secret() -> Sensitive<String> {
        Sensitive::new("It's a Secret to Everybody".to_string())
    }

    #[test]
    fn github_signature_matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" docs.
        let sig = github_signature(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        verify_github(b"It's a Secret to Everybody", Some(&sig), b"Hello, World!").unwrap();
    }

    #[test]
    fn a_signed_github_push_yields_the_branch_and_commit() {
        let mut h = HeaderMap::new();
        h.insert("X-GitHub-Event", HeaderValue::from_static("push"));
        let sig = github_signature(secret().expose().as_bytes(), GITHUB_PUSH.as_bytes());
        h.insert("X-Hub-Signature-256", HeaderValue::from_str(&sig).unwrap());
        let WebhookEvent::Push(p) = receive(
            WebhookProvider::Github,
            &secret(),
            &h,
            GITHUB_PUSH.as_bytes(),
        )
        .unwrap() else {
            panic!("not a push")
        };
        assert_eq!(p.branch.as_deref(), Some("main"));
        assert_eq!(p.after, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
        assert_eq!(p.repository.as_deref(), Some("acme/fleet"));
        assert!(!p.deleted);
        assert!(p.matches(&GitRef::Branch("main".into())));
        assert!(!p.matches(&GitRef::Branch("dev".into())));
    }

    #[test]
    fn a_github_push_with_a_wrong_or_missing_signature_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("X-GitHub-Event", HeaderValue::from_static("push"));
        let err = receive(
            WebhookProvider::Github,
            &secret(),
            &h,
            GITHUB_PUSH.as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, WebhookError::MissingHeader { .. }), "{err:?}");
        let sig = github_signature(b"another secret", GITHUB_PUSH.as_bytes());
        h.insert("X-Hub-Signature-256", HeaderValue::from_str(&sig).unwrap());
        let err = receive(
            WebhookProvider::Github,
            &secret(),
            &h,
            GITHUB_PUSH.as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, WebhookError::SignatureMismatch), "{err:?}");
        assert_eq!(err.status(), 401);
        // A body changed after signing.
        let sig = github_signature(secret().expose().as_bytes(), GITHUB_PUSH.as_bytes());
        h.insert("X-Hub-Signature-256", HeaderValue::from_str(&sig).unwrap());
        let tampered = GITHUB_PUSH.replace("refs/heads/main", "refs/heads/evil");
        assert!(receive(WebhookProvider::Github, &secret(), &h, tampered.as_bytes()).is_err());
        h.insert("X-Hub-Signature-256", HeaderValue::from_static("sha1=abc"));
        let err = receive(
            WebhookProvider::Github,
            &secret(),
            &h,
            GITHUB_PUSH.as_bytes(),
        )
        .unwrap_err();
        assert!(
            matches!(err, WebhookError::MalformedSignature { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn github_ping_and_other_events_are_not_pushes() {
        let body = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
        let sig = github_signature(secret().expose().as_bytes(), body);
        let mut h = HeaderMap::new();
        h.insert("X-Hub-Signature-256", HeaderValue::from_str(&sig).unwrap());
        h.insert("X-GitHub-Event", HeaderValue::from_static("ping"));
        assert_eq!(
            receive(WebhookProvider::Github, &secret(), &h, body).unwrap(),
            WebhookEvent::Ping
        );
        h.insert("X-GitHub-Event", HeaderValue::from_static("issues"));
        assert_eq!(
            receive(WebhookProvider::Github, &secret(), &h, body).unwrap(),
            WebhookEvent::Ignored {
                event: "issues".into()
            }
        );
    }

    #[test]
    fn a_gitlab_push_with_the_right_token_yields_the_branch_and_commit() {
        let mut h = HeaderMap::new();
        h.insert("X-Gitlab-Event", HeaderValue::from_static("Push Hook"));
        h.insert(
            "X-Gitlab-Token",
            HeaderValue::from_str(secret().expose()).unwrap(),
        );
        let WebhookEvent::Push(p) = receive(
            WebhookProvider::Gitlab,
            &secret(),
            &h,
            GITLAB_PUSH.as_bytes(),
        )
        .unwrap() else {
            panic!("not a push")
        };
        assert_eq!(p.branch.as_deref(), Some("main"));
        assert_eq!(p.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
        assert_eq!(p.repository.as_deref(), Some("acme/fleet"));

        h.insert("X-Gitlab-Token", HeaderValue::from_static("wrong"));
        let err = receive(
            WebhookProvider::Gitlab,
            &secret(),
            &h,
            GITLAB_PUSH.as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, WebhookError::TokenMismatch), "{err:?}");
        assert!(!err.to_string().contains("Secret"), "{err}");
    }

    #[test]
    fn tag_pushes_and_branch_deletions_are_told_apart() {
        let body = GITLAB_PUSH
            .replace("refs/heads/main", "refs/tags/v1.2.0")
            .replace("\"push\"", "\"tag_push\"");
        let WebhookEvent::Push(p) = parse_gitlab("Tag Push Hook", body.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(p.tag.as_deref(), Some("v1.2.0"));
        assert!(p.matches(&GitRef::Tag("v1.2.0".into())));
        let deleted = GITHUB_PUSH
            .replace("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", &"0".repeat(40))
            .replace("\"deleted\": false", "\"deleted\": true");
        let WebhookEvent::Push(p) = parse_github("push", deleted.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(p.deleted);
    }

    #[test]
    fn a_malformed_push_payload_is_a_400() {
        let err = parse_github("push", b"{\"ref\": 1}").unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("push payload"), "{err}");
    }
}
