//! `shelf runner` and `shelf probe`: the processes the server starts.
//!
//! A runner connects to the socket the server named, proves itself with
//! the token in its environment, loads one model, reports it ready (or why
//! it could not load), then serves it until the server says shutdown or
//! goes away. Nothing it prints reaches a client: stdout is closed and its
//! logs join the server's on stderr.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use shelf_engine::LoadedModel;
use shelf_engine_llama::LlamaEngine;
use shelf_runner::frame;
use shelf_runner::proto::{FromRunner, Info};

use crate::cli::{Globals, RunnerArgs};

pub async fn runner(globals: &Globals, args: RunnerArgs) -> anyhow::Result<()> {
    let token = std::env::var(shelf_runner::TOKEN_ENV)
        .context("a runner is started by `shelf serve`, not by hand")?;
    let stream = tokio::net::UnixStream::connect(&args.connect)
        .await
        .with_context(|| format!("cannot connect to {}", args.connect.display()))?;
    let (reader, mut writer) = stream.into_split();
    frame::write(&mut writer, &FromRunner::Hello { token }).await?;
    let mut config = globals.load_config();
    config.slots = args.slots;
    config.cache_ram_bytes = args.cache_ram;
    config.step_target = Duration::from_millis(args.step_ms);
    config.small_window_cache = args.small_swa_cache;
    config.speculative = args.speculate.config(args.draft.clone());
    let path = args.model.clone();
    let loaded = tokio::task::spawn_blocking(move || LlamaEngine.load(&path, &config))
        .await
        .context("the loader thread failed")?;
    let model = match loaded {
        Ok(model) => Arc::new(model),
        Err(error) => {
            frame::write(&mut writer, &shelf_runner::host::load_failed(&error)).await?;
            return Ok(());
        }
    };
    let info = Info::from(model.info());
    frame::write(&mut writer, &FromRunner::Ready { info }).await?;
    let served =
        shelf_runner::host::serve(reader, writer, Arc::clone(&model) as Arc<dyn LoadedModel>).await;
    // Free the context before the process (and a GPU runtime) goes away.
    tokio::task::spawn_blocking(move || drop(model)).await.ok();
    served.context("the connection to the server failed")
}

/// What `shelf probe` prints.
#[derive(Serialize)]
struct Probe {
    name: String,
    backend: String,
    usable_bytes: u64,
    gpu: bool,
}

/// Print what models may use here. It runs in its own process so the
/// server never starts llama.cpp (or a GPU runtime) itself.
pub fn probe(globals: &Globals) -> anyhow::Result<()> {
    let hardware = crate::probe::memory_only(globals.threads);
    let probe = Probe {
        name: hardware.name.clone(),
        backend: format!("{:?}", hardware.backend).to_lowercase(),
        usable_bytes: hardware.usable_bytes,
        gpu: hardware.backend != shelf_planner::Backend::Cpu,
    };
    println!("{}", serde_json::to_string(&probe)?);
    Ok(())
}
