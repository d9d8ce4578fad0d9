//! A deterministic stand-in for a real model, for testing the layers above
//! the engine (server, scheduler, runner protocol) without loading weights.
//!
//! Each character of text is one token. Generation replies with a fixed text,
//! one character per token, each on its own thread (so several run at once,
//! as a model's slots do), honouring `max_tokens`, stop strings and
//! cancellation the way the real engine does. A request's prediction is
//! "drafted": its usage counts the prediction's characters as drafted and
//! those agreeing with the reply's start as accepted. A [`Gate`] holds generations
//! before their first token until a test opens it, and [`FakeModel::crash`]
//! ends the model the way a dead runner process does. [`Chain`] makes a
//! fake that samples from known distributions instead, speculating as the
//! real engine does, so tests can check what speculation keeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;

use tokio::sync::watch;

mod chain;

pub use chain::Chain;

use crate::{
    Completion, Ended, EngineError, Event, FinishReason, GenerateRequest, GenerationSink,
    LoadedModel, ModelInfo, StopMatcher, StopOutcome, Timings, Token, TokenLogprob, TokenProb,
    Unloaded, Usage,
};

/// A fake model that always answers with the same text.
pub struct FakeModel {
    info: ModelInfo,
    reply: Arc<Vec<char>>,
    /// Sample from these chains instead of replying `reply`.
    chains: Option<Arc<chain::Chains>>,
    gate: Option<Gate>,
    /// Held closed, an unload does not finish (a runner slow to exit).
    unload_gate: Option<Gate>,
    state: Arc<Shared>,
}

/// What the fake shares with its generation threads and with tests.
struct Shared {
    /// `Some(how)` once crashed.
    crashed: watch::Sender<Option<String>>,
    running: AtomicUsize,
    unloaded: AtomicUsize,
}

