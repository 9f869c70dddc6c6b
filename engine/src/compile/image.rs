//! Image references: the OCI grammar, the fleet's registry, the tag the operators take.

/// `host:port` of an endpoint URL.
pub fn registry_host(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// An image reference taken apart by the OCI distribution reference grammar
/// (`[domain/]path[:tag][@digest]`, as docker and containerd parse it): the first
/// `/`-separated component is a registry host only if it contains `.` or `:` or is
/// `localhost`; otherwise it is the first component of the repository path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host (and port) as written, when the reference names one.
    pub domain: Option<String>,
    /// The repository path within the registry (`nim/meta/llama`), exactly as written.
    pub path: String,
    /// The tag, when one is given.
    pub tag: Option<String>,
    /// The digest (`sha256:...`), when one is given.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// Nothing, or only a tag or digest.
    #[error("the image reference is empty")]
    Empty,
    /// Upper-case letters, `..`, a leading `/` and the like in the repository path.
    #[error(
        "`{0}` is not a valid repository path component (lowercase letters and digits, separated by `.`, `_`, `__` or `-`)"
    )]
    Path(String),
    /// A registry host that is not a host name, IP address or `host:port`.
    #[error("`{0}` is not a registry host[:port]")]
    Domain(String),
    /// A tag that is empty, too long or has characters other than `[A-Za-z0-9_.-]`.
    #[error(
        "`{0}` is not a tag (1 to 128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`)"
    )]
    Tag(String),
    /// A digest that is not `algorithm:hex` (sha256: 64 lowercase hex digits).
    #[error("`{0}` is not a digest (`sha256:` and 64 lowercase hex digits)")]
    Digest(String),
    /// The name is longer than the registry protocol allows.
    #[error("the repository name is {0} characters long, over 255")]
    TooLong(usize),
}

fn is_path_component(c: &str) -> bool {
    // alnum+ ( ( "." | "_" | "__" | "-"+ ) alnum+ )*
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut k = 0;
    while k < b.len() {
        if alnum(b[k]) {
            k += 1;
            continue;
        }
        let sep_start = k;
        while k < b.len() && !alnum(b[k]) {
            k += 1;
        }
        let sep = &c[sep_start..k];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        // [IPv6]:port
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err())
    {
        return false;
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || b"_.-".contains(x))
}

/// `algorithm:encoded` of the OCI image spec; the registered algorithms have fixed
/// lowercase-hex lengths (sha256: 64, sha512: 128).
pub fn is_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '_', '-']).all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphabetic()
                && b.iter().all(|x| x.is_ascii_alphanumeric())
        });
    let lower_hex = |n: usize| {
        hex.len() == n
            && hex
                .bytes()
                .all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x))
    };
    alg_ok
        && match alg {
            "sha256" => lower_hex(64),
            "sha512" => lower_hex(128),
            _ => hex.len() >= 32 && hex.bytes().all(|x| x.is_ascii_hexdigit()),
        }
}

