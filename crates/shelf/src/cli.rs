//! The command line: flags, their env vars, and conversion to configs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use shelf_engine::{GpuLayers, LoadConfig, SamplingParams, SpeculativeConfig};
use shelf_store::{Layers, Store};

/// Every environment variable shelf reads, with what it sets. This table is
/// the source for docs/configuration.md (a test keeps them in step).
pub const ENV_VARS: &[(&str, &str)] = &[
    ("SHELF_THREADS", "CPU threads for decoding (`--threads`); default: all available CPUs"),
    ("SHELF_CTX", "Context window in tokens (`--ctx`); default: the model's trained length, at most 4096"),
    ("SHELF_GPU_LAYERS", "Layers to offload to the GPU, or `auto` (`--gpu-layers`); default: `auto`, all layers when a GPU backend is built in"),
    ("SHELF_MODELS", "The writable model store directory (`--models-dir`); default: `~/.shelf/models`"),
    ("SHELF_SHARED_MODELS", "Read-only stores searched after it, `:`-separated (`--shared-models`), e.g. a NAS mount or `~/.ollama/models`"),
    ("SHELF_ALLOW_PULL", "`true` lets `shelf serve` pull a requested model that is not in the store (`--allow-pull`); default: `false`"),
    ("HF_ENDPOINT", "Hugging Face hub URL for `hf.co/` names, as in huggingface_hub; default: `https://huggingface.co`"),
    ("HF_TOKEN", "Hugging Face token for gated and private repositories; default: the contents of the token file, if any"),
    ("HF_TOKEN_PATH", "Where that token file is; default: `$HF_HOME/token`"),
    ("HF_HOME", "Hugging Face's home directory, for the token file; default: `~/.cache/huggingface`"),
    ("SHELF_ADDR", "Address `shelf serve` listens on (`--addr`), and where `shelf ps` asks; default: `127.0.0.1:11435`"),
    ("SHELF_PARALLEL", "Slots per model, requests each runs at once (`--parallel`); default: as many as the memory budget allows, at most 4"),
    ("SHELF_MEMORY_BUDGET", "Memory all loaded models may take together, e.g. `24GiB`, or `auto` (`--memory-budget`); default: `auto`, the planner's usable memory for this box"),
    ("SHELF_KEEP_ALIVE", "How long an idle model stays loaded, e.g. `10m`; `0` unloads at once, `-1` never (`--keep-alive`); default: `5m`"),
    ("SHELF_MAX_QUEUE", "Requests that may wait for a model's slots before more get 503 (`--max-queue`); default: `64`"),
    ("SHELF_CACHE_RAM", "RAM per model for prompt caches pushed out of its slots, e.g. `2GiB`; `0` turns it off (`--cache-ram`); default: `1GiB`"),
    ("SHELF_KEYS", "The API key database (`--keys`); default: `~/.shelf/keys.db`. Once it holds a key, every API request needs one"),
    ("SHELF_ASSISTANT_DB", "The assistant's database of watched folders, their text and digests (`--assistant-db`); default: `~/.shelf/assistant/assistant.db`"),
    ("SHELF_ASSISTANT_MODEL", "The model `shelf serve` answers the `assistant` model id with, when a watch names none (`--assistant-model`)"),
    ("SHELF_ASSISTANT_EMBED", "An embedding model for the assistant's search (`--assistant-embed`): the watched files' vectors are kept current with it and fused with full-text results; default: none, full text only"),
    ("SHELF_API_KEY", "The key `shelf ps` sends to a server that has keys on (`--api-key`)"),
    ("SHELF_ALLOWED_HOSTS", "Host names `shelf serve` answers besides localhost and its address, `,`-separated (`--allowed-host`); `*` answers any"),
    ("SHELF_CORS_ORIGINS", "Browser origins allowed to call the API, `,`-separated (`--cors-origin`), e.g. `https://app.example`; default: none"),
    ("SHELF_AUDIT_LOG", "Write one JSON line per request, without its content, to this file (`--audit-log`)"),
    ("SHELF_LOG", "Log filter, in tracing's `EnvFilter` syntax, e.g. `debug`; default: `info` for serve, `warn` otherwise"),
];

