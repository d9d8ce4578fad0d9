//! What callers ask of the engine: how to load a model and what to generate.

use std::path::PathBuf;
use std::time::Duration;

use crate::{EngineError, Token};

/// How many layers go to the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuLayers {
    /// Every layer when a GPU backend is compiled in, none otherwise.
    #[default]
    Auto,
    /// Exactly this many (clamped to the model's layer count by llama.cpp).
    Count(u32),
}

/// How to load a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// Decode threads; `None` means one per available CPU.
    pub threads: Option<u32>,
    /// Context window of each slot in tokens; `None` means the model's
    /// trained length, capped at [`LoadConfig::DEFAULT_MAX_CTX`] to keep KV
    /// memory modest.
    pub ctx: Option<u32>,
    /// Layers to offload to a GPU.
    pub gpu_layers: GpuLayers,
    /// Most tokens decoded in one llama.cpp batch.
    pub batch: u32,
    /// Sequences generated at once (slots), each with its own `ctx` of KV.
    pub slots: u32,
    /// Bytes of RAM for slot states pushed out of the KV cache, restored
    /// when a later prompt shares their prefix; 0 turns it off.
    pub cache_ram_bytes: u64,
    /// Sliding-window layers keep only their window's KV (plus a batch),
    /// not the whole context: less memory, but a cached prefix is reused
    /// only while the window before its end is still held.
    pub small_window_cache: bool,
    /// While slots are generating, prompt chunks are sized so one decode
    /// step takes about this long, so a long new prompt never stalls the
    /// running streams for more than this.
    pub step_target: Duration,
    /// Speculative decoding: a draft model, n-gram lookup, or neither.
    pub speculative: SpeculativeConfig,
}

/// How a model speculates: which drafts it may verify, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeculativeConfig {
    /// A small model with the target's vocabulary, loaded beside it, that
    /// drafts tokens for the target to verify.
    pub draft: Option<PathBuf>,
    /// Draft by prompt lookup: continue a repeat of the text's last few
    /// tokens as it went on before (in the prompt or the answer so far).
    pub ngram: bool,
    /// Most tokens drafted in one step.
    pub max_draft: u32,
    /// Choose each step's draft length from measured acceptance and cost,
    /// and rest while speculating would be slower than plain decode;
    /// `false` always drafts `max_draft` (benchmarks, tests).
    pub adaptive: bool,
    /// At temperature 0, answers equal plain decode's token for token:
    /// verification batches stay within the rows the backend computes
    /// exactly as it computes one (measured at load), and speculate only
    /// when a request has the batch to itself. `false` verifies any
    /// number of tokens at once: faster, but a near tie may go the other
    /// way than plain decode's.
    pub exact: bool,
}

impl SpeculativeConfig {
    /// The longest draft allowed.
    pub const MAX_DRAFT: u32 = 64;

    /// Whether any speculation is configured.
    pub fn enabled(&self) -> bool {
        self.draft.is_some() || self.ngram
    }
}

impl Default for SpeculativeConfig {
    fn default() -> Self {
        Self {
            draft: None,
            ngram: false,
            max_draft: 32,
            adaptive: true,
            exact: true,
        }
    }
}

impl LoadConfig {
    /// The context window used when none is asked for and the model allows it.
    pub const DEFAULT_MAX_CTX: u32 = 4096;
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            threads: None,
            ctx: None,
            gpu_layers: GpuLayers::Auto,
            batch: 512,
            slots: 1,
            cache_ram_bytes: 0,
            small_window_cache: false,
            step_target: Duration::from_millis(100),
            speculative: SpeculativeConfig::default(),
        }
    }
}

/// Sampling settings, applied inside llama.cpp's sampler chain.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (deterministic) decoding.
    pub temperature: f32,
    /// Nucleus sampling threshold in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Keep the k most likely tokens; 0 disables it.
    pub top_k: u32,
    /// Drop tokens below `min_p` × the top probability; 0 disables it.
    pub min_p: f32,
    /// Multiplicative penalty on recently seen tokens; 1 disables it.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: u32,
    /// OpenAI's frequency penalty in [-2, 2].
    pub frequency_penalty: f32,
    /// OpenAI's presence penalty in [-2, 2].
    pub presence_penalty: f32,
    /// Seed for the random sampler; `None` draws one.
    pub seed: Option<u32>,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Whether this samples greedily, and so deterministically.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Check every value is in range, naming the first that is not.
    pub fn validate(&self) -> Result<(), EngineError> {
        let check = |ok: bool, param: &'static str, reason: &str| {
            if ok {
                Ok(())
            } else {
                Err(EngineError::InvalidParam {
                    param,
                    reason: reason.to_string(),
                })
            }
        };
        check(
            self.temperature.is_finite() && (0.0..=100.0).contains(&self.temperature),
            "temperature",
            "must be between 0 and 100",
        )?;
        check(
            self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0,
            "top_p",
            "must be greater than 0 and at most 1",
        )?;
        check(
            self.min_p.is_finite() && (0.0..=1.0).contains(&self.min_p),
            "min_p",
            "must be between 0 and 1",
        )?;
        check(
            self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0,
            "repeat_penalty",
            "must be greater than 0",
        )?;
        check(
            self.frequency_penalty.is_finite() && (-2.0..=2.0).contains(&self.frequency_penalty),
            "frequency_penalty",
            "must be between -2 and 2",
        )?;
        check(
            self.presence_penalty.is_finite() && (-2.0..=2.0).contains(&self.presence_penalty),
            "presence_penalty",
            "must be between -2 and 2",
        )
    }
}