impl ImageRef {
    /// Parses `[domain/]path[:tag][@digest]` by the distribution reference grammar.
    pub fn parse(image: &str) -> Result<Self, ImageRefError> {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => {
                if !is_digest(digest) {
                    return Err(ImageRefError::Digest(digest.to_string()));
                }
                (name, Some(digest.to_string()))
            }
            None => (image, None),
        };
        // The tag follows the last `:` after the last `/` (a port is not a tag).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let t = &name[last_slash + i + 1..];
                if !is_tag(t) {
                    return Err(ImageRefError::Tag(t.to_string()));
                }
                (&name[..last_slash + i], Some(t.to_string()))
            }
            None => (name, None),
        };
        if name.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if name.len() > 255 {
            return Err(ImageRefError::TooLong(name.len()));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                if !is_domain(first) {
                    return Err(ImageRefError::Domain(first.to_string()));
                }
                (Some(first.to_string()), rest)
            }
            _ => (None, name),
        };
        if let Some(bad) = path.split('/').find(|c| !is_path_component(c)) {
            return Err(ImageRefError::Path(bad.to_string()));
        }
        Ok(Self {
            domain,
            path: path.to_string(),
            tag,
            digest,
        })
    }

    /// The name as written: `domain/path`, or `path` when no registry is named.
    pub fn name(&self) -> String {
        match &self.domain {
            Some(d) => format!("{d}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// What a registry resolves: the digest when there is one (it is what will run), else the
    /// tag, else `latest`.
    pub fn reference(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }

    /// The `tag` of an operator's `{repository, tag}` image: the tag with the digest appended
    /// (`1.8@sha256:...`, as digest pinning writes it), so `repository:tag` is the reference
    /// the manifest gave; `latest` when no tag is given.
    pub fn operator_tag(&self) -> String {
        let tag = self.tag.as_deref().unwrap_or("latest");
        match &self.digest {
            Some(d) => format!("{tag}@{d}"),
            None => tag.to_string(),
        }
    }
}

/// The upstream NGC registry host.
pub const NGC_HOST: &str = "nvcr.io";

/// Where a NIM image is resolved and pulled from. The fleet pulls NIM images from one
/// registry, `registries.ngc.endpoint` (nvcr.io, or a mirror of it standing in for it):
/// an image that names no registry, names that endpoint's host, or names `nvcr.io`
/// is that endpoint's repository `path`, exactly as written (a mirror serves nvcr.io's
/// repositories under the same paths). Any other registry is refused: neither pull
/// secrets nor digest pinning would cover it. Returns `(endpoint host, path)`.
pub fn fleet_image(
    image: &ImageRef,
    registry: &crate::manifest::Registry,
) -> Result<(String, String), String> {
    let host = registry_host(&registry.endpoint);
    match image.domain.as_deref() {
        None => Ok((host, image.path.clone())),
        Some(d) if d == host || d == NGC_HOST => Ok((host, image.path.clone())),
        Some(d) => Err(format!(
            "the image names registry `{d}`, but NIM images are pulled from the fleet's registry `{host}` (registries.ngc.endpoint)"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (Option<String>, String, Option<String>, Option<String>) {
        let i = ImageRef::parse(s).unwrap();
        (i.domain, i.path, i.tag, i.digest)
    }

    fn own(
        d: Option<&str>,
        p: &str,
        t: Option<&str>,
        g: Option<&str>,
    ) -> (Option<String>, String, Option<String>, Option<String>) {
        (
            d.map(Into::into),
            p.into(),
            t.map(Into::into),
            g.map(Into::into),
        )
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_first_component_is_a_registry_only_with_a_dot_a_colon_or_localhost() {
        for (s, want) in [
            (
                "nvidia/nim/llama:1.0",
                own(None, "nvidia/nim/llama", Some("1.0"), None),
            ),
            ("nim/llama", own(None, "nim/llama", None, None)),
            ("llama:1.0", own(None, "llama", Some("1.0"), None)),
            (
                "nvcr.io/nim/llama:1.0",
                own(Some("nvcr.io"), "nim/llama", Some("1.0"), None),
            ),
            (
                "127.0.0.1:5000/nim/llama:1.0",
                own(Some("127.0.0.1:5000"), "nim/llama", Some("1.0"), None),
            ),
            (
                "localhost/nim/llama",
                own(Some("localhost"), "nim/llama", None, None),
            ),
            (
                "registry:5000/llama",
                own(Some("registry:5000"), "llama", None, None),
            ),
            (
                "[::1]:5000/a/b:c",
                own(Some("[::1]:5000"), "a/b", Some("c"), None),
            ),
            (
                &format!("nvcr.io/nim/llama:1.8@{D}")[..],
                own(Some("nvcr.io"), "nim/llama", Some("1.8"), Some(D)),
            ),
            (
                &format!("nim/llama@{D}")[..],
                own(None, "nim/llama", None, Some(D)),
            ),
            ("a__b/c--d/e.f_g", own(None, "a__b/c--d/e.f_g", None, None)),
        ] {
            assert_eq!(parts(s), want, "{s}");
        }
    }

    #[test]
    fn references_that_break_the_grammar_are_refused() {
        for s in [
            "",
            ":1.0",
            "../../v2/_catalog",
            "nim/../llama",
            "nim/e..f",
            "nim/a___b",
            "/nim/llama",
            "nim//llama",
            "nim/llama/",
            "Nvidia/nim",
            "nim/Llama",
            "nim/llama:",
            "nim/llama:.x",
            "nim/llama:-x",
            "nim/llama@sha256:abc",
            "nim/llama@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "nim/llama@",
            "nvcr.io:/nim/llama",
            "nvcr.io:99999/nim",
            "-bad.io/nim",
            "nim/llama:1.0 ",
            "nim/llama?x=1",
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?} was accepted");
        }
        let long = format!("nim/{}", "a".repeat(300));
        assert!(matches!(
            ImageRef::parse(&long),
            Err(ImageRefError::TooLong(_))
        ));
    }

    #[test]
    fn the_registry_is_asked_for_the_digest_and_the_operator_gets_tag_at_digest() {
        let i = ImageRef::parse(&format!("nvcr.io/nim/llama:1.8@{D}")).unwrap();
        assert_eq!(i.reference(), D);
        assert_eq!(i.operator_tag(), format!("1.8@{D}"));
        let i = ImageRef::parse("nvcr.io/nim/llama").unwrap();
        assert_eq!(
            (i.reference(), i.operator_tag()),
            ("latest".into(), "latest".into())
        );
        let i = ImageRef::parse(&format!("127.0.0.1:5000/nim/llama@{D}")).unwrap();
        assert_eq!(i.operator_tag(), format!("latest@{D}"));
        assert_eq!(registry_host("https://nvcr.io"), "nvcr.io");
    }

    #[test]
    fn an_image_is_the_repository_written_in_the_fleet_registry() {
        let reg = |endpoint: &str| crate::manifest::Registry {
            endpoint: endpoint.into(),
            insecure: false,
            ca_bundle: None,
            username: None,
            api_key: None,
        };
        let mirror = reg("https://127.0.0.1:5000");
        for (image, want) in [
            ("nvidia/nim/llama:1.0", "nvidia/nim/llama"),
            ("nvcr.io/nim/llama:1.0", "nim/llama"),
            ("127.0.0.1:5000/nim/llama:1.0", "nim/llama"),
        ] {
            let i = ImageRef::parse(image).unwrap();
            assert_eq!(
                fleet_image(&i, &mirror).unwrap(),
                ("127.0.0.1:5000".to_string(), want.to_string()),
                "{image}"
            );
        }
        let i = ImageRef::parse("docker.io/library/llama:1.0").unwrap();
        assert!(fleet_image(&i, &mirror).is_err());
    }
}