/// Parse the command line, with the environment table in `--help`.
pub fn parse() -> Cli {
    let command = Cli::command().after_long_help(env_help());
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn env_help() -> String {
    let mut text = String::from("Environment variables:\n");
    for (name, description) in ENV_VARS {
        text.push_str(&format!(
            "  {name}\n      {}\n",
            description.replace('`', "")
        ));
    }
    text
}

#[derive(Debug, Parser)]
#[command(
    name = "shelf",
    version,
    about = "A private AI server for open-weights models"
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Globals {
    /// CPU threads for decoding [default: all available CPUs]
    #[arg(long, global = true, env = "SHELF_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Context window in tokens [default: the model's, at most 4096]
    #[arg(long, global = true, env = "SHELF_CTX", value_parser = clap::value_parser!(u32).range(16..))]
    pub ctx: Option<u32>,
    /// Layers to offload to the GPU: a number or `auto`
    #[arg(long, global = true, env = "SHELF_GPU_LAYERS", default_value = "auto", value_parser = parse_gpu_layers)]
    pub gpu_layers: GpuLayers,
    /// The writable model store directory [default: ~/.shelf/models]
    #[arg(long, global = true, env = "SHELF_MODELS")]
    pub models_dir: Option<PathBuf>,
    /// A read-only store searched after the writable one (repeatable)
    #[arg(
        long,
        global = true,
        env = "SHELF_SHARED_MODELS",
        value_delimiter = ':'
    )]
    pub shared_models: Vec<PathBuf>,
    /// The API key database [default: ~/.shelf/keys.db]
    #[arg(long, global = true, env = "SHELF_KEYS")]
    pub keys: Option<PathBuf>,
    /// The assistant's database [default: ~/.shelf/assistant/assistant.db]
    #[arg(long, global = true, env = "SHELF_ASSISTANT_DB")]
    pub assistant_db: Option<PathBuf>,
}

impl Globals {
    /// How to load models, from the global options.
    pub fn load_config(&self) -> LoadConfig {
        LoadConfig {
            threads: self.threads,
            ctx: self.ctx,
            gpu_layers: self.gpu_layers,
            ..LoadConfig::default()
        }
    }

    /// The store directory.
    pub fn models_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.models_dir {
            return Ok(dir.clone());
        }
        let home = std::env::var_os("HOME").ok_or_else(|| {
            anyhow::anyhow!("HOME is not set; pass --models-dir or set SHELF_MODELS")
        })?;
        Ok(PathBuf::from(home).join(".shelf").join("models"))
    }

    /// `~/.shelf`, where keys and certificates live by default.
    pub fn home(&self) -> anyhow::Result<PathBuf> {
        let home = std::env::var_os("HOME")
            .ok_or_else(|| anyhow::anyhow!("HOME is not set; pass --keys"))?;
        Ok(PathBuf::from(home).join(".shelf"))
    }

    /// The assistant's database.
    pub fn assistant_db(&self) -> anyhow::Result<PathBuf> {
        match &self.assistant_db {
            Some(path) => Ok(path.clone()),
            None => Ok(self.home()?.join("assistant").join("assistant.db")),
        }
    }

    /// The API key database.
    pub fn keys_path(&self) -> anyhow::Result<PathBuf> {
        match &self.keys {
            Some(path) => Ok(path.clone()),
            None => Ok(self.home()?.join("keys.db")),
        }
    }

    /// The writable store, then the shared read-only ones.
    pub fn layers(&self) -> anyhow::Result<Layers> {
        let shared = self
            .shared_models
            .iter()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Store::read_only)
            .collect();
        Ok(Layers::new(Store::new(self.models_dir()?), shared))
    }
}

