//! Model facts read off a parsed GGUF: the shape numbers a capacity planner
//! needs, with llama.cpp's key names and defaults.

use crate::{Gguf, Value};

/// What a GGUF says about its model. Missing keys give zeros or `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelFacts {
    pub architecture: String,
    pub parameters: u64,
    /// Bytes of all tensor data.
    pub tensor_bytes: u64,
    /// Bytes by tensor element type (`Q4_K`, `F32`, ...), largest first.
    pub bytes_by_type: Vec<(String, u64)>,
    /// Bytes of the token embedding table: only one row of it is read per
    /// token, unless it doubles as the output matrix.
    pub token_embedding_bytes: u64,
    /// No `output.weight`: the embedding table is also the output matrix,
    /// read whole for every token.
    pub tied_embeddings: bool,
    /// Bytes of MoE expert tensors (`*_exps`): only the used experts are read per token.
    pub expert_bytes: u64,
    /// Bytes of weight matrices llama.cpp's CPU backend copies into an
    /// interleaved layout at load (Q4_0, Q4_K and IQ4_NL with rows in
    /// multiples of 8): on a CPU they take memory twice.
    pub cpu_repack_bytes: u64,
    /// Bytes read per token in types whose CPU kernels are slow (Q8_0, Q5_0,
    /// Q5_1, Q4_1, F16, BF16, F32), as against K-quants and repacked Q4.
    pub cpu_slow_bytes: u64,
    pub layers: u32,
    pub embedding: u32,
    pub feed_forward: u32,
    pub heads: u32,
    /// KV heads of the widest layer (some models vary it per layer).
    pub kv_heads: u32,
    pub head_dim_k: u32,
    pub head_dim_v: u32,
    pub context_length: u64,
    pub sliding_window: Option<u32>,
    /// Layers that use the sliding window (their KV cache can be shorter).
    pub sliding_window_layers: u32,
    pub experts: u32,
    pub experts_used: u32,
    pub vocab: u64,
}

impl Gguf {
    /// The model facts, from `<arch>.*` metadata and the tensor table.
    pub fn facts(&self) -> ModelFacts {
        let arch = self.architecture().unwrap_or_default().to_string();
        let num = |key: &str| self.arch_u64(&arch, key).unwrap_or(0);
        let small = |key: &str| u32::try_from(num(key)).unwrap_or(u32::MAX);
        let layers = small("block_count");
        let embedding = small("embedding_length");
        let heads = self.arch_max(&arch, "attention.head_count");
        let kv_heads = match self.arch_max(&arch, "attention.head_count_kv") {
            0 => heads,
            n => n,
        };
        let default_head_dim = embedding.checked_div(heads).unwrap_or(0);
        let head_dim_k = match small("attention.key_length") {
            0 => default_head_dim,
            n => n,
        };
        let head_dim_v = match small("attention.value_length") {
            0 => head_dim_k,
            n => n,
        };
        let sliding_window = Some(small("attention.sliding_window")).filter(|&w| w > 0);
        let mut bytes_by_type: Vec<(String, u64)> = Vec::new();
        for tensor in &self.tensors {
            match bytes_by_type
                .iter_mut()
                .find(|(name, _)| name == tensor.ty.name)
            {
                Some((_, bytes)) => *bytes += tensor.bytes,
                None => bytes_by_type.push((tensor.ty.name.to_string(), tensor.bytes)),
            }
        }
        bytes_by_type.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
        let tensor_bytes_named = |pred: &dyn Fn(&str) -> bool| -> u64 {
            self.tensors
                .iter()
                .filter(|t| pred(&t.name))
                .map(|t| t.bytes)
                .sum()
        };
        let vocab = match self.get("tokenizer.ggml.tokens") {
            Some(Value::Array { len, .. }) => *len,
            _ => num("vocab_size"),
        };
        ModelFacts {
            parameters: self.parameter_count(),
            tensor_bytes: self.tensors.iter().map(|t| t.bytes).sum(),
            bytes_by_type,
            token_embedding_bytes: tensor_bytes_named(&|n| n == "token_embd.weight"),
            tied_embeddings: !self.tensors.iter().any(|t| t.name == "output.weight"),
            cpu_slow_bytes: {
                let tied = !self.tensors.iter().any(|t| t.name == "output.weight");
                self.tensors
                    .iter()
                    .filter(|t| tied || t.name != "token_embd.weight")
                    .filter(|t| is_slow_on_cpu(t.ty.name))
                    .map(|t| t.bytes)
                    .sum()
            },
            expert_bytes: tensor_bytes_named(&|n| n.contains("_exps")),
            cpu_repack_bytes: self
                .tensors
                .iter()
                .filter(|t| {
                    matches!(t.ty.name, "Q4_0" | "Q4_K" | "IQ4_NL")
                        && t.dims.len() == 2
                        && t.dims[1] % 8 == 0
                        && t.name != "token_embd.weight"
                })
                .map(|t| t.bytes)
                .sum(),
            layers,
            embedding,
            feed_forward: self.arch_max(&arch, "feed_forward_length"),
            heads,
            kv_heads,
            head_dim_k,
            head_dim_v,
            context_length: num("context_length"),
            sliding_window,
            sliding_window_layers: sliding_window.map_or(0, |_| swa_layers(&arch, layers)),
            experts: small("expert_count"),
            experts_used: small("expert_used_count"),
            vocab,
            architecture: arch,
        }
    }

    fn arch_u64(&self, arch: &str, key: &str) -> Option<u64> {
        self.get(&format!("{arch}.{key}"))?.as_u64()
    }

    /// A per-model number that some architectures give per layer, as an array: the largest.
    fn arch_max(&self, arch: &str, key: &str) -> u32 {
        let value = match self.get(&format!("{arch}.{key}")) {
            Some(Value::Array { values, .. }) => values.iter().filter_map(Value::as_u64).max(),
            Some(value) => value.as_u64(),
            None => None,
        };
        value.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
    }
}

/// Types llama.cpp's CPU backend multiplies without repacking or K-quant
/// kernels: measured at about 10.5 GB/s per thread against 17 for the rest.
fn is_slow_on_cpu(type_name: &str) -> bool {
    matches!(
        type_name,
        "Q8_0" | "Q5_0" | "Q5_1" | "Q4_1" | "F16" | "BF16" | "F32"
    )
}

/// How many layers use the sliding window, by llama.cpp's per-architecture
/// patterns: Gemma 2 alternates; Gemma 3 has one global layer in six;
/// elsewhere a window applies to every layer.
fn swa_layers(arch: &str, layers: u32) -> u32 {
    match arch {
        "gemma2" => layers.div_ceil(2),
        "gemma3" | "gemma3n" => layers - layers / 6,
        _ => layers,
    }
}
