//! `shelf pull`, and the pull options read from the environment.

use std::path::PathBuf;
use std::sync::Arc;

use shelf_pull::PullOptions;
use shelf_store::ModelName;

use crate::cli::{Globals, PullArgs};
use crate::progress::Reporter;
use crate::store_cmds::human_bytes;

pub async fn pull(globals: &Globals, args: PullArgs) -> anyhow::Result<()> {
    let layers = globals.layers()?;
    let name = ModelName::parse(&args.name)?;
    let options = PullOptions {
        connections: args.connections as usize,
        ..options_from_env(args.insecure)
    };
    let entry = shelf_pull::pull(
        layers.local(),
        &name,
        &options,
        Arc::new(Reporter::for_stderr()),
    )
    .await?;
    println!(
        "pulled {} ({}, {})",
        entry.name,
        human_bytes(entry.size),
        entry.digest
    );
    Ok(())
}

/// `HF_ENDPOINT` and `HF_TOKEN` as huggingface_hub reads them; the token
/// falls back to the file `huggingface-cli login` writes.
pub fn options_from_env(insecure: bool) -> PullOptions {
    let defaults = PullOptions::default();
    let hf_endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(defaults.hf_endpoint.clone());
    PullOptions {
        hf_endpoint,
        hf_token: hf_token(),
        insecure,
        ..defaults
    }
}

fn hf_token() -> Option<String> {
    let from_env = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    if from_env.is_some() {
        return from_env.map(|t| t.trim().to_string());
    }
    let path = match std::env::var_os("HF_TOKEN_PATH") {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HF_HOME").map(PathBuf::from).or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface"))
            })?;
            home.join("token")
        }
    };
    let token = std::fs::read_to_string(path).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}