/// `--memory-budget`: the planner's figure, or a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Auto,
    Bytes(u64),
}

fn parse_budget(text: &str) -> Result<Budget, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(Budget::Auto);
    }
    parse_size(text).map(Budget::Bytes)
}

/// A size: a number with an optional unit. KiB, MiB, GiB, TiB (and K, M,
/// G, T) are powers of 1024; KB, MB, GB, TB powers of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 8GiB or 512MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit '{other}' in '{text}'")),
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(bytes as u64)
}

/// `--keep-alive`: a duration (`5m`, `90s`, or plain seconds), `0` for at
/// once, a negative number for never, as Ollama reads it.
fn parse_keep_alive(text: &str) -> Result<shelf_scheduler::KeepAlive, String> {
    use shelf_scheduler::KeepAlive;
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(match u64::try_from(seconds) {
            Ok(seconds) => KeepAlive::After(std::time::Duration::from_secs(seconds)),
            Err(_) => KeepAlive::Forever,
        });
    }
    if text.starts_with('-') {
        return Ok(KeepAlive::Forever);
    }
    humantime::parse_duration(text)
        .map(KeepAlive::After)
        .map_err(|e| format!("'{text}' is not a duration such as 5m or 1h: {e}"))
}

fn parse_gpu_layers(text: &str) -> Result<GpuLayers, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(GpuLayers::Auto);
    }
    text.parse::<u32>()
        .map(GpuLayers::Count)
        .map_err(|_| format!("'{text}' is not a number of layers or 'auto'"))
}

/// How models speculate, for `run`, `serve`, `bench` and the runner; the
/// draft model itself is named by each command's `--draft`.
#[derive(Debug, Args, Clone)]
pub struct SpeculateArgs {
    /// `ngram`: draft by prompt lookup, continuing repeats of the prompt
    /// and the answer so far (free; strong for edits, quotes, rewrites)
    #[arg(long, value_parser = ["ngram"])]
    pub speculate: Option<String>,
    /// Most tokens drafted per step
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=i64::from(SpeculativeConfig::MAX_DRAFT)))]
    pub draft_max: u32,
    /// Always draft --draft-max tokens: no adapting to acceptance, no
    /// falling back to plain decode when speculation loses
    #[arg(long)]
    pub draft_fixed: bool,
    /// Verify any number of tokens at once even at temperature 0: faster,
    /// but a near tie may then go another way than plain decode's
    #[arg(long)]
    pub inexact: bool,
}

