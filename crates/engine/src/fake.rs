//! A deterministic stand-in for a real model, for testing the layers above
//! the engine (server, scheduler) without loading weights.
//!
//! Each character of text is one token. Generation replies with a fixed text,
//! one character per token, on its own thread, honouring `max_tokens`, stop
//! strings and cancellation the way the real engine does.

use std::sync::mpsc;
use std::thread;

use crate::{
    Completion, EngineError, Event, FinishReason, GenerateRequest, Generation, GenerationSink,
    LoadedModel, ModelInfo, StopMatcher, StopOutcome, Timings, Token, Usage,
};

/// A fake model that always answers with the same text.
pub struct FakeModel {
    info: ModelInfo,
    jobs: mpsc::Sender<(GenerateRequest, GenerationSink)>,
}

impl FakeModel {
    /// A fake with a context window of `n_ctx` tokens that replies `reply`.
    pub fn new(reply: &str, n_ctx: u32) -> Self {
        let (jobs, queue) = mpsc::channel::<(GenerateRequest, GenerationSink)>();
        let reply: Vec<char> = reply.chars().collect();
        thread::spawn(move || {
            for (request, sink) in queue {
                run(&reply, &request, &sink);
            }
        });
        Self {
            info: ModelInfo {
                architecture: "fake".into(),
                n_params: 0,
                size_bytes: 0,
                n_ctx,
                n_ctx_train: n_ctx,
                n_vocab: 0x11_0000,
                gpu_layers: 0,
                threads: 1,
                chat_template: None,
                bos_token: String::new(),
                eos_token: String::new(),
            },
            jobs,
        }
    }
}

fn run(reply: &[char], request: &GenerateRequest, sink: &GenerationSink) {
    let mut stops = StopMatcher::new(&request.stop);
    let limit = request.max_tokens.map_or(usize::MAX, |n| n as usize);
    let mut produced = 0u32;
    let mut finish = FinishReason::Stop;
    let mut matched_stop = false;
    for (i, c) in reply.iter().enumerate() {
        if sink.is_cancelled() {
            finish = FinishReason::Cancelled;
            break;
        }
        if i >= limit {
            finish = FinishReason::Length;
            break;
        }
        produced += 1;
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
    sink.send(Event::Done(Completion {
        finish_reason: finish,
        usage: Usage {
            prompt_tokens: request.prompt.len() as u32,
            completion_tokens: produced,
        },
        timings: Timings::default(),
    }));
}

impl LoadedModel for FakeModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &str) -> Result<Vec<Token>, EngineError> {
        Ok(text.chars().map(|c| Token(c as i32)).collect())
    }

    fn submit(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        request.validate(self.info.n_ctx)?;
        let (generation, sink) = Generation::channel();
        self.jobs
            .send((request, sink))
            .map_err(|_| EngineError::Unavailable)?;
        Ok(generation)
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
        assert_eq!(
            completion.usage,
            Usage {
                prompt_tokens: 3,
                completion_tokens: 11
            }
        );
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
    fn too_long_prompt_is_refused() {
        let model = FakeModel::new("x", 4);
        assert!(matches!(
            model.submit(GenerateRequest::new(vec![Token(1); 4])),
            Err(EngineError::PromptTooLong { .. })
        ));
    }
}
