//! Speculative decoding's speed: a small draft model proposes k tokens, the
//! target checks them all in one pass and keeps the accepted prefix plus one
//! token of its own. Arithmetic on two plain estimates; no IO.

use serde::Serialize;

use crate::Estimate;

/// Acceptance assumed when none is given: the middle of published per-token
/// rates for same-family drafts on chat (about 0.6 to 0.75; code and
/// retrieval answers run higher). docs/planner.md gives the sources.
pub const DEFAULT_ACCEPTANCE: f64 = 0.7;

/// The longest draft considered.
pub const MAX_DRAFT_TOKENS: u32 = 16;

/// What speculation is asked to assume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speculation {
    /// Tokens drafted per step; `None` picks the fastest.
    pub draft_tokens: Option<u32>,
    /// Chance that each drafted token is the one the target would choose.
    pub acceptance: f64,
}

/// Predicted speculative decode of one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeculativeEstimate {
    pub draft_tokens: u32,
    pub acceptance: f64,
    /// Tokens each target pass yields on average, the bonus token included.
    pub tokens_per_step: f64,
    /// The target alone.
    pub plain_tps: f64,
    /// The draft alone.
    pub draft_tps: f64,
    pub decode_tps: f64,
    pub speedup: f64,
}

/// Expected tokens per step with `k` drafted, each accepted with
/// `acceptance` (independently): 1 + a + a² + … + a^k.
pub fn expected_tokens(acceptance: f64, k: u32) -> f64 {
    let a = acceptance.clamp(0.0, 1.0);
    (0..=k).map(|i| a.powi(i as i32)).sum()
}

/// Tokens per second with `k` drafted. A step costs one target decode, plus
/// what each extra verified token adds to the batch (the pass reads the
/// weights once; the extra tokens add compute), plus `k` draft decodes.
fn speed(target: &Estimate, draft: &Estimate, k: u32, acceptance: f64) -> f64 {
    let verify = 1.0 / target.decode_tps + f64::from(k) * target.verify_token_seconds;
    let drafting = f64::from(k) / draft.decode_tps.max(1e-9);
    expected_tokens(acceptance, k) / (verify + drafting)
}

/// The speculative speed of `target` with `draft`, both estimated on the
/// same box.
pub fn estimate_speculative(
    target: &Estimate,
    draft: &Estimate,
    speculation: Speculation,
) -> SpeculativeEstimate {
    let acceptance = speculation.acceptance.clamp(0.0, 1.0);
    let k = match speculation.draft_tokens {
        Some(k) => k.clamp(1, MAX_DRAFT_TOKENS),
        None => best_k(target, draft, acceptance),
    };
    let decode_tps = speed(target, draft, k, acceptance);
    SpeculativeEstimate {
        draft_tokens: k,
        acceptance,
        tokens_per_step: expected_tokens(acceptance, k),
        plain_tps: target.decode_tps,
        draft_tps: draft.decode_tps,
        decode_tps,
        speedup: decode_tps / target.decode_tps,
    }
}

fn best_k(target: &Estimate, draft: &Estimate, acceptance: f64) -> u32 {
    (1..=MAX_DRAFT_TOKENS)
        .max_by(|a, b| {
            speed(target, draft, *a, acceptance).total_cmp(&speed(target, draft, *b, acceptance))
        })
        .unwrap_or(1)
}

/// The lowest acceptance at which some draft length reaches `tps`, with
/// that length; `None` if even a perfect draft cannot.
pub fn acceptance_needed(target: &Estimate, draft: &Estimate, tps: f64) -> Option<(f64, u32)> {
    (1..=MAX_DRAFT_TOKENS)
        .filter(|k| speed(target, draft, *k, 1.0) >= tps)
        .map(|k| {
            // Speed rises with acceptance: bisect for where it reaches `tps`.
            let (mut low, mut high) = (0.0, 1.0);
            for _ in 0..50 {
                let mid = (low + high) / 2.0;
                if speed(target, draft, k, mid) >= tps {
                    high = mid;
                } else {
                    low = mid;
                }
            }
            (high, k)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{estimate, hardware_catalog, FitOptions, ModelSpec};

    fn on_m4_max(model: &str) -> Estimate {
        let hardware = hardware_catalog()
            .into_iter()
            .find(|h| h.name == "m4-max-64")
            .unwrap();
        let (name, quant) = model.split_once(':').unwrap();
        let spec = ModelSpec::from_catalog(&crate::catalog_model(name).unwrap(), quant).unwrap();
        estimate(&spec, &hardware, &FitOptions::default())
    }

    #[test]
    fn expected_tokens_follow_the_geometric_sum() {
        assert_eq!(expected_tokens(0.0, 5), 1.0);
        assert_eq!(expected_tokens(1.0, 5), 6.0);
        let a: f64 = 0.7;
        let closed = (1.0 - a.powi(5)) / (1.0 - a);
        assert!((expected_tokens(a, 4) - closed).abs() < 1e-12);
    }

    #[test]
    fn a_useless_draft_slows_decode_and_a_good_one_speeds_it() {
        let target = on_m4_max("llama-3.3-70b:Q4_K_M");
        let draft = on_m4_max("llama-3.2-1b:Q8_0");
        let zero = Speculation {
            draft_tokens: Some(4),
            acceptance: 0.0,
        };
        assert!(estimate_speculative(&target, &draft, zero).speedup < 1.0);
        let good = Speculation {
            draft_tokens: None,
            acceptance: 0.8,
        };
        let fast = estimate_speculative(&target, &draft, good);
        assert!(fast.speedup > 1.5, "{fast:?}");
        // The chosen length is the fastest one.
        for k in 1..=MAX_DRAFT_TOKENS {
            let fixed = Speculation {
                draft_tokens: Some(k),
                acceptance: 0.8,
            };
            assert!(
                estimate_speculative(&target, &draft, fixed).decode_tps <= fast.decode_tps + 1e-9
            );
        }
    }

    #[test]
    fn the_acceptance_needed_is_where_the_speed_is_reached() {
        let target = on_m4_max("llama-3.3-70b:Q4_K_M");
        let draft = on_m4_max("llama-3.2-1b:Q8_0");
        let tps = 1.8 * target.decode_tps;
        let (acceptance, k) = acceptance_needed(&target, &draft, tps).unwrap();
        assert!((speed(&target, &draft, k, acceptance) - tps).abs() / tps < 1e-6);
        assert!(speed(&target, &draft, k, acceptance - 0.01) < tps);
        assert!(acceptance_needed(&target, &draft, 1000.0 * target.decode_tps).is_none());
    }
}