impl SpeculateArgs {
    /// The engine's configuration, with `draft` as the draft model.
    pub fn config(&self, draft: Option<PathBuf>) -> SpeculativeConfig {
        SpeculativeConfig {
            draft,
            ngram: self.speculate.is_some(),
            max_draft: self.draft_max,
            adaptive: !self.draft_fixed,
            exact: !self.inexact,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with a model in the terminal, or answer one prompt and exit
    Run(RunArgs),
    /// Serve the OpenAI-compatible API
    Serve(Box<ServeArgs>),
    /// Measure prefill and decode speed, as llama-bench does
    Bench(BenchArgs),
    /// Download a model from Hugging Face (hf.co/OWNER/REPO:QUANT) or an Ollama registry
    Pull(PullArgs),
    /// Copy (or link) a GGUF file into the store
    Import(ImportArgs),
    /// List the models in every store layer
    #[command(alias = "ls")]
    List,
    /// Show a model's architecture, size, quant and context length
    Show(ShowArgs),
    /// Remove a model from the writable store
    Rm(RmArgs),
    /// Give a model a second name; the blobs are shared
    Cp(CpArgs),
    /// Delete blobs no model uses; pulls in progress are left alone
    Gc(GcArgs),
    /// Will a model fit on this box (or a named one), and how fast will it go?
    Fit(FitArgs),
    /// What a million tokens cost on the box, next to hosted APIs
    Cost(CostArgs),
    /// Show the models a running server has loaded
    Ps(PsArgs),
    /// Create, list and revoke API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Watch folders for the assistant: their text is indexed and kept fresh
    #[command(subcommand)]
    Watch(WatchCommand),
    /// Ask about the watched folders' files: the model searches, reads
    /// whole documents and answers with citations
    Ask(AskArgs),
    /// The conversations kept on this box (the assistant's, and the web
    /// chat's made without an API key): list, search, show, export, delete
    #[command(subcommand)]
    Conversations(ConversationsCommand),
    /// Serve one model to `shelf serve` over its socket (started by the server)
    #[command(hide = true)]
    Runner(RunnerArgs),
    /// Print what models may use on this box, as JSON (used by the server)
    #[command(hide = true)]
    Probe,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// The server's address
    #[arg(long, env = "SHELF_ADDR", default_value = "127.0.0.1:11435")]
    pub addr: SocketAddr,
    /// The API key to send, when the server has keys on
    #[arg(long, env = "SHELF_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// How the server tells a runner what to load; globals carry threads,
/// context and GPU layers.
#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// The GGUF file
    #[arg(long)]
    pub model: PathBuf,
    /// The server's socket
    #[arg(long)]
    pub connect: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// Bytes of RAM for pushed-out prompt caches
    #[arg(long, default_value_t = 0)]
    pub cache_ram: u64,
    /// Target milliseconds for a decode step while streams run
    #[arg(long, default_value_t = 100)]
    pub step_ms: u64,
    /// Keep only the window's KV in sliding-window layers
    #[arg(long)]
    pub small_swa_cache: bool,
    /// The draft model's GGUF file
    #[arg(long)]
    pub draft: Option<PathBuf>,
    #[command(flatten)]
    pub speculate: SpeculateArgs,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// A catalog model with a quant (llama-3.3-70b:Q4_K_M), a .gguf, or a store name; none lists the catalog
    pub model: Option<String>,
    /// A catalog box (`--list-hardware`); default: this machine, detected
    #[arg(long)]
    pub hardware: Option<String>,
    /// Sequences served at once, each with its own context
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub parallel: u64,
    /// Prompt length the prefill speed is predicted for, in tokens
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub prompt: u32,
    /// KV cache element type: f16, q8_0 or q4_0
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// List the catalog's boxes
    #[arg(long)]
    pub list_hardware: bool,
    /// List the catalog's models
    #[arg(long)]
    pub list_models: bool,
    /// Predict speculative decoding with this draft model (as for MODEL)
    #[arg(long, requires = "model")]
    pub draft: Option<String>,
    /// With --draft: the chance each drafted token is accepted [default: 0.7]
    #[arg(long, requires = "draft", value_parser = parse_fraction)]
    pub acceptance: Option<f64>,
    /// With --draft: tokens drafted per step [default: the fastest]
    #[arg(long, requires = "draft", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub draft_tokens: Option<u32>,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("'{text}' is not a number from 0 to 1")),
    }
}

#[derive(Debug, Args)]
pub struct CostArgs {
    /// Models (as for `fit`); default: Llama 3.3 70B Q4_K_M, Qwen 2.5 32B Q8_0, Llama 3.1 8B Q4_K_M
    pub models: Vec<String>,
    /// A catalog box; default: this machine (then --price is needed)
    #[arg(long)]
    pub hardware: Option<String>,
    /// The box's price in USD [default: the catalog's]
    #[arg(long)]
    pub price: Option<f64>,
    /// Watts while generating [default: the catalog's]
    #[arg(long)]
    pub watts_load: Option<f64>,
    /// Watts while idle [default: the catalog's]
    #[arg(long)]
    pub watts_idle: Option<f64>,
    /// Electricity, USD per kWh
    #[arg(long, default_value_t = shelf_planner::CostInputs::DEFAULT_USD_PER_KWH)]
    pub kwh_price: f64,
    /// Share of the time the box is generating, 0 to 1
    #[arg(long, default_value_t = shelf_planner::CostInputs::DEFAULT_UTILISATION)]
    pub utilisation: f64,
    /// Months the box is paid off over
    #[arg(long, default_value_t = shelf_planner::CostInputs::DEFAULT_LIFETIME_MONTHS)]
    pub lifetime_months: f64,
    /// Decode speed to use instead of the prediction (a `shelf bench` result)
    #[arg(long)]
    pub tps: Option<f64>,
    /// Add or replace an API price: NAME=USD per million output tokens (repeatable)
    #[arg(long)]
    pub api_price: Vec<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// hf.co/OWNER/REPO[:QUANT], hf.co/OWNER/REPO/FILE.gguf, or [HOST[:PORT]/][NAMESPACE/]MODEL[:TAG]
    pub name: String,
    /// Allow plain http to the registry named in NAME (a private registry or mirror)
    #[arg(long)]
    pub insecure: bool,
    /// Parallel connections per large file
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The model to describe
    pub name: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// The existing model
    pub source: String,
    /// The new name
    pub destination: String,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove interrupted downloads nobody is resuming
    #[arg(long)]
    pub partials: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A .gguf path or a model name in the store
    pub model: String,
    /// Answer this prompt and exit; without it, start an interactive chat
    pub prompt: Option<String>,
    /// A system message to start the conversation with
    #[arg(long)]
    pub system: Option<String>,
    /// Stop after this many tokens per answer
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Print prefill and decode speed after each answer
    #[arg(long)]
    pub verbose: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Speculate with this draft model (a .gguf or store name with the
    /// model's vocabulary)
    #[arg(long)]
    pub draft: Option<String>,
    #[command(flatten)]
    pub speculate: SpeculateArgs,
}

/// Sampling flags for `run`.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// 0 is greedy and deterministic
    #[arg(long, default_value_t = SamplingParams::default().temperature)]
    pub temperature: f32,
    #[arg(long, default_value_t = SamplingParams::default().top_p)]
    pub top_p: f32,
    #[arg(long, default_value_t = SamplingParams::default().top_k)]
    pub top_k: u32,
    #[arg(long, default_value_t = SamplingParams::default().min_p)]
    pub min_p: f32,
    #[arg(long, default_value_t = SamplingParams::default().repeat_penalty)]
    pub repeat_penalty: f32,
    #[arg(long)]
    pub seed: Option<u32>,
    /// Stop when the answer contains this (repeatable)
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplingParams::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; loopback unless you open it up
    #[arg(long, env = "SHELF_ADDR", default_value = "127.0.0.1:11435")]
    pub addr: SocketAddr,
    /// Load this model (a name in the store or a .gguf path) at start-up
    /// and keep it loaded (repeatable); a path is served under its file
    /// name without `.gguf`
    #[arg(long)]
    pub model: Vec<String>,
    /// The model that answers as `assistant` (the watched folders' agent)
    /// when a watch names none: a store name or a served model's name
    #[arg(long, env = "SHELF_ASSISTANT_MODEL")]
    pub assistant_model: Option<String>,
    /// An embedding model (a store name or a path): the watched files'
    /// vectors are kept current with it, and the assistant's search fuses
    /// nearest parts with full-text results
    #[arg(long, env = "SHELF_ASSISTANT_EMBED")]
    pub assistant_embed: Option<String>,
    /// Slots per model: requests each model runs at once, batched together
    /// [default: as many as the memory budget allows, at most 4]
    #[arg(long, env = "SHELF_PARALLEL", value_parser = clap::value_parser!(u32).range(1..=512))]
    pub parallel: Option<u32>,
    /// Memory all loaded models may take together (`auto`: the planner's
    /// usable memory for this box), e.g. `24GiB`
    #[arg(long, env = "SHELF_MEMORY_BUDGET", default_value = "auto", value_parser = parse_budget)]
    pub memory_budget: Budget,
    /// How long an idle model stays loaded: `5m`, `1h`; `0` unloads it at
    /// once, `-1` never
    #[arg(long, env = "SHELF_KEEP_ALIVE", default_value = "5m", value_parser = parse_keep_alive, allow_hyphen_values = true)]
    pub keep_alive: shelf_scheduler::KeepAlive,
    /// Requests that may wait for a model's slots; more get 503
    #[arg(long, env = "SHELF_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,
    /// Most models loaded at once, whatever the budget allows
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_loaded: Option<u32>,
    /// RAM per model for prompt caches pushed out of its slots, e.g. `2GiB`
    #[arg(long, env = "SHELF_CACHE_RAM", default_value = "1GiB", value_parser = parse_size)]
    pub cache_ram: u64,
    /// Sliding-window layers keep only their window's KV (less memory; a
    /// long conversation's prefix is then reused only while still held)
    #[arg(long)]
    pub small_swa_cache: bool,
    /// While streams run, a long new prompt is fed in chunks that keep each
    /// decode step near this many milliseconds
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub step_ms: u64,
    /// Largest request body accepted, in bytes
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Seconds in-flight responses get to finish after SIGINT or SIGTERM
    #[arg(long, default_value_t = 10)]
    pub drain_timeout: u64,
    /// Pull a requested model that is not in the store (requests get 503 until it is in)
    #[arg(long, env = "SHELF_ALLOW_PULL")]
    pub allow_pull: bool,
    /// With --allow-pull: plain http to registries named in model names
    #[arg(long)]
    pub insecure: bool,
    /// Serve without API keys on a non-loopback address (anyone who can
    /// reach it can use it); keys in the database are then ignored
    #[arg(long)]
    pub no_auth: bool,
    /// HTTPS with this certificate chain (PEM); needs --tls-key
    #[arg(long, requires = "tls_key", conflicts_with = "tls")]
    pub tls_cert: Option<PathBuf>,
    /// The private key for --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// `self-signed`: HTTPS with a certificate made and kept under
    /// ~/.shelf/tls; its SHA-256 fingerprint is printed for pinning
    #[arg(long, value_parser = ["self-signed"])]
    pub tls: Option<String>,
    /// A host name to answer besides localhost and the bound address
    /// (repeatable; `*` answers any, e.g. behind a proxy that checks it)
    #[arg(
        long = "allowed-host",
        env = "SHELF_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// A browser origin allowed to call the API, e.g. `https://app.example`
    /// (repeatable); other sites' pages get 403
    #[arg(
        long = "cors-origin",
        env = "SHELF_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Write one JSON line per request (who, what, tokens, time; never the
    /// text) to this file
    #[arg(long, env = "SHELF_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Rotate the audit log when it would pass this size
    #[arg(long, default_value = "100MiB", value_parser = parse_size)]
    pub audit_log_max_size: u64,
    /// Rotated audit logs kept (FILE.1 is the newest)
    #[arg(long, default_value_t = 5)]
    pub audit_log_keep: u32,
    /// Connections served at once; more wait their turn
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Seconds a client gets to send a request's headers (and an idle
    /// kept-alive connection stays open)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Seconds a client gets to send a request's whole body
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,
    /// Seconds without traffic after which a connection is closed
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Largest request head (request line and headers), in bytes
    #[arg(long, default_value_t = 64 << 10, value_parser = clap::value_parser!(u64).range(1024..=(16 << 20)))]
    pub max_header_bytes: u64,
    /// A draft model for speculative decoding: `MODEL=DRAFT` for one
    /// served model, or `DRAFT` for every --model (repeatable); it loads
    /// beside its model and counts in the memory budget
    #[arg(long = "draft")]
    pub drafts: Vec<String>,
    #[command(flatten)]
    pub speculate: SpeculateArgs,
}

#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question
    pub question: String,
    /// Only this watch's files [default: every watch]
    #[arg(long)]
    pub watch: Option<String>,
    /// A .gguf path or store name [default: the watch's model]
    #[arg(long)]
    pub model: Option<String>,
    /// Model turns at most, the answer included
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub max_steps: u32,
    /// Context window for the question [default: 16384]
    #[arg(long = "ask-ctx", value_parser = clap::value_parser!(u32).range(2048..))]
    pub ask_ctx: Option<u32>,
    /// Print the answer with its citations and tool calls as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub search: SearchEmbedArgs,
}

