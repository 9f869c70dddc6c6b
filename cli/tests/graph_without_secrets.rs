//! `graph` talks to no provider, so it must not need the fleet's secrets: on a fleet
//! whose secret files and variables are absent (the examples), it succeeds like
//! `validate` does, and no placeholder reaches its output.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn graph_works_where_the_secrets_are_unreadable() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // The examples reference secret files (../secrets/...) that are not in the repository.
    assert!(!repo.join("examples/secrets").exists());
    for ex in ["examples/small", "examples/dsx"] {
        let dir = repo.join(ex);
        for format in ["text", "dot", "mermaid"] {
            let out = Command::new(env!("CARGO_BIN_EXE_fleetform"))
                .args([
                    "graph",
                    "--fleet",
                    dir.to_str().unwrap(),
                    "--format",
                    format,
                ])
                .env("NO_COLOR", "1")
                .env_remove("FLEETFORM_SECRETS_DIR")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{ex} {format}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("NIMService"), "{ex} {format}: {stdout}");
            assert!(!stdout.contains("placeholder"), "{ex} {format}");
        }
    }
}
