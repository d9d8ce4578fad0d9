//! Memory, verdict and speed for one model on one box.

use serde::Serialize;
use shelf_gguf::ModelFacts;

use crate::hardware::{Backend, Hardware, APPLE_PRO_MAX};
use crate::models::{quant_bits, CatalogModel};

/// Need at most this share of usable memory to be comfortable; up to all of
/// it is tight; more does not fit.
pub const COMFORTABLE_FRACTION: f64 = 0.8;

/// Tokens per llama.cpp micro-batch: sizes the compute buffer.
const UBATCH: u64 = 512;

/// What the planner needs to know about a model, from a GGUF or the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    pub name: String,
    pub quant: String,
    pub parameters: u64,
    pub active_parameters: u64,
    pub weight_bytes: u64,
    /// Weight bytes read per generated token: all but the embedding table,
    /// and only the used experts of an MoE.
    pub bytes_per_token: u64,
    pub layers: u32,
    pub embedding: u32,
    pub feed_forward: u32,
    /// K plus V elements cached per token per layer.
    pub kv_width: u64,
    /// Weight bytes the CPU backend holds twice (repacked for its kernels).
    pub cpu_repack_bytes: u64,
    /// Of `bytes_per_token`, those in types with slow CPU kernels.
    pub cpu_slow_bytes_per_token: u64,
    pub vocab: u64,
    pub context_length: u64,
}

impl ModelSpec {
    /// From a parsed GGUF's facts.
    pub fn from_facts(name: &str, quant: &str, facts: &ModelFacts) -> Self {
        let expert_share = if facts.experts > 0 {
            facts.expert_bytes as f64
                * (1.0 - f64::from(facts.experts_used) / f64::from(facts.experts))
        } else {
            0.0
        };
        let embedding_not_read = if facts.tied_embeddings {
            0
        } else {
            facts.token_embedding_bytes
        };
        let bytes_per_token = facts
            .tensor_bytes
            .saturating_sub(embedding_not_read)
            .saturating_sub(expert_share as u64);
        let active = (facts.parameters as f64 * bytes_per_token as f64
            / facts.tensor_bytes.max(1) as f64) as u64;
        Self {
            name: name.into(),
            quant: quant.into(),
            parameters: facts.parameters,
            active_parameters: if facts.experts > 0 {
                active
            } else {
                facts.parameters
            },
            weight_bytes: facts.tensor_bytes,
            bytes_per_token,
            layers: facts.layers,
            embedding: facts.embedding,
            feed_forward: facts.feed_forward,
            kv_width: u64::from(facts.kv_heads) * u64::from(facts.head_dim_k + facts.head_dim_v),
            cpu_repack_bytes: facts.cpu_repack_bytes,
            cpu_slow_bytes_per_token: facts.cpu_slow_bytes.min(bytes_per_token),
            vocab: facts.vocab,
            context_length: facts.context_length,
        }
    }

    /// A catalog model at a quant; `None` for an unknown quant.
    pub fn from_catalog(model: &CatalogModel, quant: &str) -> Option<Self> {
        let bits = quant_bits(quant)?;
        let bytes = |params: u64| (params as f64 * bits / 8.0) as u64;
        let embedding_params = if model.tied_embeddings {
            0
        } else {
            u64::from(model.vocab) * u64::from(model.embedding)
        };
        let kv_width = match model.kv_widths {
            Some((k, v)) => u64::from(k + v),
            None => 2 * u64::from(model.kv_heads) * u64::from(model.head_dim),
        };
        // Without a file, assume the bulk of a Q4 mix is repackable.
        let repack_share = match quant.to_ascii_uppercase().as_str() {
            "Q4_0" | "Q4_K_M" | "Q4_K_S" | "IQ4_NL" => 0.8,
            _ => 0.0,
        };
        let slow_on_cpu = matches!(
            quant.to_ascii_uppercase().as_str(),
            "Q8_0" | "Q5_0" | "Q5_1" | "Q4_1" | "F16" | "BF16"
        );
        let bytes_per_token = bytes(model.active_parameters.saturating_sub(embedding_params));
        Some(Self {
            cpu_slow_bytes_per_token: if slow_on_cpu { bytes_per_token } else { 0 },
            cpu_repack_bytes: (bytes(model.parameters) as f64 * repack_share) as u64,
            name: model.name.into(),
            quant: quant.to_ascii_uppercase(),
            parameters: model.parameters,
            active_parameters: model.active_parameters,
            weight_bytes: bytes(model.parameters),
            bytes_per_token,
            layers: model.layers,
            embedding: model.embedding,
            feed_forward: model.feed_forward,
            kv_width,
            vocab: u64::from(model.vocab),
            context_length: u64::from(model.context_length),
        })
    }
}

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvType {
    F16,
    Q8_0,
    Q4_0,
}