/// How the assistant's search finds files by meaning from the terminal.
#[derive(Debug, Args)]
pub struct SearchEmbedArgs {
    /// An embedding model (a store name or a path): files without its
    /// vectors are embedded first, then full-text and nearest-vector
    /// results are fused [default: the model whose vectors the store
    /// already holds (`serve --assistant-embed`), if any]
    #[arg(long, conflicts_with = "words_only")]
    pub embed: Option<String>,
    /// Search by words alone, even where vectors are stored
    #[arg(long)]
    pub words_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// Watch a folder: its files are read and indexed now, and kept fresh
    /// while `shelf serve` runs
    Add(WatchAddArgs),
    /// The watched folders
    List(JsonArgs),
    /// Stop watching a folder and delete everything derived from its files
    Rm(WatchNameArgs),
    /// Per folder: files seen, indexed, digested, queued, and skipped with why
    Status(WatchStatusArgs),
    /// Search the indexed text and digests, best matches first
    Search(WatchSearchArgs),
}

#[derive(Debug, Args)]
pub struct WatchAddArgs {
    /// The folder
    pub path: PathBuf,
    /// A name for it (letters, digits, `-`, `_`, `.`) [default: the folder's name]
    #[arg(long)]
    pub name: Option<String>,
    /// The model that digests its files and answers about them [default: the server's]
    #[arg(long)]
    pub model: Option<String>,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConversationsCommand {
    /// The latest conversations, or those matching words
    List(ConversationListArgs),
    /// One conversation, as text, Markdown or JSON
    Show(ConversationShowArgs),
    /// Delete a conversation
    Rm(ConversationIdArgs),
}

#[derive(Debug, Args)]
pub struct ConversationListArgs {
    /// Only those whose title or messages have these words
    #[arg(long)]
    pub search: Option<String>,
    /// Most listed
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConversationShowArgs {
    pub id: i64,
    /// `markdown` (the default) or `json`
    #[arg(long, default_value = "markdown")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct ConversationIdArgs {
    pub id: i64,
}

#[derive(Debug, Args)]
pub struct WatchNameArgs {
    /// The watch's name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct WatchStatusArgs {
    /// Only this watch [default: all]
    pub name: Option<String>,
    /// JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WatchSearchArgs {
    /// Words to look for
    pub query: String,
    /// Only in this watch [default: all]
    #[arg(long)]
    pub watch: Option<String>,
    /// Most results
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// JSON instead of text
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub search: SearchEmbedArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key; its secret is printed once, as the last line of stdout
    Create(KeyCreateArgs),
    /// Show every key's name, scopes, limits and last use (never secrets)
    List(KeyListArgs),
    /// Revoke a key: the next request with it gets 401
    Revoke(KeyRevokeArgs),
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// A name for the key (letters, digits, `-`, `_`, `.`)
    pub name: String,
    /// What the key may do: chat, embed, admin (repeatable) [default: chat and embed]
    #[arg(long = "scope", num_args = 1.., value_delimiter = ',', value_parser = ["chat", "embed", "admin"])]
    pub scopes: Vec<String>,
    /// Models the key may use, as globs like `llama3*` (repeatable) [default: all]
    #[arg(long = "models", num_args = 1.., value_delimiter = ',')]
    pub models: Vec<String>,
    /// Requests per minute
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rpm: Option<u32>,
    /// Tokens (prompt and output) per minute
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub tpm: Option<u32>,
    /// The key stops working after this long, e.g. `30d`, `12h`
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct KeyListArgs {
    /// JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeyRevokeArgs {
    /// The key's name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A .gguf path or a model name in the store
    #[arg(required_unless_present = "synthetic", conflicts_with = "synthetic")]
    pub model: Option<String>,
    /// Measure random weights in a real shape instead: ARCH-SIZE:QUANT, e.g. llama-70b:Q4_K_M
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Keep the synthetic GGUF instead of deleting it
    #[arg(long, requires = "synthetic")]
    pub keep: bool,
    /// Prompt tokens for the prefill test (0 skips it)
    #[arg(long, default_value_t = 512)]
    pub pp: u32,
    /// Generated tokens for the decode test (0 skips it)
    #[arg(long, default_value_t = 128)]
    pub tg: u32,
    /// Repetitions of each test
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: u32,
    /// Sequences decoded together: measures aggregate throughput, as
    /// llama-batched-bench does
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub parallel: u32,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Compare decode under this JSON schema's grammar with decode
    /// unconstrained (`--tg` tokens, `--reps` alternating runs)
    #[arg(long, conflicts_with = "synthetic")]
    pub json_schema: Option<PathBuf>,
    /// Compare speculative decoding with this draft model against plain
    /// decode, on real tasks (`--task`)
    #[arg(long, conflicts_with = "synthetic")]
    pub draft: Option<String>,
    #[command(flatten)]
    pub speculate: SpeculateArgs,
    /// With --draft or --speculate: the tasks to decode, `rewrite`,
    /// `code`, `prose` (repeatable) or a file of prompts separated by
    /// lines holding only `---` [default: all three]
    #[arg(long = "task")]
    pub tasks: Vec<String>,
    /// With --draft or --speculate: exit non-zero when a task's speed-up
    /// over plain decode is below this
    #[arg(long)]
    pub min_speedup: Option<f64>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The GGUF file to import
    pub file: PathBuf,
    /// Name to store it under [default: the file name without .gguf]
    #[arg(long)]
    pub name: Option<String>,
    /// Hardlink the file into the store (symlink across filesystems) instead of copying
    #[arg(long)]
    pub link: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The model to remove
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::{parse_keep_alive, parse_size, ENV_VARS};
    use shelf_scheduler::KeepAlive;
    use std::time::Duration;

    #[test]
    fn sizes_and_durations_parse_as_documented() {
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("8 parsecs").is_err());
        let after = |s| KeepAlive::After(Duration::from_secs(s));
        assert_eq!(parse_keep_alive("5m"), Ok(after(300)));
        assert_eq!(parse_keep_alive("90"), Ok(after(90)));
        assert_eq!(parse_keep_alive("0"), Ok(after(0)));
        assert_eq!(parse_keep_alive("-1"), Ok(KeepAlive::Forever));
        assert_eq!(parse_keep_alive("-5m"), Ok(KeepAlive::Forever));
        assert!(parse_keep_alive("soon").is_err());
    }

    /// The environment table as markdown, as docs/configuration.md carries it.
    fn env_table_markdown() -> String {
        let mut table = String::from("| variable | what it sets |\n| --- | --- |\n");
        for (name, description) in ENV_VARS {
            table.push_str(&format!("| `{name}` | {description} |\n"));
        }
        table
    }

    /// docs/configuration.md must carry the table this binary prints.
    #[test]
    fn configuration_doc_has_the_env_table() {
        let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let doc = std::fs::read_to_string(doc_path).unwrap_or_default();
        let table = env_table_markdown();
        assert!(
            doc.contains(&table),
            "docs/configuration.md is out of date; it must contain:\n{table}"
        );
    }
}
