//! The prefix cache: which slot a new prompt goes to, and slot states kept
//! in RAM after they were pushed out of the KV cache.
//!
//! A slot remembers the tokens its sequence holds. A new prompt goes to the
//! free slot sharing the longest prefix with it, so a chat's next turn finds
//! its history already computed. A slot that is about to be overwritten has
//! its state copied to RAM first (up to a byte limit, least recently used
//! out first), and a later prompt that shares more with a saved state than
//! with any slot gets that state restored.

use llama_cpp_2::context::session::SeqState;
use llama_cpp_2::token::LlamaToken;

/// Tokens a prompt must share with a slot, as a share of the prompt, for
/// the slot to be chosen for that reason; below it, an empty or the least
/// recently used slot is taken, sparing other conversations' caches.
const MIN_SHARED_FRACTION: f64 = 0.1;
/// Slot states with fewer tokens than this to lose are not worth saving.
pub const MIN_SAVED_TOKENS: usize = 64;

/// Length of the common prefix of two token lists.
pub fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// What a free slot offers a prompt.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub index: usize,
    pub shared: usize,
    pub cached: usize,
    pub last_used: u64,
}

/// The slot for `prompt` among the free `candidates`: the longest shared
/// prefix if it is a real share of the prompt, else an empty slot, else
/// the least recently used one.
pub fn choose(candidates: &[Candidate], prompt_len: usize) -> Option<usize> {
    let best = candidates
        .iter()
        .max_by_key(|c| (c.shared, std::cmp::Reverse(c.last_used)))?;
    if best.shared > 0 && best.shared as f64 >= prompt_len as f64 * MIN_SHARED_FRACTION {
        return Some(best.index);
    }
    candidates
        .iter()
        .min_by_key(|c| (c.cached > 0, c.last_used))
        .map(|c| c.index)
}

/// A saved slot state.
struct Entry {
    tokens: Vec<LlamaToken>,
    state: SeqState,
    last_used: u64,
}

/// Slot states in RAM, at most `limit` bytes of them.
pub struct RamCache {
    limit: u64,
    entries: Vec<Entry>,
    clock: u64,
}

impl RamCache {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            entries: Vec::new(),
            clock: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.state.byte_len() as u64).sum()
    }

    /// Keep `state`, the KV of `tokens`, dropping older states to make room.
    /// States that are a prefix of it are dropped too: it holds all they do.
    pub fn insert(&mut self, tokens: Vec<LlamaToken>, state: SeqState) {
        let size = state.byte_len() as u64;
        if size > self.limit {
            return;
        }
        self.entries
            .retain(|e| common_prefix(&e.tokens, &tokens) < e.tokens.len());
        while self.bytes() + size > self.limit {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.entries.swap_remove(oldest);
        }
        self.clock += 1;
        self.entries.push(Entry {
            tokens,
            state,
            last_used: self.clock,
        });
    }

    /// Take out the state sharing the longest prefix with `prompt`, if it
    /// shares more than `beat` tokens.
    pub fn take_best(
        &mut self,
        prompt: &[LlamaToken],
        beat: usize,
    ) -> Option<(Vec<LlamaToken>, SeqState)> {
        let (index, _) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt)))
            .filter(|&(_, shared)| shared > beat)
            .max_by_key(|&(_, shared)| shared)?;
        let entry = self.entries.swap_remove(index);
        Some((entry.tokens, entry.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(index: usize, shared: usize, cached: usize, last_used: u64) -> Candidate {
        Candidate {
            index,
            shared,
            cached,
            last_used,
        }
    }

    #[test]
    fn common_prefix_counts_equal_leading_tokens() {
        let t = |v: &[i32]| v.iter().map(|&i| LlamaToken(i)).collect::<Vec<_>>();
        assert_eq!(common_prefix(&t(&[1, 2, 3]), &t(&[1, 2, 4])), 2);
        assert_eq!(common_prefix(&t(&[1, 2]), &t(&[1, 2, 4])), 2);
        assert_eq!(common_prefix(&t(&[]), &t(&[1])), 0);
    }

    #[test]
    fn the_longest_real_share_wins() {
        let slots = [candidate(0, 10, 100, 5), candidate(1, 90, 95, 1)];
        assert_eq!(choose(&slots, 100), Some(1));
    }

    #[test]
    fn a_token_share_does_not_take_another_conversations_slot() {
        // Only the template's first tokens are shared: take the empty slot.
        let slots = [candidate(0, 3, 500, 9), candidate(1, 0, 0, 1)];
        assert_eq!(choose(&slots, 400), Some(1));
        // No empty slot: the least recently used one.
        let slots = [candidate(0, 3, 500, 9), candidate(1, 3, 200, 2)];
        assert_eq!(choose(&slots, 400), Some(1));
        assert_eq!(choose(&[], 400), None);
    }
}