impl KvType {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "f16" => Some(Self::F16),
            "q8_0" => Some(Self::Q8_0),
            "q4_0" => Some(Self::Q4_0),
            _ => None,
        }
    }

    fn bytes_per_element(self) -> f64 {
        match self {
            Self::F16 => 2.0,
            Self::Q8_0 => 34.0 / 32.0,
            Self::Q4_0 => 18.0 / 32.0,
        }
    }
}

/// How the model will be run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Context per sequence, in tokens.
    pub ctx: u64,
    /// Sequences served at once, each with its own `ctx`.
    pub parallel: u64,
    pub kv_type: KvType,
    /// Prompt length prefill is predicted for, in tokens.
    pub prompt: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            ctx: 4096,
            parallel: 1,
            kv_type: KvType::F16,
            prompt: 512,
        }
    }
}

/// Memory by purpose, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
    pub overhead: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Comfortable,
    Tight,
    No,
}

impl Verdict {
    pub fn fits(self) -> bool {
        self != Self::No
    }
}

/// The planner's answer for one model on one box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub memory: Memory,
    pub usable_bytes: u64,
    pub verdict: Verdict,
    /// Layers that fit in GPU memory, when not all of them do (discrete GPUs).
    pub gpu_layers: Option<u32>,
    pub decode_tps: f64,
    pub prefill_tps: f64,
    /// The memory-bandwidth ceiling on decode: bandwidth ÷ bytes per token.
    pub bound_tps: f64,
    /// What one more token adds to a small decode batch (speculative
    /// verification), in seconds.
    pub verify_token_seconds: f64,
}

/// Per-backend constants, fitted to published llama.cpp results (docs/planner.md).
struct Efficiency {
    /// Share of peak bandwidth decode reaches.
    bandwidth: f64,
    /// Fixed cost per layer per token (kernel launches, thread barriers), seconds.
    per_layer: f64,
    /// Share of the box's `matmul_tops` prefill's weight multiplications reach.
    compute: f64,
    /// Memory the runtime takes besides buffers.
    overhead: u64,
}

fn efficiency(backend: Backend) -> Efficiency {
    match backend {
        // Fitted on the M1 and M2 rows of discussion #4167; Apple boxes
        // carry their chip class's decode constants themselves.
        Backend::Metal => Efficiency {
            bandwidth: APPLE_PRO_MAX.0,
            per_layer: APPLE_PRO_MAX.1,
            compute: 0.69,
            overhead: 256 << 20,
        },
        // Prefill fitted (least squares on the log of the ratio) on the RTX 4090
        // and H100 rows of discussion #15013 and shelf's own H100 runs.
        Backend::Cuda => Efficiency {
            bandwidth: 0.75,
            per_layer: 40e-6,
            compute: 0.57,
            overhead: 512 << 20,
        },
        Backend::Vulkan => Efficiency {
            bandwidth: 0.7,
            per_layer: 100e-6,
            compute: 0.3,
            overhead: 512 << 20,
        },
        // Per layer: a token's dozen or so operations each end at a
        // barrier of the threads; fitted with the kernels' rates below.
        Backend::Cpu => Efficiency {
            bandwidth: 0.95,
            per_layer: 80e-6,
            compute: 0.5,
            overhead: 8 << 20,
        },
    }
}

