//! `shelf serve`: wire the store, the engine and the HTTP server together.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shelf_engine::LoadedModel;
use shelf_engine_llama::LlamaEngine;
use shelf_scheduler::{HostConfig, Loader, ModelHost};
use shelf_server::{AppState, ServerConfig};

use crate::catalog::{self, Puller, StoreCatalog};
use crate::cli::{Globals, ServeArgs};

pub async fn serve(globals: &Globals, args: ServeArgs) -> anyhow::Result<()> {
    let layers = globals.layers()?;
    let mut files = Vec::new();
    let preload = match &args.model {
        Some(model) if catalog::looks_like_path(model) => {
            let path = catalog::resolve(&layers, model)?;
            let name = catalog::file_model_name(&path);
            files.push((name.clone(), path));
            Some(name)
        }
        Some(model) => {
            catalog::resolve(&layers, model)?;
            Some(model.clone())
        }
        None => None,
    };
    let load_config = globals.load_config();
    let loader: Arc<Loader> = Arc::new(move |path| {
        LlamaEngine
            .load(path, &load_config)
            .map(|model| Arc::new(model) as Arc<dyn LoadedModel>)
    });
    let host = Arc::new(ModelHost::new(
        Arc::new(StoreCatalog {
            layers,
            files,
            puller: args.allow_pull.then(|| {
                Puller::new(
                    crate::pull::options_from_env(args.insecure),
                    tokio::runtime::Handle::current(),
                )
            }),
        }),
        loader,
        HostConfig {
            max_loaded: args.max_loaded as usize,
        },
    ));
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening beyond loopback: anyone who can reach this address can use the models");
    }
    // Tests and scripts read this line to find the port when --addr ends in :0.
    println!("shelf listening on http://{addr}");
    let config = ServerConfig {
        max_body_bytes: args.max_body_bytes,
        drain_timeout: Duration::from_secs(args.drain_timeout),
    };
    let server = shelf_server::serve(
        listener,
        AppState {
            host: Arc::clone(&host),
        },
        config,
        shutdown_signal(),
    );
    // The server answers (health says "loading", requests get 503) while a
    // model named at start-up loads; if it cannot load, shelf exits with why.
    let preload = async {
        if let Some(name) = preload {
            host.get(&name)
                .await
                .with_context(|| format!("loading {name}"))?;
            println!("shelf ready: {name} loaded");
        }
        std::future::pending::<anyhow::Result<()>>().await
    };
    tokio::select! {
        result = server => result?,
        result = preload => result?,
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
