//! Source URLs: which transport, the cache key, and masking credentials.

use sha2::{Digest, Sha256};

/// How a source URL is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A local path or `file://` URL (libgit2's local transport: no shallow fetch).
    Local,
    /// `git://` (git daemon).
    Git,
    /// `ssh://` or scp-style `user@host:path`.
    Ssh,
    /// `http://` or `https://`.
    Http,
}

/// The transport a URL uses.
pub fn transport(url: &str) -> Transport {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("file://") {
        Transport::Local
    } else if lower.starts_with("git://") {
        Transport::Git
    } else if lower.starts_with("ssh://")
        || lower.starts_with("git+ssh://")
        || lower.starts_with("ssh+git://")
    {
        Transport::Ssh
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        Transport::Http
    } else if is_scp_like(url) {
        Transport::Ssh
    } else {
        Transport::Local
    }
}

/// git's rule: `[user@]host:path` with no `/` before the first `:` and not a URL.
fn is_scp_like(url: &str) -> bool {
    if url.contains("://") {
        return false;
    }
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) => colon < slash && colon > 0,
        (Some(colon), None) => colon > 0,
        _ => false,
    }
}

/// What is handed to libgit2: local paths made absolute so that the cache
/// does not depend on the working directory.
pub(crate) fn fetch_url(url: &str) -> String {
    if transport(url) == Transport::Local && !url.to_ascii_lowercase().starts_with("file://") {
        let p = std::path::Path::new(url);
        if p.is_relative()
            && let Ok(cwd) = std::env::current_dir()
        {
            return cwd.join(p).to_string_lossy().into_owned();
        }
    }
    url.to_string()
}

/// Directory name of the cache repository of a URL.
pub(crate) fn cache_key(url: &str) -> String {
    let normalised = fetch_url(url);
    let normalised = normalised.trim_end_matches('/');
    hex::encode(&Sha256::digest(normalised.as_bytes())[..16])
}

/// A URL with any password masked: `https://user:****@host/x`. An HTTP(S)
/// user part without a password is usually a token (`https://<token>@host`)
/// and is masked whole. SSH user names (`git@host:x`) are kept.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let scheme = url[..scheme_end].to_ascii_lowercase();
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:****"),
        None if scheme.starts_with("http") => "****".to_string(),
        None => userinfo.to_string(),
    };
    format!("{}{}{}", &url[..rest_start], masked, &rest[at..])
}

/// Masks every URL-looking word in a free text (libgit2 error messages may
/// quote the URL).
pub(crate) fn redact_text(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut first = true;
    for word in text.split(' ') {
        if !first {
            out.push(' ');
        }
        first = false;
        if word.contains("://") {
            // Keep surrounding quotes/punctuation intact.
            let start = word.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(0);
            out.push_str(&word[..start]);
            out.push_str(&redact_url(&word[start..]));
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_are_masked_in_urls() {
        assert_eq!(
            redact_url("https://user:hunter2@example.com/a.git"),
            "https://user:****@example.com/a.git"
        );
        assert_eq!(
            redact_url("https://ghp_abc@github.com/a.git"),
            "https://****@github.com/a.git"
        );
        assert_eq!(
            redact_url("ssh://git@example.com:2222/a.git"),
            "ssh://git@example.com:2222/a.git"
        );
        assert_eq!(
            redact_url("git@github.com:acme/fleet.git"),
            "git@github.com:acme/fleet.git"
        );
        assert_eq!(
            redact_url("https://example.com/a@b.git"),
            "https://example.com/a@b.git"
        );
        assert_eq!(redact_url("/srv/git/fleet"), "/srv/git/fleet");
    }

    #[test]
    fn urls_inside_messages_are_masked() {
        let m = redact_text("failed to connect to 'https://u:p4ss@h/x': refused");
        assert_eq!(m, "failed to connect to 'https://u:****@h/x': refused");
    }

    #[test]
    fn transports_are_told_apart() {
        assert_eq!(transport("/srv/git/fleet"), Transport::Local);
        assert_eq!(transport("./fleet"), Transport::Local);
        assert_eq!(transport("file:///srv/git/fleet"), Transport::Local);
        assert_eq!(transport("git://127.0.0.1:9418/fleet"), Transport::Git);
        assert_eq!(transport("ssh://git@h:22/fleet"), Transport::Ssh);
        assert_eq!(transport("git@github.com:acme/fleet.git"), Transport::Ssh);
        assert_eq!(transport("https://github.com/acme/fleet"), Transport::Http);
    }
}
