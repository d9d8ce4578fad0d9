//! A fake that samples from known distributions: Markov chains over the
//! letters `a`, `b`, …, one for the target and one for a draft. Asked to
//! speculate, it drafts from the draft chain and judges every drafted token
//! with [`speculate::judge`], the rule the real engine uses, so a test can
//! compare the output's distribution with the target's exactly.

use crate::speculate::{self, Judged, Uniform};
use crate::{Completion, Event, FinishReason, GenerateRequest, GenerationSink, Timings, Token};
use crate::{Usage, Utf8Decoder};

/// Transition probabilities: `rows[t]` is the next letter's distribution
/// after letter `t`.
#[derive(Debug, Clone)]
pub struct Chain {
    pub rows: Vec<Vec<f32>>,
}

impl Chain {
    fn letters(&self) -> usize {
        self.rows.len().max(1)
    }

    /// The next token's distribution after `prev` (any token: letters
    /// beyond the chain wrap around).
    fn after(&self, prev: Token) -> Vec<(Token, f32)> {
        let row = letter(prev) % self.letters();
        self.rows[row]
            .iter()
            .enumerate()
            .map(|(i, &p)| (token(i), p))
            .collect()
    }
}

fn letter(token: Token) -> usize {
    (token.0 - 'a' as i32).unsigned_abs() as usize
}

fn token(letter: usize) -> Token {
    Token('a' as i32 + letter as i32)
}

pub(super) struct Chains {
    pub target: Chain,
    pub draft: Chain,
    pub draft_tokens: usize,
}

/// One generation's output so far.
struct Out<'a> {
    sink: &'a GenerationSink,
    limit: u32,
    produced: u32,
    last: Token,
}

impl Out<'_> {
    /// Emit `t`; `false` once the generation is over.
    fn emit(&mut self, t: Token) -> bool {
        if self.produced >= self.limit {
            return false;
        }
        self.produced += 1;
        self.last = t;
        let text = Utf8Decoder::default().push(&[t.0 as u8]);
        self.sink.send(Event::Text(text)) && self.produced < self.limit
    }
}

impl Chains {
    /// Sample `max_tokens` letters after the prompt's last token, seeded by
    /// the request's seed.
    pub fn run(&self, request: &GenerateRequest, sink: &GenerationSink) {
        let mut uniform = Uniform::new(u64::from(request.sampling.seed.unwrap_or(0)));
        let mut next = || uniform.draw();
        let speculate = request.speculative.max_draft != Some(0) && self.draft_tokens > 0;
        let mut out = Out {
            sink,
            limit: request.max_tokens.unwrap_or(16),
            produced: 0,
            last: request.prompt.last().copied().unwrap_or(token(0)),
        };
        let (mut drafted, mut accepted) = (0u32, 0u32);
        let mut going = true;
        while going && !sink.is_cancelled() {
            if !speculate {
                going = speculate::draw(&self.target.after(out.last), next())
                    .is_some_and(|t| out.emit(t));
                continue;
            }
            // Draft from the draft chain, keeping each token's distribution.
            let mut proposal = Vec::with_capacity(self.draft_tokens);
            let mut prev = out.last;
            for _ in 0..self.draft_tokens {
                let q = self.draft.after(prev);
                let Some(t) = speculate::draw(&q, next()) else {
                    break;
                };
                proposal.push((t, q));
                prev = t;
            }
            drafted += proposal.len() as u32;
            let mut all_kept = true;
            for (t, q) in &proposal {
                let p = self.target.after(out.last);
                match speculate::judge(*t, &p, Some(q), &mut next) {
                    Some(Judged::Kept) => {
                        accepted += 1;
                        going = out.emit(*t);
                    }
                    Some(Judged::Replaced(r)) => {
                        going = out.emit(r);
                        all_kept = false;
                    }
                    None => going = false,
                }
                if !going || !all_kept {
                    break;
                }
            }
            if going && all_kept {
                going = speculate::draw(&self.target.after(out.last), next())
                    .is_some_and(|t| out.emit(t));
            }
        }
        let finish = if out.produced >= out.limit {
            FinishReason::Length
        } else {
            FinishReason::Cancelled
        };
        sink.send(Event::Done(Completion {
            finish_reason: finish,
            stop_index: None,
            usage: Usage {
                prompt_tokens: request.prompt.len() as u32,
                completion_tokens: out.produced,
                drafted_tokens: drafted,
                accepted_tokens: accepted,
                ..Usage::default()
            },
            timings: Timings::default(),
        }));
    }
}
