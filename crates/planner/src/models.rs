//! Models people ask about, with their real shapes, and llama.cpp's quants
//! by average bits per weight.

use serde::Serialize;

/// Average bits per weight of a whole llama.cpp file in each quant (mixes
/// included: `Q4_K_M` keeps some tensors in `Q6_K`), from published file sizes.
pub const QUANTS: &[(&str, f64)] = &[
    ("F16", 16.0),
    ("BF16", 16.0),
    ("Q8_0", 8.5),
    ("Q6_K", 6.56),
    ("Q5_K_M", 5.69),
    ("Q5_K_S", 5.54),
    ("Q5_0", 5.5),
    ("Q4_1", 5.0),
    ("Q4_K_M", 4.85),
    ("Q4_K_S", 4.58),
    ("Q4_0", 4.55),
    ("IQ4_NL", 4.5),
    ("IQ4_XS", 4.25),
    ("Q3_K_L", 4.27),
    ("Q3_K_M", 3.91),
    ("Q3_K_S", 3.5),
    ("IQ3_M", 3.7),
    ("Q2_K", 3.35),
    ("IQ2_M", 2.7),
    ("IQ1_M", 1.75),
];

/// Bits per weight of a quant name (case-insensitive).
pub fn quant_bits(quant: &str) -> Option<f64> {
    QUANTS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(quant))
        .map(|(_, bits)| *bits)
}

/// A model's shape, as its config.json and GGUF metadata give it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogModel {
    /// `family-size`, e.g. `llama-3.3-70b`.
    pub name: &'static str,
    pub architecture: &'static str,
    pub parameters: u64,
    /// Parameters used per token (all of them for a dense model).
    pub active_parameters: u64,
    pub layers: u32,
    pub embedding: u32,
    pub feed_forward: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// K and V widths per token per layer, when not `kv_heads × head_dim`
    /// (DeepSeek's latent attention caches one compressed vector).
    pub kv_widths: Option<(u32, u32)>,
    pub vocab: u32,
    pub context_length: u32,
    pub experts: u32,
    pub experts_used: u32,
    /// The embedding table is also the output matrix (Gemma).
    pub tied_embeddings: bool,
    /// The quant to show when a table lists the model once.
    pub default_quant: &'static str,
}

const B: u64 = 1_000_000_000;
const M: u64 = 1_000_000;

#[allow(clippy::too_many_arguments)]
const fn dense(
    name: &'static str,
    architecture: &'static str,
    parameters: u64,
    layers: u32,
    embedding: u32,
    feed_forward: u32,
    heads: u32,
    kv_heads: u32,
    vocab: u32,
    context_length: u32,
) -> CatalogModel {
    CatalogModel {
        name,
        architecture,
        parameters,
        active_parameters: parameters,
        layers,
        embedding,
        feed_forward,
        heads,
        kv_heads,
        head_dim: 128,
        kv_widths: None,
        vocab,
        context_length,
        experts: 0,
        experts_used: 0,
        tied_embeddings: false,
        default_quant: "Q4_K_M",
    }
}

