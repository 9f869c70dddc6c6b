//! Commit signature verification: SSH signatures through `ssh-keygen -Y`
//! (git's `gpg.format=ssh`), OpenPGP signatures through `gpgv` / `gpg`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use git2::Oid;
use serde::{Deserialize, Serialize};

use super::{FleetRepo, SourceError};

/// Trust roots for commit signatures. With neither set, verification is off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Verification {
    /// An SSH allowed-signers file (`ssh-keygen(1)` ALLOWED SIGNERS): each
    /// line names principals (the committer e-mails) and the key they may
    /// sign with. A commit passes when its signature verifies for the
    /// principal equal to its committer e-mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_signers: Option<PathBuf>,
    /// OpenPGP trust root: a keyring file (`gpg --export > keyring.gpg`,
    /// checked with `gpgv --keyring`) or a GnuPG home directory (checked with
    /// `gpg --homedir`). Every key in it is trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpg_keyring: Option<PathBuf>,
}

impl Verification {
    /// Whether any trust root is configured.
    pub fn is_enabled(&self) -> bool {
        self.allowed_signers.is_some() || self.gpg_keyring.is_some()
    }
}

/// Which kind of signature a commit carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureKind {
    /// `-----BEGIN SSH SIGNATURE-----`.
    Ssh,
    /// `-----BEGIN PGP SIGNATURE-----`.
    OpenPgp,
}

/// A commit whose signature was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The commit.
    pub commit: String,
    /// SSH or OpenPGP.
    pub kind: SignatureKind,
    /// Who signed: the SSH principal, or the OpenPGP user id.
    pub signer: String,
    /// The key: `SHA256:…` fingerprint (SSH) or OpenPGP fingerprint.
    pub key: String,
}

pub(super) fn verify_commit(
    repo: &FleetRepo,
    oid: Oid,
    v: &Verification,
) -> Result<Verified, SourceError> {
    let commit_hex = oid.to_string();
    let commit = repo.find_commit(oid)?;
    let (sig, data) = match repo.repo.extract_signature(&oid, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(SourceError::Unsigned { commit: commit_hex });
        }
        Err(e) => return Err(repo.git("extracting the commit signature", &e)),
    };
    let sig_text = String::from_utf8_lossy(&sig).into_owned();
    let committer_email = String::from_utf8_lossy(commit.committer().email_bytes()).into_owned();
    let time = commit.committer().when().seconds();
    let work = tempfile::tempdir()
        .map_err(|source| verifier_err(&commit_hex, "a temporary directory", source))?;
    let sig_file = work.path().join("commit.sig");
    std::fs::write(&sig_file, &*sig)
        .map_err(|source| verifier_err(&commit_hex, "a temporary file", source))?;

    if sig_text
        .trim_start()
        .starts_with("-----BEGIN SSH SIGNATURE-----")
    {
        verify_ssh(
            &commit_hex,
            &sig_file,
            &data,
            &committer_email,
            time,
            v.allowed_signers.as_deref(),
        )
    } else if sig_text
        .trim_start()
        .starts_with("-----BEGIN PGP SIGNATURE-----")
    {
        let data_file = work.path().join("commit.data");
        std::fs::write(&data_file, &*data)
            .map_err(|source| verifier_err(&commit_hex, "a temporary file", source))?;
        verify_pgp(
            &commit_hex,
            &sig_file,
            &data_file,
            work.path(),
            v.gpg_keyring.as_deref(),
        )
    } else {
        Err(SourceError::Untrusted {
            commit: commit_hex,
            signer: "an unknown signer".into(),
            why: "the signature is neither SSH nor OpenPGP (x509 signatures are not supported)"
                .into(),
        })
    }
}

fn verifier_err(commit: &str, tool: &str, source: std::io::Error) -> SourceError {
    SourceError::Verifier {
        commit: commit.to_string(),
        tool: tool.to_string(),
        source,
    }
}

struct Run {
    ok: bool,
    stdout: String,
}

fn run(commit: &str, mut cmd: Command, stdin: Option<&[u8]>) -> Result<Run, SourceError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    cmd.env("LC_ALL", "C").stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|source| verifier_err(commit, &tool, source))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A verifier that exits early closes the pipe; its status says why.
        let _ = pipe.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|source| verifier_err(commit, &tool, source))?;
    let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(Run {
        ok: out.status.success(),
        stdout,
    })
}

/// `SHA256:…` from ssh-keygen's "Good "git" signature … with ED25519 key SHA256:…".
fn ssh_key_of(output: &str) -> Option<String> {
    let at = output.find(" key SHA256:")?;
    let rest = &output[at + 5..];
    Some(rest.split_whitespace().next()?.to_string())
}