/// One generation: a tokenized prompt and how to continue it.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The prompt, already templated and tokenized.
    pub prompt: Vec<Token>,
    /// How to pick each next token.
    pub sampling: SamplingParams,
    /// Stop after this many generated tokens; `None` runs to the end of the context.
    pub max_tokens: Option<u32>,
    /// Stop when the output contains any of these; the match is not emitted.
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Reuse a cached prefix of the prompt's KV; `false` computes every token.
    pub cache_prompt: bool,
    /// Hold the output to a grammar (JSON output, tool calls).
    pub grammar: Option<Grammar>,
    /// Report each generated token's log probability and this many of the
    /// most likely alternatives (0: the token's own only); `None`: none.
    pub logprobs: Option<u32>,
    /// Also report the log probability of every prompt token after the
    /// first (`echo` with `logprobs`); the whole prompt is then computed,
    /// never taken from the cache.
    pub prompt_logprobs: bool,
    /// This request's say on speculative decoding.
    pub speculative: SpeculativeRequest,
    /// Text the answer is expected to repeat (OpenAI's predicted outputs):
    /// prompt lookup searches it as well as the prompt and the answer.
    pub prediction: Vec<Token>,
    /// Background work (the assistant's digests): it steps only while no
    /// other request of the model is in a slot, and its prompt goes in
    /// chunks of about one step target, so a request that arrives waits at
    /// most one short step for it.
    pub background: bool,
}

/// A request's overrides of its model's speculative decoding; `None`
/// fields keep the model's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpeculativeRequest {
    /// Most tokens drafted per step; 0 turns speculation off.
    pub max_draft: Option<u32>,
    /// Draft by n-gram lookup (free, so a request may turn it on).
    pub ngram: Option<bool>,
    /// Draft with the model's draft model, if it has one.
    pub draft: Option<bool>,
    /// Keep answers at temperature 0 equal to plain decode's.
    pub exact: Option<bool>,
}

/// A GBNF grammar the output must follow, from its `root` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    pub gbnf: String,
    /// `None`: the whole output follows the grammar. `Some`: output is free
    /// until one of these regular expressions (ECMAScript, as llama.cpp's
    /// `std::regex`) is found in the text so far; from the start of the
    /// pattern's first group on, that text and all after it must follow the
    /// grammar. `^…$` patterns must match the whole text instead.
    pub triggers: Option<Vec<String>>,
}

/// Most alternatives a token's log probabilities may list, as OpenAI allows.
pub const MAX_TOP_LOGPROBS: u32 = 20;

impl GenerateRequest {
    /// A request with default sampling and no limits.
    pub fn new(prompt: Vec<Token>) -> Self {
        Self {
            prompt,
            sampling: SamplingParams::default(),
            max_tokens: None,
            stop: Vec::new(),
            ignore_eos: false,
            cache_prompt: true,
            grammar: None,
            logprobs: None,
            prompt_logprobs: false,
            speculative: SpeculativeRequest::default(),
            prediction: Vec::new(),
            background: false,
        }
    }

    /// Checks that hold whatever the model: a non-empty prompt and valid sampling.
    pub fn validate(&self, n_ctx: u32) -> Result<(), EngineError> {
        if self.prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if self.max_tokens == Some(0) {
            return Err(EngineError::InvalidParam {
                param: "max_tokens",
                reason: "must be at least 1".into(),
            });
        }
        if self.logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            return Err(EngineError::InvalidParam {
                param: "top_logprobs",
                reason: format!("must be at most {MAX_TOP_LOGPROBS}"),
            });
        }
        if self
            .speculative
            .max_draft
            .is_some_and(|n| n > SpeculativeConfig::MAX_DRAFT)
        {
            return Err(EngineError::InvalidParam {
                param: "speculative.max_draft",
                reason: format!("must be at most {}", SpeculativeConfig::MAX_DRAFT),
            });
        }
        // One slot of the window must stay free for the first generated token.
        if self.prompt.len() >= n_ctx as usize {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: self.prompt.len(),
                n_ctx,
            });
        }
        self.sampling.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(SamplingParams::default().validate(), Ok(()));
        assert_eq!(SamplingParams::greedy().validate(), Ok(()));
    }

    #[test]
    fn out_of_range_values_name_their_param() {
        let cases: [(SamplingParams, &str); 5] = [
            (
                SamplingParams {
                    temperature: -1.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    min_p: 1.5,
                    ..Default::default()
                },
                "min_p",
            ),
            (
                SamplingParams {
                    presence_penalty: 3.0,
                    ..Default::default()
                },
                "presence_penalty",
            ),
        ];
        for (params, expected) in cases {
            match params.validate() {
                Err(EngineError::InvalidParam { param, .. }) => assert_eq!(param, expected),
                other => panic!("{params:?}: expected an error about {expected}, got {other:?}"),
            }
        }
    }

    #[test]
    fn prompt_must_leave_room_in_the_window() {
        let request = GenerateRequest::new(vec![Token(1); 8]);
        assert_eq!(request.validate(9), Ok(()));
        assert_eq!(
            request.validate(8),
            Err(EngineError::PromptTooLong {
                prompt_tokens: 8,
                n_ctx: 8
            })
        );
        assert_eq!(
            GenerateRequest::new(vec![]).validate(8),
            Err(EngineError::EmptyPrompt)
        );
    }
}
