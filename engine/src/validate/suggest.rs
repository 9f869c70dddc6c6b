//! "Did you mean": the nearest known name to a misspelt one.

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The nearest candidate within a small edit distance.
pub fn did_you_mean<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (name.chars().count() / 3).max(2);
    let prefix = |c: &str| {
        c.chars()
            .zip(name.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    candidates
        .into_iter()
        .map(|c| {
            (
                distance(&name.to_lowercase(), &c.to_lowercase()),
                std::cmp::Reverse(prefix(c)),
                c,
            )
        })
        .filter(|(d, _, _)| *d <= limit)
        .min()
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_near_names() {
        assert_eq!(
            did_you_mean("acme-corp", ["acme", "acme-crop", "zeta"]),
            Some("acme-crop")
        );
        assert_eq!(did_you_mean("zzzzzz", ["acme"]), None);
    }
}
