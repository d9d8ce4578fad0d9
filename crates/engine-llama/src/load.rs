//! Loading a GGUF into llama.cpp and starting its decode thread.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};
use shelf_engine::{
    EngineError, GenerateRequest, GenerationSink, GpuLayers, LoadConfig, LoadedModel, ModelInfo,
    Token, Unloaded,
};

use crate::decode::{self, Job, Setup};
use crate::embed::{self, EmbedJob};

/// llama.cpp's process-wide backend; it may be initialised only once.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            send_logs_to_tracing(LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|reason| EngineError::Load {
            path: Default::default(),
            reason: format!("llama.cpp backend failed to start: {reason}"),
        })
}

/// A compute device llama.cpp can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// e.g. `CUDA0`.
    pub name: String,
    /// e.g. `NVIDIA H100 80GB HBM3`.
    pub description: String,
    /// e.g. `CUDA`, `Metal`, `CPU`.
    pub backend: String,
    pub memory_total: u64,
    pub memory_free: u64,
    /// A GPU (discrete or integrated) rather than the CPU.
    pub is_gpu: bool,
}

/// The devices of the compiled-in backends, GPUs first.
pub fn devices() -> Result<Vec<Device>, EngineError> {
    backend()?;
    let mut found: Vec<Device> = llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| Device {
            is_gpu: matches!(
                d.device_type,
                llama_cpp_2::LlamaBackendDeviceType::Gpu
                    | llama_cpp_2::LlamaBackendDeviceType::IntegratedGpu
            ),
            name: d.name,
            description: d.description,
            backend: d.backend,
            memory_total: d.memory_total as u64,
            memory_free: d.memory_free as u64,
        })
        .collect();
    found.sort_by_key(|d| !d.is_gpu);
    Ok(found)
}

/// A short description of the compiled-in backends, e.g. `cpu` or `cuda`.
pub fn backend_description() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "metal") {
        "metal"
    } else if cfg!(feature = "vulkan") {
        "vulkan"
    } else {
        "cpu"
    }
}

/// The entry point: loads models.
#[derive(Debug, Default, Clone, Copy)]
pub struct LlamaEngine;

impl LlamaEngine {
    /// Load a GGUF file and start its decode thread.
    ///
    /// The file is checked by shelf's own GGUF reader first, so a truncated or
    /// foreign file gets a precise error instead of reaching llama.cpp.
    pub fn load(&self, path: &Path, config: &LoadConfig) -> Result<LlamaModelHandle, EngineError> {
        let load_error = |reason: String| EngineError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let gguf = shelf_gguf::Gguf::open(path).map_err(|e| load_error(without_path(&e, path)))?;
        let backend = backend()?;
        let gpu_layers = match config.gpu_layers {
            GpuLayers::Auto if backend.supports_gpu_offload() => u32::MAX,
            GpuLayers::Auto => 0,
            GpuLayers::Count(n) => n,
        };
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| {
            load_error(format!(
                "llama.cpp could not load it ({e}); see the log above"
            ))
        })?;
        let model = Arc::new(model);
        let draft = match &config.speculative.draft {
            Some(draft) => Some(load_draft(backend, draft, &params, &model).map_err(load_error)?),
            None => None,
        };
        let info = model_info(&model, &gguf, config, gpu_layers);
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_model = Arc::clone(&model);
        let (mut jobs, mut embeds) = (None, None);
        let spawned = if info.embedding {
            let (sender, queue) = mpsc::channel::<EmbedJob>();
            embeds = Some(sender);
            let n_batch = info.n_ctx as usize;
            let params = embedding_params(&info);
            thread::Builder::new()
                .name("shelf-embed".into())
                .spawn(move || embed::run(backend, &thread_model, params, n_batch, queue, ready_tx))
        } else {
            let (sender, queue) = mpsc::channel::<Job>();
            jobs = Some(sender);
            let mut setup = setup(config, &info, &gguf, backend.supports_gpu_offload());
            setup.draft_ratio = draft
                .as_ref()
                .map_or(0.0, |d| d.size() as f64 / model.size().max(1) as f64);
            let config = config.clone();
            let info = info.clone();
            let thread_draft = draft.clone();
            thread::Builder::new()
                .name("shelf-decode".into())
                .spawn(move || {
                    let models = decode::Models {
                        target: &thread_model,
                        draft: thread_draft.as_deref(),
                    };
                    let params = || context_params(&config, &setup, &info);
                    decode::run(backend, models, params, setup.clone(), queue, ready_tx)
                })
        };
        let thread =
            spawned.map_err(|e| load_error(format!("cannot start the model's thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(load_error(reason)),
            Err(_) => {
                return Err(load_error(
                    "the decode thread exited during start-up".into(),
                ))
            }
        }
        Ok(LlamaModelHandle {
            model,
            _draft: draft,
            info,
            jobs,
            embeds,
            thread: Some(thread),
        })
    }
}

/// Load a draft model for `target` with the same placement, checking it
/// first (a GGUF, and the target's vocabulary).
fn load_draft(
    backend: &LlamaBackend,
    path: &Path,
    params: &LlamaModelParams,
    target: &LlamaModel,
) -> Result<Arc<LlamaModel>, String> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    shelf_gguf::Gguf::open(path)
        .map_err(|e| format!("the draft model {name}: {}", without_path(&e, path)))?;
    let draft = LlamaModel::load_from_file(backend, path, params)
        .map_err(|e| format!("llama.cpp could not load the draft model {name} ({e})"))?;
    crate::spec::check_vocab(target, &draft)
        .map_err(|why| format!("the draft model {name} cannot draft for this model: {why}"))?;
    Ok(Arc::new(draft))
}

