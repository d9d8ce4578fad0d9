//! Building llama.cpp's sampler chain from [`SamplingParams`].
//!
//! Sampling stays inside llama.cpp: copying the logits to Rust every token
//! costs measurable decode speed on small models.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use shelf_engine::SamplingParams;

/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// A chain in llama.cpp's own order: penalties, top-k, top-p, min-p,
/// temperature, then the final pick.
pub fn chain(model: &LlamaModel, params: &SamplingParams) -> LlamaSampler {
    let mut stages = Vec::new();
    if has_penalties(params) {
        stages.push(LlamaSampler::penalties(
            model.n_vocab(),
            i32::try_from(params.repeat_last_n).unwrap_or(i32::MAX),
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        ));
    }
    if params.is_greedy() {
        stages.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(stages);
    }
    if params.top_k > 0 {
        stages.push(LlamaSampler::top_k(
            i32::try_from(params.top_k).unwrap_or(i32::MAX),
        ));
    }
    if params.top_p < 1.0 {
        stages.push(LlamaSampler::top_p(params.top_p, 1));
    }
    if params.min_p > 0.0 {
        stages.push(LlamaSampler::min_p(params.min_p, 1));
    }
    stages.push(LlamaSampler::temp(params.temperature));
    stages.push(LlamaSampler::dist(params.seed.unwrap_or(RANDOM_SEED)));
    LlamaSampler::chain_simple(stages)
}

/// Whether the penalties stage does anything (and so needs the prompt's history).
pub fn has_penalties(params: &SamplingParams) -> bool {
    params.repeat_penalty != 1.0
        || params.frequency_penalty != 0.0
        || params.presence_penalty != 0.0
}

/// Whether the next token can be picked by a plain arg-max over the logits:
/// greedy with no penalties, so no sampler state is involved.
pub fn is_plain_greedy(params: &SamplingParams) -> bool {
    params.is_greedy() && !has_penalties(params)
}

/// The index of the largest logit, first on ties (as llama.cpp's greedy).
///
/// Reads llama.cpp's logits buffer in place: no copy, and none of the
/// candidate-array building that a sampler chain does for every token.
/// Two passes: the maximum, in lanes the compiler turns into vector
/// instructions, then the first position holding it. This is on the
/// critical path of every greedy token, between two decodes.
pub fn arg_max(logits: &[f32]) -> i32 {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = if value > *lane { value } else { *lane };
        }
    }
    let max = lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    let best = logits.iter().position(|&v| v == max).unwrap_or(0);
    i32::try_from(best).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::arg_max;

    #[test]
    fn arg_max_takes_the_first_largest() {
        assert_eq!(arg_max(&[0.0, 3.0, -1.0, 3.0]), 1);
        assert_eq!(arg_max(&[f32::NEG_INFINITY, -5.0]), 1);
        let mut long: Vec<f32> = (0..1000).map(|i| (i % 97) as f32).collect();
        long[611] = 500.0;
        long[977] = 500.0;
        assert_eq!(arg_max(&long), 611);
        assert_eq!(arg_max(&long[612..]), 977 - 612);
    }
}
