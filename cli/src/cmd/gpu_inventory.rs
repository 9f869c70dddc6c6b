//! `fleetform gpu inventory`: this node's GPUs through NVML (or a recorded report), optionally
//! published to its cluster.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use fleetform_engine::session::Outcome;

use crate::Format;
use crate::gpu;

pub(crate) async fn gpu_inventory(
    format: Format,
    node: Option<String>,
    from: Option<PathBuf>,
    publish: Option<(Option<PathBuf>, Option<String>)>,
) -> Result<Outcome> {
    let inv = match from {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut inv = fleetform_gpu::Inventory::from_json(&text)
                .with_context(|| format!("{} is not a GPU inventory", path.display()))?;
            if let Some(n) = node {
                inv.node = n;
            }
            inv
        }
        None => {
            let options = fleetform_gpu::CollectOptions {
                node,
                ..Default::default()
            };
            match fleetform_gpu::collect_with(&options) {
                Ok(inv) => inv,
                Err(e) => bail!("{e}"),
            }
        }
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&inv)?),
        _ => print!("{}", fleetform_gpu::render_text(&inv)),
    }
    if let Some((kubeconfig, context)) = publish {
        let client = gpu::client(kubeconfig.as_deref(), context).await?;
        let bytes = gpu::publish(&client, &inv).await?;
        eprintln!(
            "Published the inventory of node {} to ConfigMap {}/{} ({bytes} bytes).",
            inv.node,
            fleetform_gpu::inventory::CONFIGMAP_NAMESPACE,
            inv.node
        );
    }
    Ok(Outcome::Clean)
}
