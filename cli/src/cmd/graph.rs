//! `fleetform graph`: the dependency graph, without talking to any provider.

use anyhow::Result;
use fleetform_engine::session::Outcome;

use super::invalid;
use crate::fleet::{self, LoadFailure, SourceArgs};
use crate::{Format, GraphFormat};

pub(crate) async fn graph(source: SourceArgs, format: GraphFormat) -> Result<Outcome> {
    // The graph talks to no provider: secrets are not read (placeholders stand in), and chart
    // releases are rendered for the Kubernetes versions the manifest declares.
    let (fleet, mut compiled) = match source.read(None).and_then(|(_, files)| {
        fleet::compile_files(&files, &fleetform_engine::secret::Placeholders)
    }) {
        Ok(x) => x,
        Err(LoadFailure::Invalid(d, files)) => return Err(invalid(&d, &files, Format::Text)),
        Err(LoadFailure::Other(e)) => return Err(e),
    };
    if let Err(diags) = fleet::expand_releases(
        &fleet,
        &mut compiled,
        &source.secrets_base(),
        std::sync::Arc::new(fleetform_engine::secret::Placeholders),
        false,
    )
    .await
    {
        for d in &diags {
            eprintln!("warning: {} (its objects are not drawn)", d.summary);
        }
    }
    let graph = fleetform_engine::graph::Graph::build(&compiled.resources)?;
    match format {
        GraphFormat::Text => print!("{graph}"),
        GraphFormat::Dot => print!("{}", graph.to_dot()),
        GraphFormat::Mermaid => print!("{}", graph.to_mermaid()),
    }
    Ok(Outcome::Clean)
}
