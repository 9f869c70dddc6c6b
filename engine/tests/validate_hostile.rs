//! Hostile input is refused with a located error, in bounded time and memory.
//! Big inputs are generated here in a temporary directory, never committed.
#![allow(clippy::unwrap_used)]

use fleetform_engine::load::{self, Limits, SourceFile};

fn codes(d: &[fleetform_engine::diag::Diagnostic]) -> Vec<&str> {
    d.iter().map(|d| d.code.as_str()).collect()
}

#[test]
fn a_file_over_the_size_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(dir.path().join("huge.yaml")).unwrap();
    f.set_len(17 << 20).unwrap(); // sparse: 17 MiB without writing them
    let err = load::read_dir(dir.path()).unwrap_err();
    assert_eq!(codes(&err), ["file-too-large"]);
    assert!(err[0].summary.contains("huge.yaml"), "{}", err[0].summary);
}

#[test]
fn a_file_over_the_size_limit_is_refused_by_load_too() {
    let bytes = vec![b'#'; (16 << 20) + 1];
    let (docs, diags) = load::load(&[SourceFile {
        path: "big.yaml".into(),
        bytes,
    }]);
    assert!(docs.is_empty());
    assert_eq!(codes(&diags), ["file-too-large"]);
}

#[test]
fn non_utf8_names_the_file_and_byte_offset() {
    let bytes = b"apiVersion: v\nkind: Host\nname: caf\xe9\n".to_vec();
    let (_, diags) = load::load(&[SourceFile {
        path: "latin1.yaml".into(),
        bytes,
    }]);
    assert_eq!(codes(&diags), ["not-utf8"]);
    assert!(
        diags[0].summary.contains("latin1.yaml") && diags[0].summary.contains("offset 34"),
        "{}",
        diags[0].summary
    );
    let s = diags[0].span.as_ref().unwrap();
    assert_eq!((s.line, s.column), (3, 10));
}

#[cfg(unix)]
#[test]
fn a_symlink_pointing_outside_the_fleet_is_refused_by_name() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("secret.yaml"),
        "apiVersion: v\nkind: Host\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.yaml"), "apiVersion: v\nkind: Host\n").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.yaml"),
        dir.path().join("escape.yaml"),
    )
    .unwrap();
    let err = load::read_dir(dir.path()).unwrap_err();
    assert_eq!(codes(&err), ["path-escape"]);
    assert!(err[0].summary.contains("escape.yaml"));
}

#[cfg(unix)]
#[test]
fn a_symlink_inside_the_fleet_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("shared")).unwrap();
    std::fs::write(
        dir.path().join("shared/a.yaml"),
        "apiVersion: v\nkind: Host\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path().join("shared/a.yaml"), dir.path().join("b.yaml"))
        .unwrap();
    let files = load::read_dir(dir.path()).unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["b.yaml", "shared/a.yaml"]);
}

#[test]
fn an_empty_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "not yaml").unwrap();
    assert_eq!(
        codes(&load::read_dir(dir.path()).unwrap_err()),
        ["empty-fleet"]
    );
}

#[test]
fn deep_block_nesting_is_refused_at_the_limit() {
    let mut s = String::from("apiVersion: v\nkind: Host\nspec:\n");
    for i in 0..300 {
        s.push_str(&" ".repeat(i + 1));
        s.push_str("a:\n");
    }
    let (_, diags) = load::load(&[SourceFile {
        path: "deep.yaml".into(),
        bytes: s.into_bytes(),
    }]);
    assert_eq!(codes(&diags), ["too-deep"]);
    assert_eq!(diags[0].span.as_ref().unwrap().line, 3 + 128);
}

#[test]
fn deep_flow_nesting_is_refused() {
    let s = format!(
        "apiVersion: v\nkind: Host\nspec: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (docs, diags) = load::load(&[SourceFile {
        path: "deep.yaml".into(),
        bytes: s.into_bytes(),
    }]);
    assert!(docs.is_empty());
    assert_eq!(diags.len(), 1, "{diags:?}");
}

#[test]
fn a_billion_laughs_is_refused_without_expanding() {
    let mut s = String::from(
        "apiVersion: v\nkind: Host\na0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..30 {
        let p = format!("*a{}", i - 1);
        s.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 10].join(", ")));
    }
    let (docs, diags) = load::load(&[SourceFile {
        path: "lol.yaml".into(),
        bytes: s.into_bytes(),
    }]);
    assert!(docs.is_empty());
    assert_eq!(codes(&diags), ["alias-expansion"]);
}

#[test]
fn many_small_aliases_hit_the_alias_count_limit() {
    let mut s = String::from("apiVersion: v\nkind: Host\nx: &x 1\nl:\n");
    for _ in 0..20_000 {
        s.push_str("  - *x\n");
    }
    let (_, diags) = load::load(&[SourceFile {
        path: "many.yaml".into(),
        bytes: s.into_bytes(),
    }]);
    assert_eq!(codes(&diags), ["too-many-aliases"]);
}

#[test]
fn the_node_limit_is_enforced_while_parsing() {
    let limits = Limits {
        max_nodes: 1_000,
        ..Limits::default()
    };
    let mut s = String::from("apiVersion: v\nkind: Host\nl:\n");
    for i in 0..5_000 {
        s.push_str(&format!("  - {i}\n"));
    }
    let (_, diags) = load::load_with(
        &[SourceFile {
            path: "n.yaml".into(),
            bytes: s.into_bytes(),
        }],
        &limits,
    );
    assert_eq!(codes(&diags), ["too-many-nodes"]);
}

#[test]
fn a_document_without_kind_is_an_error_and_others_still_load() {
    let files = [
        SourceFile {
            path: "a.yaml".into(),
            bytes: b"apiVersion: fleetform.dev/v1alpha1\nmetadata: {name: x}\n".to_vec(),
        },
        SourceFile {
            path: "b.yaml".into(),
            bytes: b"apiVersion: fleetform.dev/v1alpha1\nkind: Rack\n".to_vec(),
        },
    ];
    let (docs, diags) = load::load(&files);
    assert_eq!(codes(&diags), ["missing-kind"]);
    assert_eq!(docs.len(), 1);
}

#[test]
fn garbage_bytes_never_panic() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        let len = (seed % 400) as usize;
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let alphabet = b"ab:- \n[]{}&*!|>'\"#%@`,?~\t0.1";
            bytes.push(alphabet[(seed % alphabet.len() as u64) as usize]);
        }
        let _ = load::load(&[SourceFile {
            path: "g.yaml".into(),
            bytes,
        }]);
    }
}
