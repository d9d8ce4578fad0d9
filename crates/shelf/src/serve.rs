//! `shelf serve`: wire the store, the runner processes, the model host and
//! the HTTP server together.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use shelf_engine::{GpuLayers, LoadConfig, LoadedModel};
use shelf_keys::Verifier;
use shelf_planner::{Backend, FitOptions, Hardware};
use shelf_runner::{RunnerCommand, RunnerModel};
use shelf_scheduler::{HostConfig, LoadPlan, Loader, ModelCost, ModelHost, Sizer};
use shelf_server::{AppState, AuditConfig, AuditLog, Auth, ServerConfig};

use crate::catalog::{self, Puller, StoreCatalog};
use crate::cli::{Budget, Globals, ServeArgs};

/// How long a runner may take to start and load its model.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

pub async fn serve(globals: &Globals, args: ServeArgs) -> anyhow::Result<()> {
    // Refusals about exposure come first, before any model is touched.
    let auth = auth(globals, &args)?;
    let tls = tls(globals, &args)?;
    let audit = match &args.audit_log {
        Some(path) => Some(Arc::new(
            AuditLog::open(AuditConfig {
                path: path.clone(),
                max_bytes: args.audit_log_max_size,
                keep: args.audit_log_keep,
            })
            .with_context(|| format!("cannot open the audit log {}", path.display()))?,
        )),
        None => None,
    };
    let layers = globals.layers()?;
    let mut files = Vec::new();
    let mut pinned = Vec::new();
    for model in &args.model {
        if catalog::looks_like_path(model) {
            let path = catalog::resolve(&layers, model)?;
            let name = catalog::file_model_name(&path);
            files.push((name.clone(), path));
            pinned.push(name);
        } else {
            catalog::resolve(&layers, model)?;
            pinned.push(model.clone());
        }
    }
    // A path as the assistant's model is served under its file name too.
    let mut served_name = |model: &Option<String>| -> anyhow::Result<Option<String>> {
        match model {
            Some(model) if catalog::looks_like_path(model) => {
                let path = catalog::resolve(&layers, model)?;
                let name = catalog::file_model_name(&path);
                if !files.iter().any(|(served, _)| served == &name) {
                    files.push((name.clone(), path));
                }
                Ok(Some(name))
            }
            other => Ok(other.clone()),
        }
    };
    let assistant_model = served_name(&args.assistant_model)?;
    let assistant_embed = served_name(&args.assistant_embed)?;
    let drafts = Arc::new(drafts(&layers, &args)?);
    let machine = match (probe_machine(globals).await, args.memory_budget) {
        (Ok(machine), _) => machine,
        // A budget given by hand does not need the probe; size as for a CPU.
        (Err(error), Budget::Bytes(bytes)) => {
            tracing::warn!(error = %format!("{error:#}"), "could not probe this box; sizing models for a CPU");
            Machine {
                name: "this box".into(),
                backend: "cpu".into(),
                usable_bytes: bytes,
            }
        }
        (Err(error), Budget::Auto) => return Err(error),
    };
    let budget = match args.memory_budget {
        Budget::Auto => machine.usable_bytes,
        Budget::Bytes(bytes) => bytes,
    };
    tracing::info!(
        budget = %crate::store_cmds::human_bytes(budget),
        box_ = %machine.name,
        "memory budget"
    );
    let admin = Arc::new(crate::admin::StoreAdmin {
        layers: layers.clone(),
        threads: globals.threads,
        ctx: globals.ctx,
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
        runner_loader(globals, &args, Arc::clone(&drafts))?,
        sizer(globals.ctx, machine.hardware(), drafts),
        HostConfig {
            budget,
            slots: args.parallel,
            keep_alive: args.keep_alive,
            max_queue: args.max_queue,
            max_loaded: args.max_loaded.map(|n| n as usize),
            pinned: pinned.clone(),
        },
    ));
    // The assistant's folders are kept fresh while the server runs.
    let _watching = watch_folders(globals);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(tls) = &tls {
        say(&format!(
            "TLS certificate {} SHA-256 fingerprint {}",
            tls.cert_path.display(),
            tls.fingerprint
        ));
    }
    // Tests and scripts read this line to find the port when --addr ends in :0.
    say(&format!("shelf listening on {scheme}://{addr}"));
    let config = ServerConfig {
        max_body_bytes: args.max_body_bytes,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        header_timeout: Duration::from_secs(args.header_timeout),
        body_timeout: Duration::from_secs(args.body_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        max_connections: connection_cap(args.max_connections),
        max_header_bytes: args.max_header_bytes as usize,
        allowed_hosts: args.allowed_hosts.clone(),
        cors_origins: args.cors_origins.clone(),
        bound: None,
        tls: tls.map(|t| t.config),
    };
    let mut state = AppState::new(Arc::clone(&host));
    state.admin = Some(admin);
    state.auth = auth;
    state.audit = audit.clone();
    state.assistant = globals.assistant_db().ok().map(|db| {
        Arc::new(shelf_server::assistant::AssistantConfig {
            db,
            model: assistant_model.clone(),
            embed: assistant_embed.clone(),
        })
    });
    state.starting.store(!pinned.is_empty(), Ordering::Release);
    let starting = Arc::clone(&state.starting);
    // Digests are written in the background, only while models are idle.
    let digests = state.assistant.clone().map(|config| {
        tokio::spawn(shelf_server::assistant::write_digests(
            state.clone(),
            Arc::clone(&config),
        ))
    });
    let vectors = state.assistant.clone().map(|config| {
        tokio::spawn(shelf_server::assistant::write_vectors(
            state.clone(),
            config,
        ))
    });
    let server = shelf_server::serve(listener, state, config, shutdown_signal());
    // The server answers (health says "loading", requests queue) while the
    // models named at start-up load; if one cannot load, shelf exits with why.
    let preload = async {
        for name in &pinned {
            host.preload(name)
                .await
                .with_context(|| format!("loading {name}"))?;
            say(&format!("shelf ready: {name} loaded"));
        }
        starting.store(false, Ordering::Release);
        std::future::pending::<anyhow::Result<()>>().await
    };
    let result = tokio::select! {
        result = server => result.map_err(anyhow::Error::from),
        result = preload => result,
    };
    for task in digests.into_iter().chain(vectors) {
        task.abort();
    }
    host.unload_all().await;
    // Write out the audit lines still queued before the process ends.
    if let Some(audit) = audit {
        audit.close();
    }
    result
}

/// The key checker, or `None` with `--no-auth`. A server reachable beyond
/// loopback with no keys refuses to start: that is how model servers end up
/// open to the internet.
fn auth(globals: &Globals, args: &ServeArgs) -> anyhow::Result<Option<Arc<Auth>>> {
    let exposed = !args.addr.ip().is_loopback();
    if args.no_auth {
        tracing::warn!(
            addr = %args.addr,
            "API keys are off (--no-auth): anyone who can reach this address can use every model, pull and delete"
        );
        return Ok(None);
    }
    let path = globals.keys_path()?;
    let verifier = Verifier::open(&path)
        .with_context(|| format!("cannot open the key database {}", path.display()))?;
    let auth = Auth::new(verifier);
    if exposed && !auth.closed() {
        anyhow::bail!(
            "refusing to listen on {} with no API keys: anyone on the network could use it. \
             Create a key with `shelf keys create NAME`, or pass --no-auth to serve without keys",
            args.addr
        );
    }
    if auth.closed() {
        tracing::info!(keys = %path.display(), "API keys are on: every request needs one");
    }
    Ok(Some(Arc::new(auth)))
}

/// Room for `wanted` connections: the open-file limit is raised to its hard
/// maximum (as Go's runtime does for Ollama); if even that is too low, fewer
/// connections are served, keeping descriptors spare for models and runners.
fn connection_cap(wanted: u32) -> usize {
    const SPARE: u64 = 128;
    let wanted = u64::from(wanted);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted + SPARE => {
            let cap = limit.saturating_sub(SPARE).max(16);
            tracing::warn!(
                open_files = limit,
                connections = cap,
                "the open-file limit allows fewer connections than --max-connections"
            );
            cap as usize
        }
        Ok(_) => wanted as usize,
        Err(error) => {
            tracing::debug!(%error, "could not raise the open-file limit");
            wanted as usize
        }
    }
}