/// `GgufError`'s message starts with the path; the engine error adds it itself.
fn without_path(error: &shelf_gguf::GgufError, path: &Path) -> String {
    let text = error.to_string();
    let prefix = format!("{}: ", path.display());
    text.strip_prefix(&prefix)
        .map(str::to_string)
        .unwrap_or(text)
}

fn model_info(
    model: &LlamaModel,
    gguf: &shelf_gguf::Gguf,
    config: &LoadConfig,
    gpu_layers: u32,
) -> ModelInfo {
    let n_ctx_train = model.n_ctx_train();
    let n_ctx = config
        .ctx
        .unwrap_or_else(|| n_ctx_train.min(LoadConfig::DEFAULT_MAX_CTX))
        .max(16);
    let threads = config.threads.unwrap_or_else(default_threads);
    let vocab = model.vocab();
    let special =
        |token| String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned();
    let architecture = gguf.architecture().unwrap_or("unknown");
    // As Ollama does: a GGUF that names a pooling type makes embeddings.
    let embedding = gguf.get(&format!("{architecture}.pooling_type")).is_some();
    // An embedding input must fit one batch: the trained window, whole.
    let n_ctx = if embedding {
        n_ctx_train.max(16)
    } else {
        n_ctx
    };
    ModelInfo {
        architecture: architecture.to_string(),
        n_params: model.n_params(),
        size_bytes: model.size(),
        n_ctx,
        slots: config.slots.max(1),
        n_ctx_train,
        n_vocab: u32::try_from(model.n_vocab()).unwrap_or(0),
        gpu_layers: gpu_layers.min(model.n_layer() + 1),
        threads,
        chat_template: gguf
            .get_str(shelf_gguf::KEY_CHAT_TEMPLATE)
            .map(str::to_string),
        bos_token: special(vocab.bos()),
        eos_token: special(vocab.eos()),
        embedding,
        n_embd: u32::try_from(model.n_embd()).unwrap_or(0),
    }
}

fn default_threads() -> u32 {
    thread::available_parallelism().map_or(4, |n| n.get() as u32)
}

/// How the decode loop runs this model.
fn setup(config: &LoadConfig, info: &ModelInfo, gguf: &shelf_gguf::Gguf, gpu: bool) -> Setup {
    let facts = gguf.facts();
    Setup {
        slots: info.slots,
        n_ctx_slot: info.n_ctx,
        // Every generating slot needs a place in each step's batch.
        n_batch: config.batch.max(info.slots) as usize,
        cache_ram_bytes: config.cache_ram_bytes,
        step_target: config.step_target,
        sliding_window: facts
            .sliding_window
            .filter(|_| facts.sliding_window_layers > 0),
        overlap: gpu && info.gpu_layers > 0,
        steady_shapes: info.gpu_layers > 0 && captures_graphs(),
        speculative: config.speculative.clone(),
        draft_ratio: 0.0,
    }
}