/// The catalog: published parameter counts and config shapes.
pub fn model_catalog() -> Vec<CatalogModel> {
    // Two distills share their base models' shapes.
    let llama_70b = dense(
        "llama-3.3-70b",
        "llama",
        70_554 * M,
        80,
        8192,
        28672,
        64,
        8,
        128_256,
        131_072,
    );
    let qwen_32b = dense(
        "qwen-2.5-32b",
        "qwen2",
        32_764 * M,
        64,
        5120,
        27648,
        40,
        8,
        152_064,
        32_768,
    );
    let mut models = vec![
        llama_70b.clone(),
        // Small models of the same families: the drafts for speculative decoding.
        CatalogModel {
            head_dim: 64,
            tied_embeddings: true,
            default_quant: "Q8_0",
            ..dense(
                "llama-3.2-1b",
                "llama",
                1_236 * M,
                16,
                2048,
                8192,
                32,
                8,
                128_256,
                131_072,
            )
        },
        CatalogModel {
            tied_embeddings: true,
            default_quant: "Q8_0",
            ..dense(
                "llama-3.2-3b",
                "llama",
                3_213 * M,
                28,
                3072,
                8192,
                24,
                8,
                128_256,
                131_072,
            )
        },
        CatalogModel {
            head_dim: 64,
            tied_embeddings: true,
            default_quant: "Q8_0",
            ..dense(
                "qwen-2.5-0.5b",
                "qwen2",
                494 * M,
                24,
                896,
                4864,
                14,
                2,
                151_936,
                32_768,
            )
        },
        // The reference model of llama.cpp's published benchmark tables.
        CatalogModel {
            default_quant: "Q4_0",
            ..dense(
                "llama-2-7b",
                "llama",
                6_738 * M,
                32,
                4096,
                11008,
                32,
                32,
                32_000,
                4_096,
            )
        },
        dense(
            "llama-3.1-8b",
            "llama",
            8_030 * M,
            32,
            4096,
            14336,
            32,
            8,
            128_256,
            131_072,
        ),
        dense(
            "qwen-2.5-7b",
            "qwen2",
            7_616 * M,
            28,
            3584,
            18944,
            28,
            4,
            152_064,
            32_768,
        ),
        dense(
            "qwen-2.5-14b",
            "qwen2",
            14_770 * M,
            48,
            5120,
            13824,
            40,
            8,
            152_064,
            32_768,
        ),
        qwen_32b.clone(),
        dense(
            "qwen-2.5-72b",
            "qwen2",
            72_706 * M,
            80,
            8192,
            29568,
            64,
            8,
            152_064,
            32_768,
        ),
        CatalogModel {
            name: "deepseek-r1-distill-llama-70b",
            ..llama_70b.clone()
        },
        CatalogModel {
            name: "deepseek-r1-distill-qwen-32b",
            context_length: 131_072,
            ..qwen_32b.clone()
        },
        dense(
            "mistral-nemo-12b",
            "llama",
            12_248 * M,
            40,
            5120,
            14336,
            32,
            8,
            131_072,
            131_072,
        ),
        dense(
            "gemma-3-27b",
            "gemma3",
            27_009 * M,
            62,
            5376,
            21504,
            32,
            16,
            262_208,
            131_072,
        ),
        dense(
            "mistral-small-24b",
            "llama",
            23_572 * M,
            40,
            5120,
            32768,
            32,
            8,
            131_072,
            131_072,
        ),
    ];
    models.extend([
        CatalogModel {
            active_parameters: 12_879 * M,
            experts: 8,
            experts_used: 2,
            ..dense(
                "mixtral-8x7b",
                "llama",
                46_703 * M,
                32,
                4096,
                14336,
                32,
                8,
                32_000,
                32_768,
            )
        },
        CatalogModel {
            active_parameters: 39_100 * M,
            experts: 8,
            experts_used: 2,
            ..dense(
                "mixtral-8x22b",
                "llama",
                140_621 * M,
                56,
                6144,
                16384,
                48,
                8,
                32_768,
                65_536,
            )
        },
        CatalogModel {
            active_parameters: 3_300 * M,
            experts: 128,
            experts_used: 8,
            ..dense(
                "qwen3-30b-a3b",
                "qwen3moe",
                30_532 * M,
                48,
                2048,
                768,
                32,
                4,
                151_936,
                40_960,
            )
        },
        CatalogModel {
            active_parameters: 37 * B,
            experts: 256,
            experts_used: 8,
            kv_widths: Some((576, 512)),
            ..dense(
                "deepseek-v3-671b",
                "deepseek2",
                671 * B,
                61,
                7168,
                2048,
                128,
                128,
                129_280,
                163_840,
            )
        },
        CatalogModel {
            active_parameters: 17 * B,
            experts: 128,
            experts_used: 1,
            ..dense(
                "llama-4-maverick-400b",
                "llama4",
                400 * B,
                48,
                5120,
                8192,
                40,
                8,
                202_048,
                1_048_576,
            )
        },
    ]);
    models
}

/// A catalog model by `family-size` (case-insensitive), or by a prefix
/// that names one model (`llama-4-maverick`).
pub fn catalog_model(name: &str) -> Option<CatalogModel> {
    let name = name.to_ascii_lowercase();
    let catalog = model_catalog();
    if let Some(exact) = catalog.iter().find(|m| m.name == name) {
        return Some(exact.clone());
    }
    let mut prefixed = catalog.into_iter().filter(|m| m.name.starts_with(&name));
    match (prefixed.next(), prefixed.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}