/// The TLS setup asked for, if any.
fn tls(globals: &Globals, args: &ServeArgs) -> anyhow::Result<Option<crate::tls::Tls>> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return crate::tls::load(cert, key).map(Some);
    }
    if args.tls.is_some() {
        let names = crate::tls::names_for(args.addr.ip(), &args.allowed_hosts);
        return crate::tls::self_signed(&globals.home()?.join("tls"), &names).map(Some);
    }
    Ok(None)
}

/// A line on stdout for whoever started the server. Nobody may be reading
/// any more (a closed pipe): that is no reason to stop serving.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// What `shelf probe` reported about this box.
#[derive(Debug, Deserialize)]
struct Machine {
    name: String,
    backend: String,
    usable_bytes: u64,
}

impl Machine {
    /// A planner box with this backend and memory, enough to size models.
    fn hardware(&self) -> Hardware {
        let backend = match self.backend.as_str() {
            "cuda" => Backend::Cuda,
            "metal" => Backend::Metal,
            "vulkan" => Backend::Vulkan,
            _ => Backend::Cpu,
        };
        let mut hardware = Hardware::custom(
            &self.name,
            "this box",
            backend,
            self.usable_bytes,
            backend != Backend::Cuda,
            0.0,
            0.0,
        );
        hardware.usable_bytes = self.usable_bytes;
        hardware
    }
}

