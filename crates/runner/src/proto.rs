//! The runner protocol's messages, and their conversion to and from engine
//! types: the one place the two meet.
//!
//! Engine types stay free of serde; these mirror them field for field. Both
//! ends are always the same `shelf` binary, so the protocol carries no
//! version negotiation, but every frame is still parsed as untrusted input.

use serde::{Deserialize, Serialize};
use shelf_engine as engine;

/// Server to runner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToRunner {
    Tokenize {
        id: u64,
        text: String,
    },
    Submit {
        id: u64,
        request: Request,
    },
    Embed {
        id: u64,
        inputs: Vec<Vec<i32>>,
    },
    Cancel {
        id: u64,
    },
    Ping {
        id: u64,
    },
    /// Finish nothing more; exit.
    Shutdown,
}

/// Runner to server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromRunner {
    /// First frame: proves the runner is the process the server started.
    Hello {
        token: String,
    },
    Ready {
        info: Info,
    },
    LoadFailed {
        error: Error,
    },
    Tokens {
        id: u64,
        result: Result<Vec<i32>, Error>,
    },
    Embeddings {
        id: u64,
        result: Result<Vec<Vec<f32>>, Error>,
    },
    /// Every event produced since the last frame, in order.
    Events {
        events: Vec<(u64, Event)>,
    },
    Pong {
        id: u64,
        stats: Stats,
    },
}

/// What a runner reports about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Generations submitted and not yet ended.
    pub running: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub prompt: Vec<i32>,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: u32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub seed: Option<u32>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub cache_prompt: bool,
    #[serde(default)]
    pub background: bool,
    #[serde(default)]
    pub grammar: Option<String>,
    #[serde(default)]
    pub grammar_triggers: Option<Vec<String>>,
    #[serde(default)]
    pub logprobs: Option<u32>,
    #[serde(default)]
    pub prompt_logprobs: bool,
    #[serde(default)]
    pub speculative: Speculative,
    #[serde(default)]
    pub prediction: Vec<i32>,
}

/// A request's overrides of its model's speculative decoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Speculative {
    #[serde(default)]
    pub max_draft: Option<u32>,
    #[serde(default)]
    pub ngram: Option<bool>,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub exact: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Text {
        text: String,
    },
    Logprob {
        bytes: Vec<u8>,
        logprob: f32,
        top: Vec<(Vec<u8>, f32)>,
    },
    PromptLogprobs {
        /// Bytes, log probability (null: NaN), and the top alternatives.
        scores: Vec<PromptScore>,
    },
    Done {
        completion: Completion,
    },
    Failed {
        error: Error,
    },
}