fn ssh_time(secs: i64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn verify_ssh(
    commit: &str,
    sig_file: &Path,
    data: &[u8],
    committer: &str,
    time: i64,
    allowed: Option<&Path>,
) -> Result<Verified, SourceError> {
    // Who signed, whatever the allow-list says (also checks the signature
    // matches the commit).
    let mut check = Command::new("ssh-keygen");
    check
        .args(["-Y", "check-novalidate", "-n", "git", "-s"])
        .arg(sig_file);
    let checked = run(commit, check, Some(data))?;
    let key = ssh_key_of(&checked.stdout).unwrap_or_else(|| "an unknown SSH key".into());
    if !checked.ok {
        return Err(SourceError::Untrusted {
            commit: commit.into(),
            signer: key,
            why: "the SSH signature does not verify against the commit".into(),
        });
    }
    let Some(allowed) = allowed else {
        return Err(SourceError::Untrusted {
            commit: commit.into(),
            signer: key,
            why: "SSH signatures are not accepted: no allowedSigners file is configured".into(),
        });
    };
    let mut verify = Command::new("ssh-keygen");
    verify
        .args(["-Y", "verify", "-f"])
        .arg(allowed)
        .args(["-I", committer, "-n", "git", "-s"])
        .arg(sig_file)
        .arg(format!("-Overify-time={}", ssh_time(time)));
    let verified = run(commit, verify, Some(data))?;
    if verified.ok {
        return Ok(Verified {
            commit: commit.into(),
            kind: SignatureKind::Ssh,
            signer: committer.into(),
            key: ssh_key_of(&verified.stdout).unwrap_or(key),
        });
    }
    // Refused: say whether the key is known for someone else.
    let mut find = Command::new("ssh-keygen");
    find.args(["-Y", "find-principals", "-f"])
        .arg(allowed)
        .arg("-s")
        .arg(sig_file);
    let found = run(commit, find, None)?;
    let why = if found.ok && !found.stdout.trim().is_empty() {
        let principals: Vec<&str> = found
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        format!(
            "the key is allowed for {} in {}, not for the committer <{committer}>",
            principals.join(", "),
            allowed.display()
        )
    } else {
        format!(
            "the key is not in {} (committer <{committer}>)",
            allowed.display()
        )
    };
    Err(SourceError::Untrusted {
        commit: commit.into(),
        signer: key,
        why,
    })
}

fn verify_pgp(
    commit: &str,
    sig_file: &Path,
    data_file: &Path,
    work: &Path,
    keyring: Option<&Path>,
) -> Result<Verified, SourceError> {
    let Some(keyring) = keyring else {
        return Err(SourceError::Untrusted {
            commit: commit.into(),
            signer: "an OpenPGP key".into(),
            why: "OpenPGP signatures are not accepted: no gpgKeyring is configured".into(),
        });
    };
    let keyring = std::path::absolute(keyring).unwrap_or_else(|_| keyring.to_path_buf());
    let cmd = if keyring.is_dir() {
        let mut c = Command::new("gpg");
        c.arg("--batch")
            .arg("--no-tty")
            .arg("--homedir")
            .arg(&keyring)
            .args(["--status-fd", "1", "--verify"]);
        c.arg(sig_file).arg(data_file);
        c
    } else {
        let mut c = Command::new("gpgv");
        c.arg("--homedir")
            .arg(work)
            .args(["--status-fd", "1", "--keyring"])
            .arg(&keyring);
        c.arg(sig_file).arg(data_file);
        c
    };
    let out = run(commit, cmd, None)?;
    let mut good_uid = None;
    let mut fingerprint = None;
    let mut key_id = None;
    let mut problem = None;
    for line in out.stdout.lines() {
        let Some(status) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        let mut words = status.splitn(3, ' ');
        let (kw, a, rest) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        match kw {
            "GOODSIG" => {
                key_id = Some(a.to_string());
                good_uid = Some(rest.to_string());
            }
            "VALIDSIG" => fingerprint = Some(a.to_string()),
            "BADSIG" => {
                key_id = Some(a.to_string());
                problem =
                    Some("the OpenPGP signature does not verify against the commit".to_string());
            }
            "ERRSIG" | "NO_PUBKEY" => {
                key_id = Some(a.to_string());
                problem.get_or_insert_with(|| format!("the key is not in {}", keyring.display()));
            }
            "EXPKEYSIG" | "REVKEYSIG" => {
                key_id = Some(a.to_string());
                problem = Some(format!(
                    "the key is {}",
                    if kw == "EXPKEYSIG" {
                        "expired"
                    } else {
                        "revoked"
                    }
                ));
            }
            _ => {}
        }
    }
    match (out.ok, problem, good_uid, fingerprint) {
        (true, None, Some(uid), Some(fpr)) => Ok(Verified {
            commit: commit.into(),
            kind: SignatureKind::OpenPgp,
            signer: uid,
            key: fpr,
        }),
        (_, problem, _, _) => Err(SourceError::Untrusted {
            commit: commit.into(),
            signer: key_id
                .map(|k| format!("OpenPGP key {k}"))
                .unwrap_or_else(|| "an OpenPGP key".into()),
            why: problem.unwrap_or_else(|| "gpg did not report a good, valid signature".into()),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ssh_verify_time_is_utc_civil_time() {
        assert_eq!(ssh_time(0), "19700101000000Z");
        assert_eq!(ssh_time(1_700_000_000), "20231114221320Z");
    }

    #[test]
    fn ssh_key_fingerprint_is_taken_from_ssh_keygen_output() {
        let out = "Good \"git\" signature with ED25519 key SHA256:abcDEF123\n";
        assert_eq!(ssh_key_of(out).as_deref(), Some("SHA256:abcDEF123"));
    }
}