/// Whether a backend that captures and replays its compute graph (CUDA) is
/// there. It re-captures after every change of shape, so a step of a new
/// shape costs several steps of the last one.
fn captures_graphs() -> bool {
    devices().is_ok_and(|found| found.iter().any(|d| d.is_gpu && d.backend == "CUDA"))
}

/// One KV stream per slot, each `n_ctx` long (not one pool shared by all:
/// each sequence's attention then reads only its own cells).
fn context_params(config: &LoadConfig, setup: &Setup, info: &ModelInfo) -> LlamaContextParams {
    let threads = i32::try_from(info.threads).unwrap_or(i32::MAX);
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(info.n_ctx.saturating_mul(info.slots)))
        .with_n_batch(setup.n_batch as u32)
        .with_n_ubatch(setup.n_batch.min(512) as u32)
        .with_n_seq_max(info.slots)
        .with_kv_unified(false)
        .with_swa_full(!config.small_window_cache)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
}

/// The context of an embedding model: one batch holds whole inputs (a
/// non-causal model attends over all of an input at once), several at a
/// time, each its own sequence.
fn embedding_params(info: &ModelInfo) -> LlamaContextParams {
    let threads = i32::try_from(info.threads).unwrap_or(i32::MAX);
    LlamaContextParams::default()
        .with_embeddings(true)
        .with_n_ctx(NonZeroU32::new(info.n_ctx))
        .with_n_batch(info.n_ctx)
        .with_n_ubatch(info.n_ctx)
        .with_n_seq_max(embed::MAX_SEQS)
        .with_kv_unified(true)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
}

/// A loaded model: shared for tokenization, with one decode (or embedding)
/// thread behind it.
pub struct LlamaModelHandle {
    model: Arc<LlamaModel>,
    /// The draft model, owned here so it outlives the decode thread.
    _draft: Option<Arc<LlamaModel>>,
    info: ModelInfo,
    /// The decode thread's queue; `None` for embedding models and while dropping.
    jobs: Option<mpsc::Sender<Job>>,
    /// The embedding thread's queue; `None` for generative models and while dropping.
    embeds: Option<mpsc::Sender<EmbedJob>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for LlamaModelHandle {
    /// Close the queue and wait for the decode thread, so the llama.cpp
    /// context is freed now rather than racing the process's exit (GPU
    /// backends abort when a context outlives their runtime).
    fn drop(&mut self) {
        self.jobs.take();
        self.embeds.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl LoadedModel for LlamaModelHandle {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str) -> Result<Vec<Token>, EngineError> {
        let vocab = self.model.vocab();
        let add_bos = vocab.should_add_bos();
        let mut tokens = vocab.tokenize(text.as_bytes(), add_bos, true);
        // Templates that write `{{ bos_token }}` themselves would otherwise get two.
        if add_bos && tokens.len() >= 2 && tokens[0] == vocab.bos() && tokens[1] == vocab.bos() {
            tokens.remove(0);
        }
        Ok(tokens.into_iter().map(|t| Token(t.0)).collect())
    }

    fn submit_to(&self, request: GenerateRequest, sink: GenerationSink) -> Result<(), EngineError> {
        if self.info.embedding {
            return Err(EngineError::Unsupported(
                "this is an embedding model: it does not generate text".into(),
            ));
        }
        request.validate(self.info.n_ctx)?;
        self.jobs
            .as_ref()
            .ok_or(EngineError::Unavailable)?
            .send(Job { request, sink })
            .map_err(|_| EngineError::Unavailable)
    }

    fn embed(&self, inputs: Vec<Vec<Token>>) -> Result<Vec<Vec<f32>>, EngineError> {
        let Some(queue) = self.embeds.as_ref() else {
            return Err(EngineError::Unsupported(
                "this model does not make embeddings".into(),
            ));
        };
        if inputs.iter().any(Vec::is_empty) {
            return Err(EngineError::EmptyPrompt);
        }
        let (reply, answer) = mpsc::channel();
        queue
            .send(EmbedJob { inputs, reply })
            .map_err(|_| EngineError::Unavailable)?;
        answer.recv().map_err(|_| EngineError::Unavailable)?
    }

    fn unload(self: Arc<Self>) -> Unloaded {
        // Dropping joins the decode thread: not on an async thread.
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || drop(self)).await;
        })
    }
}