/// Attention's share of the matmul rate: its products are small per head
/// and go through masking and softmax. Fitted on shelf's own runs, the fit
/// set's only long prompts: Qwen2.5-Coder 0.5B and 1.5B on this project's
/// CPU box, 2 threads, pp512 against pp4096 imply 0.19 and 0.17.
const ATTENTION_SHARE: f64 = 0.18;

/// An MoE's expert multiplications during prefill: each expert sees only
/// its share of the batch's tokens (32 of 512 for Qwen3 30B-A3B), so its
/// matrices are narrow. A documented default, not fitted: the fit set has
/// no MoE, and the value was chosen with the check set's MoE rows in view,
/// so those rows do not test it.
const MOE_PREFILL_SHARE: f64 = 0.5;

/// Seconds per prompt token, the prompt `prompt` tokens long from an empty
/// cache: the weights' multiplications, and attention over the average
/// context so far (half the prompt).
fn prefill_seconds(model: &ModelSpec, hardware: &Hardware, eff: &Efficiency, prompt: u64) -> f64 {
    let rate = hardware.matmul_tops * 1e12 * eff.compute;
    let moe = if model.active_parameters < model.parameters {
        MOE_PREFILL_SHARE
    } else {
        1.0
    };
    let weights = 2.0 * model.active_parameters.max(1) as f64 / (rate * moe);
    let context = prompt as f64 / 2.0;
    let attention = 4.0 * f64::from(model.layers) * f64::from(model.embedding) * context
        / (rate * ATTENTION_SHARE);
    weights + attention
}

/// Seconds to read `model`'s weights from a disk that gives `read_gbs`
/// GB/s: loading is reading (llama.cpp maps or reads the file once; on a
/// GPU the copy to VRAM overlaps the reading).
pub fn load_seconds(model: &ModelSpec, read_gbs: f64) -> f64 {
    model.weight_bytes as f64 / (read_gbs.max(1e-3) * 1e9)
}

/// Memory, verdict, GPU layers and speeds of `model` on `hardware`.
pub fn estimate(model: &ModelSpec, hardware: &Hardware, options: &FitOptions) -> Estimate {
    let eff = efficiency(hardware.backend);
    let cells = options.ctx.max(1) * options.parallel.max(1);
    let kv_cache = (cells as f64
        * u64::from(model.layers) as f64
        * model.kv_width as f64
        * options.kv_type.bytes_per_element()) as u64;
    // Logits for a micro-batch dominate; activations add a few widths.
    let compute = UBATCH
        * (model.vocab + 4 * u64::from(model.embedding) + 2 * u64::from(model.feed_forward))
        * 4;
    let weights = match hardware.backend {
        Backend::Cpu => model.weight_bytes + model.cpu_repack_bytes,
        _ => model.weight_bytes,
    };
    let memory = Memory {
        weights,
        kv_cache,
        compute,
        overhead: eff.overhead,
        total: weights + kv_cache + compute + eff.overhead,
    };
    let usable = hardware.usable_bytes;
    let verdict = verdict_for(memory.total, usable);
    let gpu_layers =
        (verdict == Verdict::No && !hardware.unified && hardware.backend != Backend::Cpu)
            .then(|| layers_that_fit(model, &memory, usable));

    let bandwidth = hardware.bandwidth_gbs * 1e9;
    let bound_tps = bandwidth / model.bytes_per_token.max(1) as f64;
    let bandwidth_share = hardware.decode_efficiency.unwrap_or(eff.bandwidth);
    let seconds_per_token = match (hardware.backend, hardware.cpu_threads) {
        (Backend::Cpu, Some(threads)) => {
            cpu_read_seconds(model, bandwidth * bandwidth_share, threads)
        }
        _ => model.bytes_per_token as f64 / (bandwidth * bandwidth_share),
    } + f64::from(model.layers)
        * hardware.per_layer_seconds.unwrap_or(eff.per_layer);
    let prefill_tps = 1.0 / prefill_seconds(model, hardware, &eff, options.prompt.max(1));
    // A CPU runs its matrix-vector kernels again for each row of a small
    // batch (the weights stay in cache; the multiplying does not get
    // cheaper); a GPU's small batches cost their compute at prefill's rate.
    let verify_token_seconds = match (hardware.backend, hardware.cpu_threads) {
        (Backend::Cpu, Some(threads)) => cpu_multiply_seconds(model, threads),
        _ => 1.0 / prefill_tps.max(1e-9),
    };
    Estimate {
        memory,
        usable_bytes: usable,
        verdict,
        gpu_layers,
        decode_tps: 1.0 / seconds_per_token,
        prefill_tps,
        bound_tps,
        verify_token_seconds,
    }
}