/// Ask a child `shelf probe` what this box offers, so the server process
/// itself never initialises llama.cpp or a GPU runtime.
async fn probe_machine(globals: &Globals) -> anyhow::Result<Machine> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.arg("probe");
    if let Some(threads) = globals.threads {
        command.arg("--threads").arg(threads.to_string());
    }
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("cannot run `shelf probe` to size the memory budget")?;
    anyhow::ensure!(
        output.status.success(),
        "`shelf probe` failed ({}); pass --memory-budget",
        output.status
    );
    serde_json::from_slice(&output.stdout).context("`shelf probe` printed something unexpected")
}

/// Each `--draft`: the draft model's file for a served model's file.
type Drafts = HashMap<PathBuf, PathBuf>;

/// `--draft MODEL=DRAFT` (or `--draft DRAFT` for every `--model`), resolved
/// to files, keyed by the served model's file.
fn drafts(layers: &shelf_store::Layers, args: &ServeArgs) -> anyhow::Result<Drafts> {
    let mut drafts = HashMap::new();
    for given in &args.drafts {
        let (models, draft) = match given.split_once('=') {
            Some((model, draft)) if !Path::new(given).exists() => (vec![model.to_string()], draft),
            _ if args.model.is_empty() => anyhow::bail!(
                "--draft {given} names no model: write --draft MODEL={given}, or serve models with --model"
            ),
            _ => (args.model.clone(), given.as_str()),
        };
        let draft = catalog::resolve(layers, draft)
            .with_context(|| format!("the draft model in --draft {given}"))?;
        for model in models {
            let path = catalog::resolve(layers, &model)
                .with_context(|| format!("the model in --draft {given}"))?;
            drafts.insert(path, draft.clone());
        }
    }
    Ok(drafts)
}

/// Loads each model in a runner process of its own.
fn runner_loader(
    globals: &Globals,
    args: &ServeArgs,
    drafts: Arc<Drafts>,
) -> anyhow::Result<Arc<Loader>> {
    let program = std::env::current_exe().context("cannot find the shelf executable")?;
    let mut common: Vec<OsString> = vec!["runner".into()];
    let mut flag = |name: &str, value: String| {
        common.push(name.into());
        common.push(value.into());
    };
    if let Some(threads) = globals.threads {
        flag("--threads", threads.to_string());
    }
    if let Some(ctx) = globals.ctx {
        flag("--ctx", ctx.to_string());
    }
    flag(
        "--gpu-layers",
        match globals.gpu_layers {
            GpuLayers::Auto => "auto".into(),
            GpuLayers::Count(n) => n.to_string(),
        },
    );
    flag("--cache-ram", args.cache_ram.to_string());
    flag("--step-ms", args.step_ms.to_string());
    if args.small_swa_cache {
        common.push("--small-swa-cache".into());
    }
    common.extend(speculate_flags(&args.speculate));
    let runtime = tokio::runtime::Handle::current();
    Ok(Arc::new(move |plan: &LoadPlan| {
        let mut args = common.clone();
        args.extend(["--model".into(), plan.path.clone().into_os_string()]);
        args.extend(["--slots".into(), plan.slots.to_string().into()]);
        if let Some(draft) = drafts.get(&plan.path) {
            args.extend(["--draft".into(), draft.clone().into_os_string()]);
        }
        let command = RunnerCommand {
            program: program.clone(),
            args,
            load_timeout: LOAD_TIMEOUT,
        };
        RunnerModel::start(&command, runtime.clone())
            .map(|model| Arc::new(model) as Arc<dyn LoadedModel>)
            .map_err(|error| with_path(error, &plan.path))
    }))
}

