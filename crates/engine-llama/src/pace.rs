//! How many prompt tokens one decode step may carry while other slots are
//! generating, so a long new prompt never stalls their streams for more
//! than about one step target.
//!
//! A step's time is modelled as a base (what the generating slots' tokens
//! cost) plus a cost per prompt token, both learned from the steps the loop
//! has timed. Until a prompt-token cost is known, chunks start small.

use std::time::Duration;

/// Never fewer prompt tokens than this in a step: progress beats latency.
const MIN_CHUNK: usize = 8;
/// Weight of the newest measurement in the running averages.
const ALPHA: f64 = 0.5;

/// Prompt tokens a slot takes in a step: `wanted`, of `left` still to go,
/// but never leaving fewer than [`MIN_CHUNK`] behind: the rest goes too
/// where `capacity` allows, else enough stays for a chunk of its own. A
/// prompt's last rows then decode in a batch of several, as in a prefill
/// alone (a lone row's attention over a long cache is split across threads
/// and rounds differently, enough to flip a greedy near tie).
pub fn chunk(wanted: usize, left: usize, capacity: usize) -> usize {
    let take = wanted.min(left).min(capacity);
    if take == left || left - take >= MIN_CHUNK {
        return take;
    }
    if left <= capacity {
        return left;
    }
    match left.saturating_sub(MIN_CHUNK) {
        0 => take,
        most => take.min(most),
    }
}

#[derive(Debug)]
pub struct Pace {
    target: f64,
    /// Seconds a step of generated tokens alone takes.
    base: Option<f64>,
    /// Seconds each prompt token adds to a step.
    per_prompt_token: Option<f64>,
}

impl Pace {
    pub fn new(target: Duration) -> Self {
        Self {
            target: target.as_secs_f64(),
            base: None,
            per_prompt_token: None,
        }
    }

    /// Prompt tokens the next step may take, given how many slots generate
    /// in it and how much room the batch has left.
    pub fn prompt_budget(&self, generating: usize, room: usize) -> usize {
        if generating == 0 {
            // Nobody is waiting on a token: prefill at full speed.
            return room;
        }
        let Some(per_token) = self.per_prompt_token else {
            return MIN_CHUNK.min(room);
        };
        let spare = (self.target - self.base.unwrap_or(0.0)).max(0.0);
        let tokens = (spare / per_token.max(1e-9)) as usize;
        tokens.clamp(MIN_CHUNK, room.max(MIN_CHUNK)).min(room)
    }

    /// Prompt tokens a background job's step may take: about what one
    /// plain decode step costs, so a request arriving meanwhile waits no
    /// longer for it than for a token. At least one, so it moves.
    pub fn background_budget(&self, room: usize) -> usize {
        let tokens = match (self.base, self.per_prompt_token) {
            (Some(base), Some(per_token)) => (base / per_token.max(1e-9)) as usize,
            _ => 1,
        };
        tokens.clamp(1, room.max(1)).min(room)
    }

    /// Learn from a step that decoded `generated` sampled tokens and
    /// `prompt` prompt tokens in `elapsed`.
    pub fn record(&mut self, generated: usize, prompt: usize, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if prompt == 0 {
            if generated > 0 {
                self.base = Some(average(self.base, secs));
            }
            return;
        }
        // Small chunks say little about the per-token cost.
        if prompt < MIN_CHUNK / 2 {
            return;
        }
        let base = if generated > 0 {
            self.base.unwrap_or(0.0)
        } else {
            0.0
        };
        let per_token = (secs - base).max(secs * 0.5) / prompt as f64;
        self.per_prompt_token = Some(average(self.per_prompt_token, per_token));
    }
}

fn average(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |old| old + ALPHA * (new - old))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn full_batches_when_nothing_generates() {
        let pace = Pace::new(ms(100));
        assert_eq!(pace.prompt_budget(0, 512), 512);
    }

    #[test]
    fn small_chunks_until_the_cost_is_known() {
        let pace = Pace::new(ms(100));
        assert_eq!(pace.prompt_budget(4, 508), MIN_CHUNK);
    }

    #[test]
    fn background_chunks_cost_about_one_decode_step() {
        let mut pace = Pace::new(ms(100));
        assert_eq!(pace.background_budget(512), 1);
        // 25 ms per prompt token, 40 ms a plain step.
        pace.record(0, 100, ms(2500));
        pace.record(1, 0, ms(40));
        assert_eq!(pace.background_budget(512), 1);
        // A GPU-like 2 ms per prompt token: a 40 ms step holds 20.
        let mut fast = Pace::new(ms(100));
        fast.record(0, 500, ms(1000));
        fast.record(1, 0, ms(40));
        assert_eq!(fast.background_budget(512), 20);
        assert_eq!(fast.background_budget(8), 8);
    }

    #[test]
    fn chunks_fill_the_target_after_the_base() {
        let mut pace = Pace::new(ms(100));
        // 2 ms per prompt token, 20 ms for the generated tokens alone.
        pace.record(0, 500, ms(1000));
        pace.record(4, 0, ms(20));
        assert_eq!(pace.prompt_budget(4, 508), 40);
        // A target the base alone exceeds still makes progress.
        pace.record(4, 0, ms(400));
        assert_eq!(pace.prompt_budget(4, 508), MIN_CHUNK);
        assert_eq!(pace.prompt_budget(4, 8), 8);
    }

    #[test]
    fn a_chunk_never_leaves_a_sliver_of_prompt_behind() {
        // Plenty left: the chunk is what was wanted.
        assert_eq!(chunk(16, 100, 512), 16);
        // The rest is short: it goes too, room allowing.
        assert_eq!(chunk(16, 20, 512), 20);
        assert_eq!(chunk(16, 16, 512), 16);
        // No room for the rest: enough stays behind for a chunk of its own.
        assert_eq!(chunk(16, 20, 18), 12);
        // Nothing can stay behind whole: take what fits, so prompts move.
        assert_eq!(chunk(4, 6, 4), 4);
        assert_eq!(chunk(1, 6, 512), 6);
    }
}
