//! `fleetform validate`: syntax, schema and semantic rules, with every problem located.

use std::path::PathBuf;

use anyhow::Result;
use fleetform_engine::session::Outcome;

use super::invalid;
use crate::Format;
use crate::fleet::{self, LoadFailure, SourceArgs};

pub(crate) async fn validate(dir: PathBuf, format: Format, fetch_charts: bool) -> Result<Outcome> {
    let source = SourceArgs {
        fleet: dir,
        repo: None,
        reference: "main".into(),
        path: String::new(),
        secrets_dir: None,
        cache_dir: None,
    };
    let (_, files) = match source.read(None) {
        Ok(x) => x,
        Err(LoadFailure::Invalid(d, f)) => return Err(invalid(&d, &f, format)),
        Err(LoadFailure::Other(e)) => return Err(e),
    };
    let (docs, mut diags) = fleetform_engine::load::load(&files);
    if diags.is_empty() {
        match fleetform_engine::validate::validate(&docs) {
            Err(d) => diags = d,
            Ok(fleet) => {
                diags = fleetform_engine::validate::warnings(&docs);
                diags.extend(
                    fleet::check_chart_values(&fleet, &source.secrets_base(), fetch_charts).await,
                );
            }
        }
    }
    fleetform_engine::diag::sort(&mut diags);
    if diags
        .iter()
        .any(|d| d.severity == fleetform_engine::diag::Severity::Error)
    {
        return Err(invalid(&diags, &files, format));
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({ "valid": true, "documents": docs.len(), "diagnostics": diags })
        ),
        _ => {
            if !diags.is_empty() {
                eprint!(
                    "{}",
                    fleetform_engine::validate::render_text(&diags, &files)
                );
            }
            println!(
                "The fleet is valid: {} documents in {} files.",
                docs.len(),
                files.len()
            );
        }
    }
    Ok(Outcome::Clean)
}
