//! Property tests of `compile::ImageRef` against the OCI distribution reference grammar:
//! references generated from the grammar parse into exactly their parts (the first
//! component is a registry only with `.`, `:` or `localhost`), and any string either is
//! refused or parses losslessly into parts that obey the grammar.
#![allow(clippy::unwrap_used)]

use fleetform_engine::compile::ImageRef;
use proptest::prelude::*;

fn component(first: bool) -> impl Strategy<Value = String> {
    let sep = if first {
        // A first component with `.` would be a registry host; see `domain()`.
        prop_oneof![Just("_"), Just("__"), Just("-"), Just("--")].boxed()
    } else {
        prop_oneof![Just("."), Just("_"), Just("__"), Just("-"), Just("---")].boxed()
    };
    (
        "[a-z0-9]{1,6}",
        proptest::collection::vec((sep, "[a-z0-9]{1,6}"), 0..3),
    )
        .prop_map(|(head, rest)| {
            let mut s = head;
            for (sep, part) in rest {
                s.push_str(sep);
                s.push_str(&part);
            }
            s
        })
}

fn domain() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("localhost".to_string())),
        Just(Some("nvcr.io".to_string())),
        "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){1,2}".prop_map(Some),
        ("[a-z][a-z0-9-]{0,6}[a-z0-9]", 1u16..=65535).prop_map(|(h, p)| Some(format!("{h}:{p}"))),
        (0u8..=255, 0u8..=255, 1u16..=65535)
            .prop_map(|(a, b, p)| Some(format!("10.{a}.{b}.1:{p}"))),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        component(true),
        proptest::collection::vec(component(false), 0..4),
    )
        .prop_map(|(first, rest)| {
            std::iter::once(first)
                .chain(rest)
                .collect::<Vec<_>>()
                .join("/")
        })
}

fn render(d: &Option<String>, p: &str, t: &Option<String>, g: &Option<String>) -> String {
    let mut s = match d {
        Some(d) => format!("{d}/{p}"),
        None => p.to_string(),
    };
    if let Some(t) = t {
        s.push(':');
        s.push_str(t);
    }
    if let Some(g) = g {
        s.push('@');
        s.push_str(g);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn a_reference_from_the_grammar_parses_into_exactly_its_parts(
        d in domain(),
        p in path(),
        t in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}"),
        g in proptest::option::of("[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}"))),
    ) {
        let s = render(&d, &p, &t, &g);
        let r = ImageRef::parse(&s).unwrap();
        prop_assert_eq!(&r.domain, &d, "{}", s);
        prop_assert_eq!(&r.path, &p, "{}", s);
        prop_assert_eq!(&r.tag, &t, "{}", s);
        prop_assert_eq!(&r.digest, &g, "{}", s);
        prop_assert_eq!(r.name(), render(&d, &p, &None, &None));
    }

    #[test]
    fn any_string_is_refused_or_parsed_losslessly_into_grammatical_parts(
        s in prop_oneof!["[a-zA-Z0-9./:@_-]{0,40}", any::<String>()],
    ) {
        if let Ok(r) = ImageRef::parse(&s) {
            prop_assert_eq!(render(&r.domain, &r.path, &r.tag, &r.digest), s.clone());
            for c in r.path.split('/') {
                prop_assert!(!c.is_empty() && c != "." && c != "..", "{}", s);
                prop_assert!(c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)), "{}", s);
            }
            if let Some(d) = &r.domain {
                prop_assert!(d.contains(['.', ':']) || d == "localhost", "{}", s);
            } else if let Some((first, _)) = r.path.split_once('/') {
                prop_assert!(!first.contains(['.', ':']) && first != "localhost", "{}", s);
            }
        }
    }
}