/// The runner's flags for `speculate`.
fn speculate_flags(speculate: &crate::cli::SpeculateArgs) -> Vec<OsString> {
    let mut flags: Vec<OsString> =
        vec!["--draft-max".into(), speculate.draft_max.to_string().into()];
    if let Some(kind) = &speculate.speculate {
        flags.extend(["--speculate".into(), kind.into()]);
    }
    if speculate.draft_fixed {
        flags.push("--draft-fixed".into());
    }
    if speculate.inexact {
        flags.push("--inexact".into());
    }
    flags
}

/// Load errors from a runner name the file the server asked for.
fn with_path(error: shelf_engine::EngineError, path: &Path) -> shelf_engine::EngineError {
    match error {
        shelf_engine::EngineError::Load { reason, .. } => shelf_engine::EngineError::Load {
            path: path.to_path_buf(),
            reason,
        },
        other => other,
    }
}

/// Sizes models with the planner: weights, compute and runtime are fixed,
/// each slot adds its KV cache at the served context. A model's draft
/// model adds its own weights and, per slot, its own KV cache.
fn sizer(ctx: Option<u32>, hardware: Hardware, drafts: Arc<Drafts>) -> Arc<Sizer> {
    Arc::new(move |path: &Path| {
        let cost = model_cost(path, ctx, &hardware)?;
        let Some(draft) = drafts.get(path) else {
            return Ok(cost);
        };
        let draft = model_cost(draft, ctx, &hardware)?;
        Ok(ModelCost {
            fixed: cost.fixed + draft.fixed,
            per_slot: cost.per_slot + draft.per_slot,
        })
    })
}

/// One model file's cost at the served context.
fn model_cost(path: &Path, ctx: Option<u32>, hardware: &Hardware) -> Result<ModelCost, String> {
    let files = split_parts(path);
    let spec = crate::fit::spec_from_files(&catalog::file_model_name(path), &files)
        .map_err(|e| format!("{e:#}"))?;
    let ctx = ctx.map_or_else(
        || {
            spec.context_length
                .min(u64::from(LoadConfig::DEFAULT_MAX_CTX))
        },
        u64::from,
    );
    let options = FitOptions {
        ctx: ctx.max(16),
        parallel: 1,
        ..FitOptions::default()
    };
    let memory = shelf_planner::estimate(&spec, hardware, &options).memory;
    Ok(ModelCost {
        fixed: memory.total - memory.kv_cache,
        per_slot: memory.kv_cache,
    })
}

/// All files of a split model (`NAME-00001-of-00003.gguf`), or the file.
fn split_parts(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let Some((stem, count)) = name.as_deref().and_then(split_name) else {
        return vec![path.to_path_buf()];
    };
    (1..=count)
        .map(|i| path.with_file_name(format!("{stem}-{i:05}-of-{count:05}.gguf")))
        .collect()
}

/// `("NAME", 3)` for `NAME-00001-of-00003.gguf`.
fn split_name(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_suffix(".gguf")?;
    let (rest, count) = rest.rsplit_once("-of-")?;
    let (stem, first) = rest.rsplit_once('-')?;
    (first == "00001").then_some(())?;
    Some((stem, count.parse().ok()?))
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

/// Start watching the assistant's folders; a server without them still serves.
fn watch_folders(globals: &Globals) -> Option<shelf_assistant::watcher::Watching> {
    let db = globals.assistant_db().ok()?;
    match shelf_assistant::watcher::start(db, shelf_assistant::Limits::default(), |_| {}) {
        Ok(watching) => Some(watching),
        Err(error) => {
            tracing::warn!(error = %error, "not watching the assistant's folders");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn split_model_names_are_recognised() {
        assert_eq!(split_name("m-00001-of-00003.gguf"), Some(("m", 3)));
        assert_eq!(split_name("a-b-00001-of-00012.gguf"), Some(("a-b", 12)));
        assert_eq!(split_name("m-00002-of-00003.gguf"), None);
        assert_eq!(split_name("model.gguf"), None);
    }
}