/// Several models resident at once: their memory adds up (the runtime's
/// overhead once); the verdict is for all of them together.
pub fn estimate_together(
    models: &[ModelSpec],
    hardware: &Hardware,
    options: &FitOptions,
) -> (Memory, Verdict) {
    let overhead = efficiency(hardware.backend).overhead;
    let mut total = Memory {
        weights: 0,
        kv_cache: 0,
        compute: 0,
        overhead,
        total: overhead,
    };
    for model in models {
        let one = estimate(model, hardware, options).memory;
        total.weights += one.weights;
        total.kv_cache += one.kv_cache;
        total.compute += one.compute;
        total.total += one.total - one.overhead;
    }
    (total, verdict_for(total.total, hardware.usable_bytes))
}

fn verdict_for(total: u64, usable: u64) -> Verdict {
    if total as f64 <= usable as f64 * COMFORTABLE_FRACTION {
        Verdict::Comfortable
    } else if total <= usable {
        Verdict::Tight
    } else {
        Verdict::No
    }
}

/// Per-thread throughput of llama.cpp's CPU matrix-vector kernels, bytes of
/// weights per second, on an x86-64 (AVX-512) box: legacy types are
/// compute-bound well below memory bandwidth; K-quants and repacked Q4
/// nearly reach it. Fitted with the CPU's per-layer cost (minimax relative
/// error, 7% at most) on `bench/fit-check.sh`'s tg128 runs of four models
/// with 2 threads: SmolLM2 135M Q4_1, Gemma 3 270M, Qwen2.5-Coder 0.5B (all
/// but a few tensors legacy types) and 1.5B (K-quants only).
const CPU_SLOW_BYTES_PER_THREAD: f64 = 10.45e9;
const CPU_FAST_BYTES_PER_THREAD: f64 = 17e9;

/// A CPU reads each class of weights at the lower of bandwidth and what its
/// threads can multiply.
fn cpu_read_seconds(model: &ModelSpec, bandwidth: f64, threads: u32) -> f64 {
    let threads = f64::from(threads.max(1));
    let slow = model.cpu_slow_bytes_per_token as f64;
    let fast = model
        .bytes_per_token
        .saturating_sub(model.cpu_slow_bytes_per_token) as f64;
    slow / bandwidth.min(CPU_SLOW_BYTES_PER_THREAD * threads)
        + fast / bandwidth.min(CPU_FAST_BYTES_PER_THREAD * threads)
}

/// What `threads` threads take to multiply one token through the weights,
/// whatever the bandwidth.
fn cpu_multiply_seconds(model: &ModelSpec, threads: u32) -> f64 {
    let threads = f64::from(threads.max(1));
    let slow = model.cpu_slow_bytes_per_token as f64;
    let fast = model
        .bytes_per_token
        .saturating_sub(model.cpu_slow_bytes_per_token) as f64;
    slow / (CPU_SLOW_BYTES_PER_THREAD * threads) + fast / (CPU_FAST_BYTES_PER_THREAD * threads)
}

/// How many layers fit beside the buffers, each taking its share of weights and KV.
fn layers_that_fit(model: &ModelSpec, memory: &Memory, usable: u64) -> u32 {
    let layers = u64::from(model.layers.max(1));
    let per_layer = (memory.weights + memory.kv_cache) / layers;
    let room = usable.saturating_sub(memory.compute + memory.overhead);
    u32::try_from((room / per_layer.max(1)).min(layers)).unwrap_or(0)
}
