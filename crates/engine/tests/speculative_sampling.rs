//! Speculative sampling keeps the target's distribution: the fake engine
//! samples from a known target chain, drafting from a very different one,
//! and the sequences it emits are tested against the target's exact
//! probabilities with a chi-square test at a fixed seed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use shelf_engine::fake::{Chain, FakeModel};
use shelf_engine::{Event, GenerateRequest, LoadedModel, SamplingParams, Token, Usage};

fn target() -> Chain {
    Chain {
        rows: vec![
            vec![0.6, 0.3, 0.1],
            vec![0.2, 0.2, 0.6],
            vec![0.5, 0.05, 0.45],
        ],
    }
}

/// A draft that mostly proposes what the target rarely says.
fn draft() -> Chain {
    Chain {
        rows: vec![
            vec![0.1, 0.1, 0.8],
            vec![0.7, 0.2, 0.1],
            vec![0.1, 0.8, 0.1],
        ],
    }
}

/// One generation of `n` letters after "a", with `seed`.
fn generate(model: &FakeModel, n: u32, seed: u32, speculate: bool) -> (Vec<usize>, Usage) {
    let mut request = GenerateRequest::new(vec![Token('a' as i32)]);
    request.sampling = SamplingParams {
        seed: Some(seed),
        ..SamplingParams::default()
    };
    request.max_tokens = Some(n);
    if !speculate {
        request.speculative.max_draft = Some(0);
    }
    let mut generation = model.submit(request).expect("submit");
    let mut letters = Vec::new();
    loop {
        match generation.blocking_next() {
            Some(Event::Text(text)) => letters.extend(text.bytes().map(|b| usize::from(b - b'a'))),
            Some(Event::Done(done)) => return (letters, done.usage),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Chi-square of the counts of every 3-letter sequence against `chain`'s
/// exact probabilities, starting after "a".
fn chi_square(chain: &Chain, counts: &[u32; 27], trials: u32) -> f64 {
    let rows = &chain.rows;
    let mut chi2 = 0.0;
    for (cell, &count) in counts.iter().enumerate() {
        let (x, y, z) = (cell / 9, cell / 3 % 3, cell % 3);
        let p = f64::from(rows[0][x]) * f64::from(rows[x][y]) * f64::from(rows[y][z]);
        let expected = p * f64::from(trials);
        chi2 += (f64::from(count) - expected).powi(2) / expected;
    }
    chi2
}

fn sequences(model: &FakeModel, trials: u32, speculate: bool) -> ([u32; 27], u64, u64) {
    let mut counts = [0u32; 27];
    let (mut drafted, mut accepted) = (0u64, 0u64);
    for seed in 0..trials {
        let (letters, usage) = generate(model, 3, seed, speculate);
        assert_eq!(letters.len(), 3);
        counts[letters[0] * 9 + letters[1] * 3 + letters[2]] += 1;
        drafted += u64::from(usage.drafted_tokens);
        accepted += u64::from(usage.accepted_tokens);
    }
    (counts, drafted, accepted)
}

/// 26 degrees of freedom: the 0.1% critical value.
const CRITICAL: f64 = 54.05;

/// Speculative sampling must leave the distribution of whole sequences
/// unchanged, whatever the draft proposes; a rule that kept drafted tokens
/// too often (or drew the replacement from the target instead of the
/// residual) would skew it towards the draft's and fail.
#[test]
fn speculative_sampling_keeps_the_targets_distribution() {
    let model = FakeModel::sampling(target(), draft(), 2, 64);
    let trials = 30_000;
    let (counts, drafted, accepted) = sequences(&model, trials, true);
    // Speculation really ran, and refused a good share of the drafts.
    assert!(
        accepted > 0 && accepted < drafted / 2,
        "{accepted} of {drafted}"
    );
    let chi2 = chi_square(&target(), &counts, trials);
    assert!(chi2 < CRITICAL, "chi-square {chi2}; counts {counts:?}");
}

/// The test above can fail: the same statistic rejects sequences that
/// follow the draft's chain instead of the target's.
#[test]
fn the_chi_square_test_tells_another_distribution() {
    let plain_draft = FakeModel::sampling(draft(), target(), 2, 64);
    let (counts, drafted, _) = sequences(&plain_draft, 3000, false);
    assert_eq!(drafted, 0);
    assert!(chi_square(&target(), &counts, 3000) > CRITICAL);
    assert!(chi_square(&draft(), &counts, 3000) < CRITICAL);
}
