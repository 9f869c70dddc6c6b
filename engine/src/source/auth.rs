//! Credentials and host-key checks for fetches. Secrets are resolved once per
//! fetch, handed to libgit2 and dropped; they never reach an error message.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};
use hmac::{Hmac, Mac};

use super::{GitAuth, SourceError, SourceSpec, redact_url};
use crate::secret::SecretResolver;
use crate::sensitive::Sensitive;

/// Resolved credentials for one fetch.
pub(crate) enum Credentials {
    None,
    UserPass {
        username: Option<String>,
        password: Sensitive<String>,
    },
    SshKey {
        key: Sensitive<String>,
        passphrase: Option<Sensitive<String>>,
        known_hosts: Option<PathBuf>,
        host_pattern: Option<String>,
    },
}

impl Credentials {
    pub(crate) fn resolve(
        spec: &SourceSpec,
        resolver: &dyn SecretResolver,
    ) -> Result<Self, SourceError> {
        let secret_err = |source| SourceError::Secret {
            url: redact_url(&spec.url),
            source,
        };
        Ok(match &spec.auth {
            None => Credentials::None,
            Some(GitAuth::Token { token }) => Credentials::UserPass {
                username: None,
                password: resolver.resolve(token).map_err(secret_err)?,
            },
            Some(GitAuth::Basic { username, password }) => Credentials::UserPass {
                username: Some(username.clone()),
                password: resolver.resolve(password).map_err(secret_err)?,
            },
            Some(GitAuth::SshKey {
                private_key,
                known_hosts,
                passphrase,
            }) => Credentials::SshKey {
                key: resolver.resolve(private_key).map_err(secret_err)?,
                passphrase: match passphrase {
                    Some(p) => Some(resolver.resolve(p).map_err(secret_err)?),
                    None => None,
                },
                known_hosts: known_hosts.clone(),
                host_pattern: ssh_host_pattern(&spec.url),
            },
        })
    }
}

/// What a callback refused, kept aside because libgit2 only passes on a
/// generic "user cancelled" error.
pub(crate) enum CallbackError {
    UnknownHostKey {
        host: String,
        key_type: String,
        known_hosts: PathBuf,
    },
    KnownHostsUnreadable {
        known_hosts: PathBuf,
        source: std::io::Error,
    },
    AuthRejected {
        method: &'static str,
    },
}

impl CallbackError {
    pub(crate) fn into_source_error(self, url: &str) -> SourceError {
        match self {
            CallbackError::UnknownHostKey {
                host,
                key_type,
                known_hosts,
            } => SourceError::UnknownHostKey {
                url: url.to_string(),
                host,
                key_type,
                known_hosts,
            },
            CallbackError::KnownHostsUnreadable {
                known_hosts,
                source,
            } => SourceError::KnownHosts {
                url: url.to_string(),
                known_hosts,
                source,
            },
            CallbackError::AuthRejected { method } => SourceError::AuthRejected {
                url: url.to_string(),
                method,
            },
        }
    }
}

#[derive(Default)]
pub(crate) struct CallbackState {
    error: RefCell<Option<CallbackError>>,
    credential_calls: Cell<u32>,
}

impl CallbackState {
    pub(crate) fn take_error(&self) -> Option<CallbackError> {
        self.error.borrow_mut().take()
    }

    fn fail(&self, e: CallbackError) -> git2::Error {
        *self.error.borrow_mut() = Some(e);
        git2::Error::from_str("refused by fleetform")
    }
}