/// Holds generations before their first token while closed.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// A closed gate.
    pub fn closed() -> Self {
        Self::default()
    }

    /// Let every held generation, and every later one, go.
    pub fn open(&self) {
        let (open, wake) = &*self.0;
        *open.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
    }

    fn is_open(&self) -> bool {
        *self.0 .0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait(&self) {
        let (open, wake) = &*self.0;
        let mut guard = open.lock().unwrap_or_else(PoisonError::into_inner);
        while !*guard {
            guard = wake.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl FakeModel {
    /// A fake with a context window of `n_ctx` tokens that replies `reply`.
    pub fn new(reply: &str, n_ctx: u32) -> Self {
        Self {
            info: ModelInfo {
                architecture: "fake".into(),
                n_params: 0,
                size_bytes: 0,
                n_ctx,
                slots: 1,
                n_ctx_train: n_ctx,
                n_vocab: 0x11_0000,
                gpu_layers: 0,
                threads: 1,
                chat_template: None,
                bos_token: String::new(),
                eos_token: String::new(),
                embedding: false,
                n_embd: 8,
            },
            reply: Arc::new(reply.chars().collect()),
            chains: None,
            gate: None,
            unload_gate: None,
            state: Arc::new(Shared {
                crashed: watch::channel(None).0,
                running: AtomicUsize::new(0),
                unloaded: AtomicUsize::new(0),
            }),
        }
    }

    /// Render chats with this Jinja template.
    pub fn with_chat_template(mut self, source: &str) -> Self {
        self.info.chat_template = Some(source.to_string());
        self
    }

    /// An embedding model making `n_embd`-wide vectors: each input's vector
    /// is its token histogram folded into `n_embd` buckets, normalised.
    pub fn embedding(n_embd: u32, n_ctx: u32) -> Self {
        let mut model = Self::new("", n_ctx);
        model.info.embedding = true;
        model.info.n_embd = n_embd;
        model
    }

    /// A fake that samples each token from `target` (a Markov chain over
    /// the letters `a`, `b`, …) and, unless a request turns speculation
    /// off, drafts `draft_tokens` at a time from `draft` and keeps or
    /// replaces each by speculative sampling.
    pub fn sampling(target: Chain, draft: Chain, draft_tokens: usize, n_ctx: u32) -> Self {
        let mut model = Self::new("", n_ctx);
        model.chains = Some(Arc::new(chain::Chains {
            target,
            draft,
            draft_tokens,
        }));
        model
    }

    /// Report `slots` slots.
    pub fn with_slots(mut self, slots: u32) -> Self {
        self.info.slots = slots;
        self
    }

    /// Hold every generation before its first token until `gate` opens.
    pub fn with_gate(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.clone());
        self
    }

    /// Unloading does not finish until `gate` opens.
    pub fn with_unload_gate(mut self, gate: &Gate) -> Self {
        self.unload_gate = Some(gate.clone());
        self
    }

    /// A handle for tests to crash the model or see it unloaded.
    pub fn control(&self) -> FakeControl {
        FakeControl(Arc::clone(&self.state))
    }
}

/// A test's hold on a [`FakeModel`] it has handed away.
#[derive(Clone)]
pub struct FakeControl(Arc<Shared>);

impl FakeControl {
    /// End the model as a dead runner would: running generations fail with
    /// [`EngineError::Crashed`] and [`LoadedModel::ended`] resolves.
    pub fn crash(&self, how: &str) {
        self.0.crashed.send_replace(Some(how.to_string()));
    }

    /// Generations running now.
    pub fn running(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    /// How many times the model was unloaded.
    pub fn unloads(&self) -> usize {
        self.0.unloaded.load(Ordering::SeqCst)
    }
}

fn run(reply: &[char], request: &GenerateRequest, sink: &GenerationSink, state: &Shared) {
    let crashed = || state.crashed.borrow().clone();
    let mut stops = StopMatcher::new(&request.stop);
    let limit = request.max_tokens.map_or(usize::MAX, |n| n as usize);
    let mut produced = 0u32;
    let mut finish = FinishReason::Stop;
    let mut matched_stop = false;
    for (i, c) in reply.iter().enumerate() {
        if let Some(how) = crashed() {
            sink.send(Event::Failed(EngineError::Crashed(how)));
            return;
        }
        if sink.is_cancelled() {
            finish = FinishReason::Cancelled;
            break;
        }
        if i >= limit {
            finish = FinishReason::Length;
            break;
        }
        produced += 1;
        if let Some(n) = request.logprobs {
            let token = TokenProb {
                bytes: c.to_string().into_bytes(),
                logprob: -0.25,
            };
            let top = vec![token.clone(); n as usize];
            sink.send(Event::Logprob(TokenLogprob { token, top }));
        }
        match stops.push(&c.to_string()) {
            StopOutcome::Continue(text) => {
                if !text.is_empty() && !sink.send(Event::Text(text)) {
                    return;
                }
            }
            StopOutcome::Stop(text) => {
                matched_stop = true;
                if !text.is_empty() {
                    sink.send(Event::Text(text));
                }
                break;
            }
        }
    }
    let rest = stops.finish();
    // Text held back as a possible stop-string start is real output unless a stop matched.
    if !rest.is_empty() && !matched_stop {
        sink.send(Event::Text(rest));
    }
    let (drafted_tokens, accepted_tokens) = drafted(request, &reply[..produced as usize]);
    sink.send(Event::Done(Completion {
        finish_reason: finish,
        stop_index: crate::stop::stop_index(&request.stop, stops.matched()),
        usage: Usage {
            prompt_tokens: request.prompt.len() as u32,
            completion_tokens: produced,
            drafted_tokens,
            accepted_tokens,
            ..Usage::default()
        },
        timings: Timings::default(),
    }));
}

/// What the fake counts as drafted and accepted: the prediction against
/// the reply, unless the request turned speculation off.
fn drafted(request: &GenerateRequest, reply: &[char]) -> (u32, u32) {
    if request.speculative.max_draft == Some(0) {
        return (0, 0);
    }
    let predicted: Vec<char> = request
        .prediction
        .iter()
        .filter_map(|t| char::from_u32(t.0 as u32))
        .collect();
    let accepted = predicted
        .iter()
        .zip(reply)
        .take_while(|(a, b)| a == b)
        .count();
    (predicted.len() as u32, accepted as u32)
}

impl LoadedModel for FakeModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str) -> Result<Vec<Token>, EngineError> {
        Ok(text.chars().map(|c| Token(c as i32)).collect())
    }

    fn submit_to(&self, request: GenerateRequest, sink: GenerationSink) -> Result<(), EngineError> {
        if let Some(how) = self.state.crashed.borrow().clone() {
            return Err(EngineError::Crashed(how));
        }
        if self.info.embedding {
            return Err(EngineError::Unsupported(
                "this is an embedding model: it does not generate text".into(),
            ));
        }
        request.validate(self.info.n_ctx)?;
        let reply = Arc::clone(&self.reply);
        let chains = self.chains.clone();
        let gate = self.gate.clone();
        let state = Arc::clone(&self.state);
        state.running.fetch_add(1, Ordering::SeqCst);
        thread::spawn(move || {
            if let Some(gate) = gate {
                gate.wait();
            }
            match chains {
                Some(chains) => chains.run(&request, &sink),
                None => run(&reply, &request, &sink, &state),
            }
            state.running.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(())
    }

    fn embed(&self, inputs: Vec<Vec<Token>>) -> Result<Vec<Vec<f32>>, EngineError> {
        if !self.info.embedding {
            return Err(EngineError::Unsupported(
                "this model does not make embeddings".into(),
            ));
        }
        let width = self.info.n_embd.max(1) as usize;
        Ok(inputs
            .iter()
            .map(|tokens| {
                let mut vector = vec![0f32; width];
                for token in tokens {
                    vector[token.0.unsigned_abs() as usize % width] += 1.0;
                }
                crate::normalize(&mut vector);
                vector
            })
            .collect())
    }

    fn ended(&self) -> Ended {
        crate::ended_when(self.state.crashed.subscribe())
    }

    fn unload(self: Arc<Self>) -> Unloaded {
        let gate = self.unload_gate.clone().filter(|g| !g.is_open());
        Box::pin(async move {
            if let Some(gate) = gate {
                let _ = tokio::task::spawn_blocking(move || gate.wait()).await;
            }
            self.state.unloaded.fetch_add(1, Ordering::SeqCst);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(request: GenerateRequest) -> (String, Completion) {
        let model = FakeModel::new("hello world", 64);
        let mut generation = model.submit(request).unwrap();
        let mut text = String::new();
        loop {
            match generation.blocking_next() {
                Some(Event::Text(t)) => text.push_str(&t),
                Some(Event::Done(c)) => return (text, c),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn replies_and_counts() {
        let (text, completion) = generate(GenerateRequest::new(vec![Token(1); 3]));
        assert_eq!(text, "hello world");
        assert_eq!(completion.finish_reason, FinishReason::Stop);
        assert_eq!(completion.usage.prompt_tokens, 3);
        assert_eq!(completion.usage.completion_tokens, 11);
    }

    #[test]
    fn max_tokens_and_stops_apply() {
        let mut request = GenerateRequest::new(vec![Token(1)]);
        request.max_tokens = Some(4);
        let (text, completion) = generate(request.clone());
        assert_eq!(
            (text.as_str(), completion.finish_reason),
            ("hell", FinishReason::Length)
        );

        request.max_tokens = None;
        request.stop = vec![" w".into()];
        let (text, completion) = generate(request);
        assert_eq!(
            (text.as_str(), completion.finish_reason),
            ("hello", FinishReason::Stop)
        );
    }

    #[test]
    fn a_held_back_partial_stop_is_released_at_the_end() {
        let mut request = GenerateRequest::new(vec![Token(1)]);
        request.stop = vec!["ld!".into()];
        let (text, completion) = generate(request);
        assert_eq!(
            (text.as_str(), completion.finish_reason),
            ("hello world", FinishReason::Stop)
        );
    }

    #[test]
    fn too_long_prompt_and_zero_max_tokens_are_refused() {
        let model = FakeModel::new("x", 4);
        assert!(matches!(
            model.submit(GenerateRequest::new(vec![Token(1); 4])),
            Err(EngineError::PromptTooLong { .. })
        ));
        let mut request = GenerateRequest::new(vec![Token(1)]);
        request.max_tokens = Some(0);
        assert!(matches!(
            model.submit(request),
            Err(EngineError::InvalidParam {
                param: "max_tokens",
                ..
            })
        ));
    }

    #[test]
    fn a_gate_holds_generations_and_a_crash_fails_them() {
        let gate = Gate::closed();
        let model = FakeModel::new("abc", 64).with_gate(&gate);
        let control = model.control();
        let mut generation = model.submit(GenerateRequest::new(vec![Token(1)])).unwrap();
        assert_eq!(control.running(), 1);
        control.crash("killed by signal 9");
        gate.open();
        assert_eq!(
            generation.blocking_next(),
            Some(Event::Failed(EngineError::Crashed(
                "killed by signal 9".into()
            )))
        );
        assert!(matches!(
            model.submit(GenerateRequest::new(vec![Token(1)])),
            Err(EngineError::Crashed(_))
        ));
    }
}
