//! Building llama.cpp's sampler chain from [`SamplingParams`].
//!
//! Sampling stays inside llama.cpp: copying the logits to Rust every token
//! costs measurable decode speed on small models.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use shelf_engine::{EngineError, Grammar, SamplingParams, Token, TokenLogprob, TokenProb};

/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// A chain in llama.cpp's own order: penalties, top-k, top-p, min-p,
/// temperature, then the final pick.
/// Penalties look back at most `n_ctx` tokens: llama.cpp sizes their ring
/// buffer by `repeat_last_n`.
pub fn chain(model: &LlamaModel, params: &SamplingParams, n_ctx: u32) -> LlamaSampler {
    let mut stages = filters(model, params, n_ctx, true);
    if params.is_greedy() {
        stages.push(LlamaSampler::greedy());
    } else {
        stages.push(LlamaSampler::dist(params.seed.unwrap_or(RANDOM_SEED)));
    }
    LlamaSampler::chain_simple(stages)
}

/// The chain's stages before the final pick: what turns logits into the
/// distribution a token is drawn from (speculative sampling needs that
/// distribution itself). `penalties` false leaves the history out (a
/// draft's distribution may be anything, as long as it is the one drawn
/// from).
pub fn filter(
    model: &LlamaModel,
    params: &SamplingParams,
    n_ctx: u32,
    penalties: bool,
) -> LlamaSampler {
    LlamaSampler::chain_simple(filters(model, params, n_ctx, penalties))
}

fn filters(
    model: &LlamaModel,
    params: &SamplingParams,
    n_ctx: u32,
    penalties: bool,
) -> Vec<LlamaSampler> {
    let mut stages = Vec::new();
    if penalties && has_penalties(params) {
        stages.push(LlamaSampler::penalties(
            model.n_vocab(),
            i32::try_from(params.repeat_last_n.min(n_ctx)).unwrap_or(i32::MAX),
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        ));
    }
    if params.is_greedy() {
        return stages;
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
    stages
}

/// The distribution at batch index `index` of `ctx`: the grammar's
/// allowed tokens (if any), through `filter`, normalised.
pub fn distribution(
    ctx: &LlamaContext<'_>,
    index: i32,
    grammar: Option<&mut LlamaSampler>,
    filter: &mut LlamaSampler,
) -> Vec<(Token, f32)> {
    let mut all = candidates(ctx, index);
    if let Some(grammar) = grammar {
        all.apply_sampler(grammar);
    }
    all.apply_sampler(filter);
    let max = all
        .data
        .iter()
        .map(LlamaTokenData::logit)
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return Vec::new();
    }
    let weights: Vec<(Token, f32)> = all
        .data
        .iter()
        .filter(|d| d.logit().is_finite())
        .map(|d| (Token(d.id().0), (d.logit() - max).exp()))
        .collect();
    let total: f32 = weights.iter().map(|(_, w)| w).sum();
    weights.into_iter().map(|(t, w)| (t, w / total)).collect()
}

/// The arg-max of `logits` and its probability (the softmax's largest).
pub fn confident_arg_max(logits: &[f32]) -> (i32, f32) {
    let best = arg_max(logits);
    let max = logits.get(best as usize).copied().unwrap_or(0.0);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    (best, 1.0 / sum.max(1.0))
}

/// The grammar sampler for a request's grammar, lazy when it has triggers.
pub fn grammar(model: &LlamaModel, grammar: &Grammar) -> Result<LlamaSampler, EngineError> {
    let built = match &grammar.triggers {
        None => LlamaSampler::grammar(model, &grammar.gbnf, "root"),
        Some(patterns) => {
            LlamaSampler::grammar_lazy_patterns(model, &grammar.gbnf, "root", patterns, &[])
        }
    };
    built.map_err(|e| EngineError::Unsupported(format!("llama.cpp refused the grammar: {e}")))
}

/// Pick the next token under a grammar. The unconstrained choice is tried
/// first: checking one token against the grammar is cheap, and most pass;
/// only a rejected one costs a pass of the grammar over the vocabulary.
/// An error when the grammar allows no token at all: accepting a token it
/// refused would abort llama.cpp.
pub fn constrained(
    ctx: &LlamaContext<'_>,
    index: i32,
    grammar: &mut LlamaSampler,
    mut chain: Option<&mut LlamaSampler>,
    greedy: Option<LlamaToken>,
) -> Result<LlamaToken, EngineError> {
    let first = match (&mut chain, greedy) {
        (Some(chain), _) => pick(candidates(ctx, index), chain)
            .unwrap_or(LlamaToken(arg_max(ctx.get_logits_ith(index)))),
        (None, Some(token)) => token,
        (None, None) => LlamaToken(arg_max(ctx.get_logits_ith(index))),
    };
    let token = if allows(grammar, first) {
        first
    } else {
        let mut all = candidates(ctx, index);
        all.apply_sampler(grammar);
        let allowed = best(&all).ok_or_else(|| {
            EngineError::Decode("the output's grammar allows no token here".into())
        })?;
        match &mut chain {
            Some(chain) => pick(all, chain)
                .filter(|t| allows(grammar, *t))
                .unwrap_or(allowed),
            None => allowed,
        }
    };
    grammar.accept(token);
    if let Some(chain) = chain {
        chain.accept(token);
    }
    Ok(token)
}

fn candidates(ctx: &LlamaContext<'_>, index: i32) -> LlamaTokenDataArray {
    LlamaTokenDataArray::from_iter(ctx.candidates_ith(index), false)
}

/// The chain's choice among `candidates`, without accepting it.
fn pick(mut candidates: LlamaTokenDataArray, chain: &mut LlamaSampler) -> Option<LlamaToken> {
    candidates.apply_sampler(chain);
    candidates.selected_token().or_else(|| best(&candidates))
}

fn best(candidates: &LlamaTokenDataArray) -> Option<LlamaToken> {
    candidates
        .data
        .iter()
        .filter(|d| d.logit().is_finite())
        .max_by(|a, b| a.logit().total_cmp(&b.logit()))
        .map(LlamaTokenData::id)
}

pub fn allows(grammar: &mut LlamaSampler, token: LlamaToken) -> bool {
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 0.0, 0.0)], false);
    one.apply_sampler(grammar);
    one.data.first().is_some_and(|d| d.logit().is_finite())
}

/// The chosen token's log probability under the model's distribution and
/// the `top` most likely tokens', from the raw logits.
pub fn logprobs(model: &LlamaModel, logits: &[f32], token: LlamaToken, top: u32) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_norm = f64::from(max) + sum.ln();
    let prob = |id: i32| TokenProb {
        bytes: model.vocab().token_to_piece(LlamaToken(id), false, None),
        logprob: (f64::from(
            logits
                .get(id as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY),
        ) - log_norm) as f32,
    };
    let mut best: Vec<(f32, i32)> = Vec::with_capacity(top as usize + 1);
    if top > 0 {
        for (id, &logit) in logits.iter().enumerate() {
            if best.len() < top as usize || logit > best[best.len() - 1].0 {
                let at = best.partition_point(|(l, _)| *l >= logit);
                best.insert(at, (logit, id as i32));
                best.truncate(top as usize);
            }
        }
    }
    TokenLogprob {
        token: prob(token.0),
        top: best.into_iter().map(|(_, id)| prob(id)).collect(),
    }
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