/// A prompt token's bytes, log probability (none for the first) and top alternatives.
pub type PromptScore = (Vec<u8>, Option<f32>, Vec<(Vec<u8>, f32)>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub finish_reason: String,
    #[serde(default)]
    pub stop_index: Option<u8>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_tokens: u32,
    #[serde(default)]
    pub drafted_tokens: u32,
    #[serde(default)]
    pub accepted_tokens: u32,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub decoded_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Error {
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub numbers: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    pub architecture: String,
    pub n_params: u64,
    pub size_bytes: u64,
    pub n_ctx: u32,
    pub slots: u32,
    pub n_vocab: u32,
    pub n_ctx_train: u32,
    pub gpu_layers: u32,
    pub threads: u32,
    pub chat_template: Option<String>,
    pub bos_token: String,
    pub eos_token: String,
    #[serde(default)]
    pub embedding: bool,
    #[serde(default)]
    pub n_embd: u32,
}

impl From<&engine::GenerateRequest> for Request {
    fn from(r: &engine::GenerateRequest) -> Self {
        let s = &r.sampling;
        Self {
            prompt: r.prompt.iter().map(|t| t.0).collect(),
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            min_p: s.min_p,
            repeat_penalty: s.repeat_penalty,
            repeat_last_n: s.repeat_last_n,
            frequency_penalty: s.frequency_penalty,
            presence_penalty: s.presence_penalty,
            seed: s.seed,
            max_tokens: r.max_tokens,
            stop: r.stop.clone(),
            ignore_eos: r.ignore_eos,
            cache_prompt: r.cache_prompt,
            background: r.background,
            grammar: r.grammar.as_ref().map(|g| g.gbnf.clone()),
            grammar_triggers: r.grammar.as_ref().and_then(|g| g.triggers.clone()),
            logprobs: r.logprobs,
            prompt_logprobs: r.prompt_logprobs,
            speculative: Speculative {
                max_draft: r.speculative.max_draft,
                ngram: r.speculative.ngram,
                draft: r.speculative.draft,
                exact: r.speculative.exact,
            },
            prediction: r.prediction.iter().map(|t| t.0).collect(),
        }
    }
}

impl From<Request> for engine::GenerateRequest {
    fn from(r: Request) -> Self {
        let mut request =
            engine::GenerateRequest::new(r.prompt.into_iter().map(engine::Token).collect());
        request.sampling = engine::SamplingParams {
            temperature: r.temperature,
            top_p: r.top_p,
            top_k: r.top_k,
            min_p: r.min_p,
            repeat_penalty: r.repeat_penalty,
            repeat_last_n: r.repeat_last_n,
            frequency_penalty: r.frequency_penalty,
            presence_penalty: r.presence_penalty,
            seed: r.seed,
        };
        request.max_tokens = r.max_tokens;
        request.stop = r.stop;
        request.ignore_eos = r.ignore_eos;
        request.cache_prompt = r.cache_prompt;
        request.background = r.background;
        request.grammar = r.grammar.map(|gbnf| engine::Grammar {
            gbnf,
            triggers: r.grammar_triggers,
        });
        request.logprobs = r.logprobs;
        request.prompt_logprobs = r.prompt_logprobs;
        request.speculative = engine::SpeculativeRequest {
            max_draft: r.speculative.max_draft,
            ngram: r.speculative.ngram,
            draft: r.speculative.draft,
            exact: r.speculative.exact,
        };
        request.prediction = r.prediction.into_iter().map(engine::Token).collect();
        request
    }
}

impl From<&engine::Event> for Event {
    fn from(event: &engine::Event) -> Self {
        match event {
            engine::Event::Text(text) => Self::Text { text: text.clone() },
            engine::Event::PromptLogprobs(scores) => Self::PromptLogprobs {
                scores: scores
                    .iter()
                    .map(|l| {
                        let logprob = (!l.token.logprob.is_nan()).then(|| finite(l.token.logprob));
                        let top = l
                            .top
                            .iter()
                            .map(|t| (t.bytes.clone(), finite(t.logprob)))
                            .collect();
                        (l.token.bytes.clone(), logprob, top)
                    })
                    .collect(),
            },
            engine::Event::Logprob(l) => Self::Logprob {
                bytes: l.token.bytes.clone(),
                logprob: finite(l.token.logprob),
                top: l
                    .top
                    .iter()
                    .map(|t| (t.bytes.clone(), finite(t.logprob)))
                    .collect(),
            },
            engine::Event::Done(c) => Self::Done {
                completion: Completion {
                    finish_reason: match c.finish_reason {
                        engine::FinishReason::Stop => "stop",
                        engine::FinishReason::Length => "length",
                        engine::FinishReason::Cancelled => "cancelled",
                    }
                    .into(),
                    stop_index: c.stop_index,
                    prompt_tokens: c.usage.prompt_tokens,
                    completion_tokens: c.usage.completion_tokens,
                    cached_tokens: c.usage.cached_tokens,
                    drafted_tokens: c.usage.drafted_tokens,
                    accepted_tokens: c.usage.accepted_tokens,
                    prefill_ms: c.timings.prefill_ms,
                    decode_ms: c.timings.decode_ms,
                    decoded_tokens: c.timings.decoded_tokens,
                },
            },
            engine::Event::Failed(error) => Self::Failed {
                error: error.into(),
            },
        }
    }
}

impl From<Event> for engine::Event {
    fn from(event: Event) -> Self {
        match event {
            Event::Text { text } => Self::Text(text),
            Event::PromptLogprobs { scores } => Self::PromptLogprobs(
                scores
                    .into_iter()
                    .map(|(bytes, logprob, top)| engine::TokenLogprob {
                        token: engine::TokenProb {
                            bytes,
                            logprob: logprob.unwrap_or(f32::NAN),
                        },
                        top: top
                            .into_iter()
                            .map(|(bytes, logprob)| engine::TokenProb { bytes, logprob })
                            .collect(),
                    })
                    .collect(),
            ),
            Event::Logprob {
                bytes,
                logprob,
                top,
            } => Self::Logprob(engine::TokenLogprob {
                token: engine::TokenProb { bytes, logprob },
                top: top
                    .into_iter()
                    .map(|(bytes, logprob)| engine::TokenProb { bytes, logprob })
                    .collect(),
            }),
            Event::Done { completion: c } => Self::Done(engine::Completion {
                finish_reason: match c.finish_reason.as_str() {
                    "length" => engine::FinishReason::Length,
                    "cancelled" => engine::FinishReason::Cancelled,
                    _ => engine::FinishReason::Stop,
                },
                stop_index: c.stop_index,
                usage: engine::Usage {
                    prompt_tokens: c.prompt_tokens,
                    completion_tokens: c.completion_tokens,
                    cached_tokens: c.cached_tokens,
                    drafted_tokens: c.drafted_tokens,
                    accepted_tokens: c.accepted_tokens,
                },
                timings: engine::Timings {
                    prefill_ms: c.prefill_ms,
                    decode_ms: c.decode_ms,
                    decoded_tokens: c.decoded_tokens,
                },
            }),
            Event::Failed { error } => Self::Failed(error.into()),
        }
    }
}

/// A log probability JSON can carry: JSON has no infinities or NaN (they
/// would arrive as `null` and fail the frame), and -9999 is as good as
/// impossible.
fn finite(logprob: f32) -> f32 {
    if logprob.is_finite() {
        logprob
    } else {
        -9999.0
    }
}

/// Embeddings JSON can carry: a NaN or infinite component becomes 0.
pub fn finite_vectors(mut vectors: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    for value in vectors.iter_mut().flatten() {
        if !value.is_finite() {
            *value = 0.0;
        }
    }
    vectors
}

/// Parameter names the engine validates, so an error naming one keeps its
/// `&'static str` across the process boundary.
const PARAMS: [&str; 11] = [
    "top_logprobs",
    "speculative.max_draft",
    "prompt",
    "temperature",
    "top_p",
    "min_p",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "max_tokens",
    "top_k",
];

impl From<&engine::EngineError> for Error {
    fn from(error: &engine::EngineError) -> Self {
        use engine::EngineError as E;
        let (kind, param, numbers) = match error {
            E::Load { path, .. } => ("load", Some(path.display().to_string()), vec![]),
            E::PromptTooLong {
                prompt_tokens,
                n_ctx,
            } => (
                "prompt_too_long",
                None,
                vec![*prompt_tokens as u64, u64::from(*n_ctx)],
            ),
            E::EmptyPrompt => ("empty_prompt", None, vec![]),
            E::InvalidParam { param, .. } => ("invalid_param", Some((*param).to_string()), vec![]),
            E::Template(_) => ("template", None, vec![]),
            E::Unavailable => ("unavailable", None, vec![]),
            E::Crashed(_) => ("crashed", None, vec![]),
            E::Unsupported(_) => ("unsupported", None, vec![]),
            _ => ("decode", None, vec![]),
        };
        Self {
            kind: kind.into(),
            message: detail(error),
            param,
            numbers,
        }
    }
}

/// The variable part of an error's message (its `Display` adds the rest).
fn detail(error: &engine::EngineError) -> String {
    use engine::EngineError as E;
    match error {
        E::Load { reason, .. } | E::InvalidParam { reason, .. } => reason.clone(),
        E::Template(text) | E::Decode(text) | E::Crashed(text) | E::Unsupported(text) => {
            text.clone()
        }
        other => other.to_string(),
    }
}

impl From<Error> for engine::EngineError {
    fn from(error: Error) -> Self {
        use engine::EngineError as E;
        let number = |i: usize| error.numbers.get(i).copied().unwrap_or(0);
        match error.kind.as_str() {
            "load" => E::Load {
                path: error.param.unwrap_or_default().into(),
                reason: error.message,
            },
            "prompt_too_long" => E::PromptTooLong {
                prompt_tokens: usize::try_from(number(0)).unwrap_or(usize::MAX),
                n_ctx: u32::try_from(number(1)).unwrap_or(u32::MAX),
            },
            "empty_prompt" => E::EmptyPrompt,
            "invalid_param" => E::InvalidParam {
                param: PARAMS
                    .iter()
                    .find(|p| Some(**p) == error.param.as_deref())
                    .copied()
                    .unwrap_or("parameter"),
                reason: error.message,
            },
            "template" => E::Template(error.message),
            "unavailable" => E::Unavailable,
            "crashed" => E::Crashed(error.message),
            "unsupported" => E::Unsupported(error.message),
            _ => E::Decode(error.message),
        }
    }
}

impl From<&engine::ModelInfo> for Info {
    fn from(i: &engine::ModelInfo) -> Self {
        Self {
            architecture: i.architecture.clone(),
            n_params: i.n_params,
            size_bytes: i.size_bytes,
            n_ctx: i.n_ctx,
            slots: i.slots,
            n_vocab: i.n_vocab,
            n_ctx_train: i.n_ctx_train,
            gpu_layers: i.gpu_layers,
            threads: i.threads,
            chat_template: i.chat_template.clone(),
            bos_token: i.bos_token.clone(),
            eos_token: i.eos_token.clone(),
            embedding: i.embedding,
            n_embd: i.n_embd,
        }
    }
}

impl From<Info> for engine::ModelInfo {
    fn from(i: Info) -> Self {
        Self {
            architecture: i.architecture,
            n_params: i.n_params,
            size_bytes: i.size_bytes,
            n_ctx: i.n_ctx,
            slots: i.slots,
            n_vocab: i.n_vocab,
            n_ctx_train: i.n_ctx_train,
            gpu_layers: i.gpu_layers,
            threads: i.threads,
            chat_template: i.chat_template,
            bos_token: i.bos_token,
            eos_token: i.eos_token,
            embedding: i.embedding,
            n_embd: i.n_embd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::EngineError as E;

    #[test]
    fn errors_survive_the_round_trip() {
        let errors = [
            E::Load {
                path: "/m/x.gguf".into(),
                reason: "not a GGUF".into(),
            },
            E::PromptTooLong {
                prompt_tokens: 900,
                n_ctx: 512,
            },
            E::EmptyPrompt,
            E::InvalidParam {
                param: "top_p",
                reason: "must be greater than 0 and at most 1".into(),
            },
            E::Template("bad".into()),
            E::Unavailable,
            E::Decode("NoKvCacheSlot".into()),
            E::Crashed("killed by signal 9".into()),
        ];
        for error in errors {
            let wire = Error::from(&error);
            let json = serde_json::to_string(&wire).unwrap();
            let back: Error = serde_json::from_str(&json).unwrap();
            assert_eq!(E::from(back), error);
        }
    }

    #[test]
    fn requests_and_events_survive_the_round_trip() {
        let mut request = engine::GenerateRequest::new(vec![engine::Token(1), engine::Token(7)]);
        request.max_tokens = Some(9);
        request.stop = vec!["\n\n".into()];
        request.cache_prompt = false;
        request.sampling.seed = Some(3);
        request.speculative.max_draft = Some(4);
        request.speculative.ngram = Some(true);
        request.speculative.exact = Some(false);
        request.prediction = vec![engine::Token(5), engine::Token(6)];
        let back = engine::GenerateRequest::from(Request::from(&request));
        assert_eq!(back, request);

        let done = engine::Event::Done(engine::Completion {
            finish_reason: engine::FinishReason::Length,
            stop_index: Some(2),
            usage: engine::Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                cached_tokens: 4,
                drafted_tokens: 6,
                accepted_tokens: 3,
            },
            timings: engine::Timings {
                prefill_ms: 1.5,
                decode_ms: 2.5,
                decoded_tokens: 1,
            },
        });
        assert_eq!(engine::Event::from(Event::from(&done)), done);
    }
}