pub(crate) fn callbacks<'a>(
    creds: &'a Credentials,
    state: &'a CallbackState,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    cb.credentials(move |_url, username_from_url, allowed| {
        let calls = state.credential_calls.get() + 1;
        state.credential_calls.set(calls);
        match creds {
            Credentials::None => Err(git2::Error::from_str(
                "the remote asks for credentials and the source has no auth",
            )),
            Credentials::UserPass { username, password } => {
                if calls > 1 {
                    return Err(state.fail(CallbackError::AuthRejected {
                        method: "username/password or token",
                    }));
                }
                let user = username
                    .as_deref()
                    .or(username_from_url)
                    .unwrap_or("x-access-token");
                Cred::userpass_plaintext(user, password.expose())
            }
            Credentials::SshKey {
                key, passphrase, ..
            } => {
                let user = username_from_url.unwrap_or("git");
                if allowed.contains(CredentialType::USERNAME)
                    && !allowed.contains(CredentialType::SSH_KEY)
                {
                    return Cred::username(user);
                }
                if calls > 2 {
                    return Err(state.fail(CallbackError::AuthRejected { method: "SSH key" }));
                }
                Cred::ssh_key_from_memory(
                    user,
                    None,
                    key.expose(),
                    passphrase.as_ref().map(|p| p.expose().as_str()),
                )
            }
        }
    });
    cb.certificate_check(move |cert, _host| {
        let Credentials::SshKey {
            known_hosts: Some(file),
            host_pattern: Some(host),
            ..
        } = creds
        else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let key_type = hostkey
            .hostkey_type()
            .map(|t| t.name().to_string())
            .unwrap_or_else(|| "unknown".into());
        let Some(blob) = hostkey.hostkey() else {
            return Err(state.fail(CallbackError::UnknownHostKey {
                host: host.clone(),
                key_type,
                known_hosts: file.clone(),
            }));
        };
        match known_host_matches(file, host, &key_type, blob) {
            Ok(true) => Ok(CertificateCheckStatus::CertificateOk),
            Ok(false) => Err(state.fail(CallbackError::UnknownHostKey {
                host: host.clone(),
                key_type,
                known_hosts: file.clone(),
            })),
            Err(source) => Err(state.fail(CallbackError::KnownHostsUnreadable {
                known_hosts: file.clone(),
                source,
            })),
        }
    });
    cb
}

/// `host` or `[host]:port` as known_hosts writes it, from an SSH URL.
pub(crate) fn ssh_host_pattern(url: &str) -> Option<String> {
    let (host, port) = if let Some(rest) = url
        .strip_prefix("ssh://")
        .or_else(|| url.strip_prefix("git+ssh://"))
    {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        let hostport = authority
            .rsplit_once('@')
            .map(|(_, h)| h)
            .unwrap_or(authority);
        if let Some(stripped) = hostport.strip_prefix('[') {
            // [::1]:22
            let (h, after) = stripped.split_once(']')?;
            (
                h.to_string(),
                after
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(22u16),
            )
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (hostport.to_string(), 22),
            }
        }
    } else {
        let before_colon = url.split_once(':')?.0;
        let host = before_colon
            .rsplit_once('@')
            .map(|(_, h)| h)
            .unwrap_or(before_colon);
        (host.to_string(), 22)
    };
    Some(if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    })
}

/// Whether a known_hosts file lists this key for this host (plain, glob or
/// hashed `|1|salt|hash` entries; a matching `@revoked` line refuses).
fn known_host_matches(
    file: &Path,
    host: &str,
    key_type: &str,
    blob: &[u8],
) -> std::io::Result<bool> {
    let text = std::fs::read_to_string(file)?;
    let mut found = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if first.starts_with('@') {
            if first != "@revoked" {
                continue; // @cert-authority: host certificates are not supported
            }
            revoked = true;
            first = fields.next().unwrap_or_default();
        }
        let (Some(kt), Some(key_b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if kt != key_type || !hosts_match(first, host) {
            continue;
        }
        let Ok(key) = base64::engine::general_purpose::STANDARD.decode(key_b64) else {
            continue;
        };
        if key == blob {
            if revoked {
                return Ok(false);
            }
            found = true;
        }
    }
    Ok(found)
}

fn hosts_match(patterns: &str, host: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
            return false;
        };
        mac.update(host.as_bytes());
        return mac.verify_slice(&hash).is_ok();
    }
    let mut matched = false;
    for p in patterns.split(',') {
        if let Some(neg) = p.strip_prefix('!') {
            if glob(neg, host) {
                return false;
            }
        } else if glob(p, host) {
            matched = true;
        }
    }
    matched
}

/// known_hosts globbing: `*` and `?`.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_follow_known_hosts_conventions() {
        assert_eq!(
            ssh_host_pattern("ssh://git@127.0.0.1:2222/srv/x.git").as_deref(),
            Some("[127.0.0.1]:2222")
        );
        assert_eq!(
            ssh_host_pattern("ssh://git@example.com/x.git").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            ssh_host_pattern("git@github.com:acme/fleet.git").as_deref(),
            Some("github.com")
        );
    }

    #[test]
    fn hashed_and_glob_hosts_match() {
        assert!(hosts_match(
            "*.example.com,!bad.example.com",
            "git.example.com"
        ));
        assert!(!hosts_match(
            "*.example.com,!bad.example.com",
            "bad.example.com"
        ));
        // `ssh-keygen -H` output for host "github.com" with a fixed salt.
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"github.com");
        let b64 = base64::engine::general_purpose::STANDARD;
        let entry = format!(
            "|1|{}|{}",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        assert!(hosts_match(&entry, "github.com"));
        assert!(!hosts_match(&entry, "gitlab.com"));
    }
}
