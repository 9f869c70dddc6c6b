//! Diagnostics as text: the field path as YAML reads it, a source excerpt with a caret,
//! and every secret in the excerpt masked.

use std::collections::HashMap;

use super::secrets::looks_like_key;
use crate::diag::Diagnostic;
use crate::load::SourceFile;

/// `/spec/pools/0/hosts` → `spec.pools[0].hosts`.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else if seg.contains(['.', ' ', '[', ']']) || seg.is_empty() {
            out.push_str(&format!("[\"{seg}\"]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// Renders diagnostics as plain text with a source snippet and a caret:
///
/// ```text
/// error[unknown-reference]: pool `train` names tenant `acme-corp`, which is not defined
///   --> pools.yaml:7:11
///    |
///  7 |   tenant: acme-corp
///    |           ^
///    = field: spec.tenant
///    = hint: did you mean `acme`?
/// ```
pub fn render_text(diags: &[Diagnostic], files: &[SourceFile]) -> String {
    let by_path: HashMap<&str, &SourceFile> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut out = String::new();
    for d in diags {
        let sev = match d.severity {
            crate::diag::Severity::Error => "error",
            crate::diag::Severity::Warning => "warning",
        };
        out.push_str(&format!("{sev}[{}]: {}\n", d.code, d.summary));
        let mut gutter = 2;
        if let Some(s) = &d.span {
            let line_text = by_path
                .get(s.file.as_str())
                .and_then(|f| std::str::from_utf8(&f.bytes).ok())
                .and_then(|t| t.lines().nth(s.line.saturating_sub(1) as usize));
            let num = s.line.to_string();
            gutter = num.len() + 1;
            let pad = " ".repeat(gutter);
            out.push_str(&format!("{pad}--> {s}\n"));
            if let Some(text) = line_text {
                let text = text.trim_end_matches('\r');
                let text = mask_line(text, d.secret.then_some(s.column));
                let shown: String = text.chars().take(200).collect();
                out.push_str(&format!("{pad}|\n"));
                out.push_str(&format!("{num:>width$} | {shown}\n", width = gutter - 1));
                let caret_col = (s.column.saturating_sub(1) as usize).min(shown.chars().count());
                let lead: String = shown
                    .chars()
                    .take(caret_col)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!("{pad}| {lead}^\n"));
            }
        }
        let pad = " ".repeat(gutter);
        if let Some(f) = &d.field {
            out.push_str(&format!("{pad}= field: {f}\n"));
        }
        if let Some(h) = &d.hint {
            out.push_str(&format!("{pad}= hint: {h}\n"));
        }
        out.push('\n');
    }
    out
}

/// What a masked value is shown as.
pub const MASK: &str = "********";

/// A source line as an excerpt may show it: the scalar starting at `secret_column`
/// (1-based, when the diagnostic is about a secret) and every token that looks like
/// a credential are replaced by [`MASK`]. Text before the column is unchanged, so
/// the caret still points at the (masked) value.
pub fn mask_line(line: &str, secret_column: Option<u32>) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut k = 0;
    let start = secret_column.map(|c| (c.saturating_sub(1) as usize).min(chars.len()));
    while k < chars.len() {
        if Some(k) == start {
            // The scalar: quoted to its closing quote, plain to a flow indicator,
            // a comment or the end of the line.
            let end = match chars[k] {
                q @ ('"' | '\'') => chars[k + 1..]
                    .iter()
                    .position(|c| *c == q)
                    .map_or(chars.len(), |e| k + e + 2),
                _ => {
                    let mut e = k;
                    while e < chars.len()
                        && !matches!(chars[e], ',' | '}' | ']')
                        && !(chars[e] == '#' && e > k && chars[e - 1] == ' ')
                    {
                        e += 1;
                    }
                    while e > k && chars[e - 1] == ' ' {
                        e -= 1;
                    }
                    e
                }
            };
            out.push_str(MASK);
            k = end.max(k + 1);
            continue;
        }
        let delim =
            |c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}' | '[' | ']' | '"' | '\'');
        if delim(chars[k]) {
            out.push(chars[k]);
            k += 1;
            continue;
        }
        let mut e = k;
        while e < chars.len() && !delim(chars[e]) && Some(e) != start {
            e += 1;
        }
        let token: String = chars[k..e].iter().collect();
        if looks_like_key(&token).is_some() {
            out.push_str(MASK);
        } else {
            out.push_str(&token);
        }
        k = e;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_lines_keep_the_text_before_the_value_and_hide_the_value() {
        let key = "nvapi-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
        for (line, col) in [
            (format!("    apiKey: {key}"), 13),
            (format!("    apiKey: \"{key}\" # inline"), 13),
            (format!("  ngc: {{apiKey: {key}, org: x}}"), 17),
            ("      password: hunter2".to_string(), 17),
        ] {
            let m = mask_line(&line, Some(col));
            assert!(!m.contains(key) && !m.contains("hunter2"), "{m}");
            let c = col as usize - 1;
            assert_eq!(m[..c], line[..c], "{m}");
            assert!(m[c..].starts_with(MASK), "{m}");
        }
        // A key-like token is masked even where the diagnostic is about something else.
        let m = mask_line(&format!("  note: {key} # x"), None);
        assert_eq!(m, format!("  note: {MASK} # x"));
        assert_eq!(mask_line("  tenant: acme", None), "  tenant: acme");
    }

    #[test]
    fn field_paths_read_like_yaml() {
        assert_eq!(
            field_path("/spec/pools/0/hosts/2"),
            "spec.pools[0].hosts[2]"
        );
    }
}
