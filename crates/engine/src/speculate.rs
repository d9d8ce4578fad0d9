//! The model-free halves of speculative decoding: proposing tokens from
//! n-grams of the text so far, and deciding which drafted tokens a target
//! keeps, so that the output is exactly what the target alone would give.
//!
//! Pure functions over token ids and probabilities. The decode loop that
//! drafts, verifies in one batch and rolls back KV caches is the engine's
//! (issue 11); this module knows no model and no C++.

use crate::Token;

/// Draft up to `max_draft` tokens by prompt lookup: find the most recent
/// earlier place where the last `n` tokens of `history` occurred (longest
/// `n` from `max_n` down to `min_n` first) and propose what followed it.
/// Empty when nothing repeats.
pub fn ngram_draft(history: &[Token], min_n: usize, max_n: usize, max_draft: usize) -> Vec<Token> {
    let min_n = min_n.max(1);
    for n in (min_n..=max_n).rev() {
        if history.len() <= n || max_draft == 0 {
            continue;
        }
        let tail = &history[history.len() - n..];
        // Latest match first: recent text is the likeliest to repeat.
        let found = (0..history.len() - n)
            .rev()
            .find(|&start| &history[start..start + n] == tail);
        if let Some(start) = found {
            let after = start + n;
            let end = (after + max_draft).min(history.len());
            return history[after..end].to_vec();
        }
    }
    Vec::new()
}

/// The verdict on a draft: how many drafted tokens the target keeps, and the
/// one token of its own that follows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub accepted: usize,
    pub next: Token,
}

/// At temperature 0: keep drafted tokens while they are the target's own
/// choice. `choices[i]` is the target's arg-max after the first `i` drafted
/// tokens; it has one more entry than `drafted` (`None` if it has not).
pub fn verify_greedy(drafted: &[Token], choices: &[Token]) -> Option<Verdict> {
    if choices.len() != drafted.len() + 1 {
        return None;
    }
    let accepted = drafted
        .iter()
        .zip(choices)
        .take_while(|(draft, choice)| draft == choice)
        .count();
    Some(Verdict {
        accepted,
        next: choices[accepted],
    })
}

/// A probability distribution over some tokens (the rest have none), as
/// the sampler chain leaves it.
pub type Probs = [(Token, f32)];

fn prob(probs: &Probs, token: Token) -> f32 {
    probs
        .iter()
        .filter(|(t, _)| *t == token)
        .map(|(_, p)| *p)
        .sum()
}

/// Draw from `probs` (not necessarily normalised) with `u` in [0, 1).
fn draw(probs: &[(Token, f32)], u: f64) -> Option<Token> {
    let total: f64 = probs.iter().map(|(_, p)| f64::from(p.max(0.0))).sum();
    if total <= 0.0 {
        return None;
    }
    let mut left = u * total;
    for (token, p) in probs {
        left -= f64::from(p.max(0.0));
        if left < 0.0 {
            return Some(*token);
        }
    }
    probs.iter().rev().find(|(_, p)| *p > 0.0).map(|(t, _)| *t)
}

/// Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): drafted
/// token `x` is kept with chance min(1, p(x)/q(x)); at the first refusal the
/// target's token comes from the residual max(0, p − q), renormalised; if
/// all are kept, from the target's next distribution. The output is then
/// distributed exactly as sampling the target alone.
///
/// `target[i]` is the target's distribution after the first `i` drafted
/// tokens (one more than `drafted`). `draft[i]` is the distribution
/// `drafted[i]` was drawn from; `None` for a deterministic draft (n-gram
/// lookup), which is then one-hot. `uniform` yields numbers in [0, 1).
pub fn verify_sampled(
    drafted: &[Token],
    target: &[&Probs],
    draft: Option<&[&Probs]>,
    mut uniform: impl FnMut() -> f64,
) -> Option<Verdict> {
    if target.len() != drafted.len() + 1 || draft.is_some_and(|d| d.len() != drafted.len()) {
        return None;
    }
    for (i, &token) in drafted.iter().enumerate() {
        let p = f64::from(prob(target[i], token));
        let q = draft.map_or(1.0, |d| f64::from(prob(d[i], token)));
        if q > 0.0 && uniform() < (p / q).min(1.0) {
            continue;
        }
        let residual: Vec<(Token, f32)> = target[i]
            .iter()
            .map(|&(t, pt)| {
                let qt = match draft {
                    Some(d) => prob(d[i], t),
                    None if t == token => 1.0,
                    None => 0.0,
                };
                (t, (pt - qt).max(0.0))
            })
            .collect();
        // p ≤ q everywhere only happens when p = q, which always accepts;
        // fall back to p itself against rounding.
        let next = draw(&residual, uniform()).or_else(|| draw(target[i], uniform()))?;
        return Some(Verdict { accepted: i, next });
    }
    let next = draw(target[drafted.len()], uniform())?;
    Some(Verdict {
        accepted: drafted.len(),
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[i32]) -> Vec<Token> {
        ids.iter().map(|&i| Token(i)).collect()
    }

    /// A small deterministic generator (xorshift64*), uniform in [0, 1).
    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed.max(1);
        move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn lookup_proposes_what_followed_the_latest_repeat_of_the_longest_tail() {
        // "1 2 3 4 5 ... 1 2 3" → propose "4 5".
        let history = tokens(&[1, 2, 3, 4, 5, 9, 1, 2, 3]);
        assert_eq!(ngram_draft(&history, 1, 3, 2), tokens(&[4, 5]));
        // Capped by what follows, and by max_draft.
        assert_eq!(ngram_draft(&history, 1, 3, 10), tokens(&[4, 5, 9, 1, 2, 3]));
        // The latest occurrence wins for equal lengths.
        let history = tokens(&[7, 1, 7, 2, 7]);
        assert_eq!(ngram_draft(&history, 1, 1, 1), tokens(&[2]));
        // Longer tails are preferred to shorter ones.
        let history = tokens(&[5, 6, 1, 5, 8, 2, 5, 6]);
        assert_eq!(ngram_draft(&history, 1, 2, 1), tokens(&[1]));
        assert!(ngram_draft(&tokens(&[1, 2, 3]), 1, 3, 4).is_empty());
        assert!(ngram_draft(&[], 1, 3, 4).is_empty());
    }

    #[test]
    fn greedy_verification_keeps_the_agreeing_prefix_and_adds_the_targets_token() {
        let drafted = tokens(&[4, 5, 6]);
        let all = verify_greedy(&drafted, &tokens(&[4, 5, 6, 7])).unwrap();
        assert_eq!(
            all,
            Verdict {
                accepted: 3,
                next: Token(7)
            }
        );
        let some = verify_greedy(&drafted, &tokens(&[4, 9, 6, 7])).unwrap();
        assert_eq!(
            some,
            Verdict {
                accepted: 1,
                next: Token(9)
            }
        );
        let none = verify_greedy(&drafted, &tokens(&[8, 5, 6, 7])).unwrap();
        assert_eq!(
            none,
            Verdict {
                accepted: 0,
                next: Token(8)
            }
        );
        assert!(verify_greedy(&drafted, &tokens(&[4, 5, 6])).is_none());
    }

    /// The first token emitted must follow the target's distribution
    /// whatever the draft's: a chi-square test over many seeded trials.
    /// `drafted` is the n-gram proposal when there is no draft model.
    fn first_token_follows_the_target(draft: Option<&Probs>, drafted: Token) {
        let p: Vec<(Token, f32)> = vec![
            (Token(0), 0.5),
            (Token(1), 0.3),
            (Token(2), 0.15),
            (Token(3), 0.05),
        ];
        let after: Vec<(Token, f32)> = vec![
            (Token(0), 0.25),
            (Token(1), 0.25),
            (Token(2), 0.25),
            (Token(3), 0.25),
        ];
        let mut next = rng(42);
        let trials = 200_000;
        let mut counts = [0u32; 4];
        for _ in 0..trials {
            // A model's draft is drawn from its own distribution; an n-gram
            // draft is fixed.
            let drafted = match draft {
                Some(q) => draw(q, next()).unwrap(),
                None => drafted,
            };
            let drafts: Option<Vec<&Probs>> = draft.map(|q| vec![q]);
            let verdict =
                verify_sampled(&[drafted], &[&p, &after], drafts.as_deref(), &mut next).unwrap();
            let first = if verdict.accepted == 1 {
                drafted
            } else {
                verdict.next
            };
            counts[first.0 as usize] += 1;
        }
        let chi2: f64 = p
            .iter()
            .map(|(t, pt)| {
                let expected = f64::from(*pt) * f64::from(trials);
                (f64::from(counts[t.0 as usize]) - expected).powi(2) / expected
            })
            .sum();
        // 3 degrees of freedom: 16.27 is the 0.1% critical value.
        assert!(chi2 < 16.27, "chi2 {chi2}, counts {counts:?}");
    }

    #[test]
    fn sampled_verification_preserves_the_targets_distribution() {
        let q: Vec<(Token, f32)> = vec![
            (Token(0), 0.1),
            (Token(1), 0.1),
            (Token(2), 0.1),
            (Token(3), 0.7),
        ];
        // A draft that mostly proposes the target's least likely token.
        first_token_follows_the_target(Some(&q), Token(0));
        // A deterministic (n-gram) draft.
        first_token_follows_the_target(None, Token(2));
        first_token_follows_the_target(None, Token(0));
    }

    #[test]
    fn a_draft_equal_to_the_target_is_always_kept() {
        let p: Vec<(Token, f32)> = vec![(Token(0), 0.6), (Token(1), 0.4)];
        let mut next = rng(7);
        for _ in 0..1000 {
            let verdict = verify_sampled(&[Token(1)], &[&p, &p], Some(&[&p]), &mut next).unwrap();
            assert_eq!(verdict.accepted, 1);
        }
    }
}
