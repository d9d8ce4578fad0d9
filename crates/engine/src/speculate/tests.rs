use super::*;

fn tokens(ids: &[i32]) -> Vec<Token> {
    ids.iter().map(|&i| Token(i)).collect()
}

fn looked_up(history: &[i32], min_n: usize, max_n: usize, max_draft: usize) -> (Vec<Token>, usize) {
    let found = ngram_draft(&tokens(history), min_n, max_n, max_draft);
    (found.tokens, found.matched)
}

#[test]
fn lookup_proposes_what_followed_the_latest_repeat_of_the_longest_tail() {
    // "1 2 3 4 5 ... 1 2 3" → propose "4 5", a 3-token match.
    let history = [1, 2, 3, 4, 5, 9, 1, 2, 3];
    assert_eq!(looked_up(&history, 1, 3, 2), (tokens(&[4, 5]), 3));
    // Capped by what follows, and by max_draft.
    assert_eq!(
        looked_up(&history, 1, 3, 10),
        (tokens(&[4, 5, 9, 1, 2, 3]), 3)
    );
    // A longer allowed match is still only as long as the repeat.
    assert_eq!(looked_up(&history, 1, 12, 2), (tokens(&[4, 5]), 3));
    // The latest occurrence wins for equal lengths.
    assert_eq!(looked_up(&[7, 1, 7, 2, 7], 1, 1, 1), (tokens(&[2]), 1));
    // Longer tails are preferred to shorter ones, however far back.
    assert_eq!(
        looked_up(&[5, 6, 1, 5, 8, 2, 5, 6], 1, 2, 1),
        (tokens(&[1]), 2)
    );
    // Too short a match is none.
    assert_eq!(
        looked_up(&[5, 6, 1, 5, 8, 2, 5, 6], 3, 4, 1),
        (Vec::new(), 0)
    );
    assert!(ngram_draft(&tokens(&[1, 2, 3]), 1, 3, 4).tokens.is_empty());
    assert!(ngram_draft(&[], 1, 3, 4).tokens.is_empty());
}

#[test]
fn greedy_verification_keeps_the_agreeing_prefix_and_adds_the_targets_token() {
    let drafted = tokens(&[4, 5, 6]);
    let verdict = |choices: &[i32]| verify_greedy(&drafted, &tokens(choices));
    let v = |accepted, next| {
        Some(Verdict {
            accepted,
            next: Token(next),
        })
    };
    assert_eq!(verdict(&[4, 5, 6, 7]), v(3, 7));
    assert_eq!(verdict(&[4, 9, 6, 7]), v(1, 9));
    assert_eq!(verdict(&[8, 5, 6, 7]), v(0, 8));
    assert_eq!(verdict(&[4, 5, 6]), None);
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
    let after: Vec<(Token, f32)> = (0..4).map(|t| (Token(t), 0.25)).collect();
    let mut uniform = Uniform::new(42);
    let mut next = || uniform.draw();
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
    let mut uniform = Uniform::new(7);
    for _ in 0..1000 {
        let verdict =
            verify_sampled(&[Token(1)], &[&p, &p], Some(&[&p]), || uniform.draw()).unwrap();
        assert_eq!(verdict.accepted, 1);
    }
}

#[test]
fn acceptance_is_the_geometric_rate_of_recent_steps() {
    let mut a = Acceptance::new();
    let prior = a.rate();
    assert!((0.5..0.7).contains(&prior));
    // Everything kept: the rate climbs towards 1.
    for _ in 0..30 {
        a.record(8, 8);
    }
    assert!(a.rate() > 0.95, "{}", a.rate());
    // Then every first token refused: it falls towards 0.
    for _ in 0..60 {
        a.record(8, 0);
    }
    assert!(a.rate() < 0.15, "{}", a.rate());
}

#[test]
fn a_cost_line_learns_base_and_slope() {
    let mut curve = CostCurve::default();
    assert_eq!(curve.predict(1, 0.0), None);
    // Only one size seen: no slope, and predictions use the stand-in.
    curve.record(1, 0.035);
    assert_eq!(curve.line.slope(), None);
    assert!((curve.predict(3, 0.01).unwrap() - 0.055).abs() < 1e-9);
    // 35 ms plus 20 ms per extra token.
    for k in [1usize, 4, 2, 8, 1, 3] {
        curve.record(k, 0.015 + 0.020 * k as f64);
    }
    assert!((curve.line.slope().unwrap() - 0.020).abs() < 1e-6);
    assert!((curve.predict(16, 0.0).unwrap() - 0.335).abs() < 1e-6);
}

#[test]
fn prices_are_relative_to_a_plain_tokens_share() {
    let mut costs = Costs::new(0.4);
    // Nothing measured: the stand-ins.
    let unknown = costs.prices(1, 1);
    assert_eq!(unknown.verify(1), Prices::UNKNOWN_VERIFY);
    assert_eq!(unknown.draft, 0.4);
    // A CPU-like target: 35 ms, each extra token 20 ms.
    for k in [1usize, 2, 4, 8] {
        costs.target.record(k, 0.015 + 0.020 * k as f64);
    }
    // A GPU-like draft: flat 5 ms whatever the batch.
    for k in [1usize, 2, 4] {
        costs.draft.record(k, 0.005);
    }
    let one = costs.prices(1, 1);
    assert!((one.verify(1) - 20.0 / 35.0).abs() < 1e-6, "{one:?}");
    assert!((one.verify(3) - 60.0 / 35.0).abs() < 1e-6, "{one:?}");
    assert!((one.draft - 5.0 / 35.0).abs() < 1e-6, "{one:?}");
    // Four slots share a step: a plain token's share is smaller, so an
    // extra token costs relatively more.
    let four = costs.prices(4, 4);
    assert!(four.verify(1) > one.verify(1));
}

#[test]
fn the_cost_curve_follows_measured_sizes_not_a_line() {
    // This box's CPU: the first extra row costs 23 ms, later ones 12-16.
    let mut curve = CostCurve::default();
    assert_eq!(curve.predict(1, 0.0), None);
    for _ in 0..3 {
        for (tokens, ms) in [(1, 35.0), (2, 58.0), (4, 100.0), (17, 310.0), (33, 500.0)] {
            curve.record(tokens, ms / 1000.0);
        }
    }
    let ms = |tokens| curve.predict(tokens, 0.0).unwrap() * 1000.0;
    assert!((ms(2) - 58.0).abs() < 1e-6);
    // Between sizes along the straight line, past them along the fitted one.
    assert!((ms(3) - 79.0).abs() < 1e-6);
    assert!(ms(40) > 500.0);
    // A one-token draft is priced at its own cost, not at the line's slope
    // (about 14 ms a token through these points).
    let mut costs = Costs::new(0.5);
    costs.target = curve;
    let prices = costs.prices(1, 1);
    assert!((prices.verify(1) - 23.0 / 35.0).abs() < 1e-6, "{prices:?}");
    assert!(
        (prices.verify(16) - 275.0 / 35.0).abs() < 1e-6,
        "{prices:?}"
    );
    // So at a rate of 0.5, a short lookup draft loses and is not made.
    let mut tuner = Tuner::new(&costs);
    assert_eq!(tuner.plan(0, &prices, Offer::lookup(1, 2), false, 1), None);
}

#[test]
fn the_tuner_drafts_long_when_drafts_are_kept_and_rests_when_they_lose() {
    let mut costs = Costs::new(0.5);
    let cheap = Prices::linear(0.05, 0.1);
    let mut tuner = Tuner::new(&costs);
    // Lookup offers 12 tokens from a long match; all are kept step after
    // step.
    for produced in 0..10 {
        let plan = tuner
            .plan(
                produced * 10,
                &cheap,
                Offer::lookup(12, LONG_MATCH),
                false,
                16,
            )
            .unwrap();
        assert_eq!(plan.source, Source::NgramLong);
        tuner.record(plan.source, plan.tokens, plan.tokens, &mut costs);
    }
    // In a run, with verification this cheap, the draft is lengthened past
    // what lookup offers, to the most allowed.
    let plan = tuner
        .plan(100, &cheap, Offer::lookup(12, LONG_MATCH), false, 16)
        .unwrap();
    assert_eq!(plan.tokens, 16);
    // A whole draft kept: the request is in a run, and the next draft is
    // priced at the rate seen within runs, so it is longer.
    let dear = Prices::linear(0.4, 0.0);
    let mut tuner = Tuner::new(&Costs::new(0.5));
    let first = tuner
        .plan(0, &dear, Offer::lookup(40, LONG_MATCH), false, 32)
        .unwrap()
        .tokens;
    assert!(first >= Tuner::RUN_START, "{first}");
    tuner.record(Source::NgramLong, first, first, &mut costs);
    let second = tuner
        .plan(
            first as u32 + 1,
            &dear,
            Offer::lookup(40, LONG_MATCH),
            false,
            32,
        )
        .unwrap()
        .tokens;
    assert!(second > first, "{first} then {second}");
    // A refusal ends the run.
    tuner.record(Source::NgramLong, second, 1, &mut costs);
    let third = tuner
        .plan(50, &dear, Offer::lookup(40, LONG_MATCH), false, 32)
        .unwrap()
        .tokens;
    assert!(third < second, "{second} then {third}");

    // A draft model that loses at the acceptance it has seen: rest, then
    // probe once, then rest twice as long.
    let dear = Prices::linear(0.3, 0.5);
    let mut tuner = Tuner::new(&Costs::new(1.0));
    assert_eq!(tuner.plan(0, &dear, Offer::lookup(0, 0), true, 16), None);
    assert_eq!(tuner.plan(5, &dear, Offer::lookup(0, 0), true, 16), None);
    let probe = tuner
        .plan(16, &dear, Offer::lookup(0, 0), true, 16)
        .unwrap();
    assert_eq!(probe.source, Source::Model);
    tuner.record(Source::Model, probe.tokens, 0, &mut costs);
    assert_eq!(tuner.plan(17, &dear, Offer::lookup(0, 0), true, 16), None);
    assert_eq!(tuner.plan(40, &dear, Offer::lookup(0, 0), true, 16), None);
    assert!(tuner
        .plan(17 + 32, &dear, Offer::lookup(0, 0), true, 16)
        .is_some());
}

#[test]
fn a_source_that_cannot_win_is_never_tried() {
    // Drafting and verifying a token cost more than a plain token: even a
    // perfect draft is slower, so there is nothing to probe.
    let hopeless = Prices::linear(0.6, 0.6);
    let mut tuner = Tuner::new(&Costs::new(1.0));
    for produced in 0..2000 {
        assert_eq!(
            tuner.plan(produced, &hopeless, Offer::lookup(0, 0), true, 16),
            None
        );
    }
}

#[test]
fn the_cheaper_useful_source_wins() {
    let costs = Costs::new(0.5);
    let prices = Prices::linear(0.1, 0.5);
    let mut tuner = Tuner::new(&costs);
    // At equal acceptance, lookup's drafts cost less than the model's.
    let plan = tuner
        .plan(0, &prices, Offer::lookup(4, 3), true, 8)
        .unwrap();
    assert_eq!(plan.source, Source::Ngram);
    // Without a lookup proposal, the model drafts.
    let plan = tuner
        .plan(0, &prices, Offer::lookup(0, 0), true, 8)
        .unwrap();
    assert_eq!(plan.source, Source::Model);
}

#[test]
fn long_matches_are_trusted_more_than_short_ones() {
    let costs = Costs::new(0.5);
    let prices = Prices::linear(0.3, 0.0);
    let short = Tuner::new(&costs)
        .plan(0, &prices, Offer::lookup(32, 2), false, 32)
        .unwrap();
    let long = Tuner::new(&costs)
        .plan(0, &prices, Offer::lookup(32, LONG_MATCH), false, 32)
        .unwrap();
    assert_eq!(
        (short.source, long.source),
        (Source::Ngram, Source::NgramLong)
    );
    assert!(long.tokens > short.tokens, "{short:?} {long:?}");
}

#[test]
fn uniform_draws_are_in_range_and_differ_by_seed() {
    let mut a = Uniform::new(1);
    let mut b = Uniform::new(2);
    let xs: Vec<f64> = (0..1000).map(|_| a.draw()).collect();
    assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    let mean = xs.iter().sum::<f64>() / 1000.0;
    assert!((mean - 0.5).abs() < 0.05);
    assert_ne!(a.draw(), b.draw());
}

#[test]
fn a_request_unlearns_the_models_copying_quickly() {
    let mut costs = Costs::new(0.5);
    // Earlier requests copied: twenty steps each keeping 16 drafted tokens.
    for _ in 0..20 {
        costs.acceptance.of(Source::NgramLong).record(16, 16);
    }
    let prices = Prices::linear(0.5, 0.0);
    let mut tuner = Tuner::new(&costs);
    // This request's text is not copied: every draft is refused at once.
    let mut drafted_steps = 0;
    for produced in 0..8 {
        if let Some(plan) = tuner.plan(produced, &prices, Offer::lookup(16, LONG_MATCH), false, 16)
        {
            drafted_steps += 1;
            tuner.record(plan.source, plan.tokens, 0, &mut costs);
        }
    }
    assert!((1..=3).contains(&drafted_steps), "{drafted_steps}");
}

#[test]
fn a_source_that_kept_losing_rests_longer_on_the_next_request() {
    let mut costs = Costs::new(1.0);
    let dear = Prices::linear(0.3, 0.5);
    let mut tuner = Tuner::new(&costs);
    for produced in 0..200 {
        if let Some(plan) = tuner.plan(produced, &dear, Offer::lookup(0, 0), true, 16) {
            tuner.record(plan.source, plan.tokens, 0, &mut costs);
        }
    }
    // The next request rests from its first step as long as this one's
    // rests had grown (capped so it still probes within an answer).
    let mut next = Tuner::new(&costs);
    let first_probe = (0..600)
        .find(|&produced| {
            next.plan(produced, &dear, Offer::lookup(0, 0), true, 16)
                .is_some()
        })
        .unwrap();
    assert_eq!(first_probe, 128);
}

#[test]
fn extending_a_draft_follows_repeats_past_the_end_of_its_source() {
    // The text ends "… 3 4" having just repeated "1 2 3 4"; lookup finds
    // nothing after the last "3 4" but its own end, so extension carries on
    // from what followed "4" earlier: 5, then 1 2 3 …
    let text = tokens(&[1, 2, 3, 4, 5, 1, 2, 3, 4]);
    let mut draft = ngram_draft(&text, 2, 16, 6).tokens;
    assert_eq!(draft, tokens(&[5, 1, 2, 3, 4]));
    ngram_extend(&text, &mut draft, 16, 8);
    assert_eq!(draft, tokens(&[5, 1, 2, 3, 4, 5, 1, 2]));
    // From nothing, a one-token repeat is enough.
    let mut draft = Vec::new();
    ngram_extend(&tokens(&[7, 8, 9, 7]), &mut draft, 16, 2);
    assert_eq!(draft, tokens(&[8, 9]));
    // Nothing repeats: the draft stays as it was.
    let mut draft = tokens(&[42]);
    ngram_extend(&tokens(&[1, 2, 3]), &mut draft, 16, 4);
    assert_eq!(draft, tokens(&[42]));
}

#[test]
fn runs_start_on_a_long_match_and_end_after_fruitless_steps() {
    let mut runs = Runs::default();
    // Short matches, or nothing offered, do not start a run.
    assert!(!runs.plan(LONG_MATCH - 1, 5));
    assert!(!runs.plan(LONG_MATCH, 0));
    assert!(runs.plan(LONG_MATCH, 3));
    // Within a run every step drafts, whatever the lookup found.
    for _ in 0..Runs::LEAVE_AFTER - 1 {
        runs.record(0);
        assert!(runs.plan(0, 0));
    }
    // A kept token starts the count again.
    runs.record(2);
    for _ in 0..Runs::LEAVE_AFTER - 1 {
        runs.record(0);
    }
    assert!(runs.plan(0, 0));
    runs.record(0);
    assert!(!runs.plan(2, 4));
    assert!(runs.plan(LONG_MATCH + 1, 1));
}

/// Prices from this box's CPU (2 threads, Qwen2.5-Coder 1.5B): milliseconds
/// by rows, where 16 rows cost less than 8 to 15 would on a line through
/// them, and 32 rows less than twice 16.
fn this_cpu() -> (Costs, Prices) {
    measured(&[
        (1, 35.0),
        (2, 64.0),
        (3, 88.0),
        (4, 106.0),
        (8, 225.0),
        (16, 285.0),
        (32, 492.0),
    ])
}

/// Costs timed as `(rows, milliseconds)`, and a lone slot's prices.
fn measured(steps: &[(usize, f64)]) -> (Costs, Prices) {
    let mut costs = Costs::new(0.5);
    for &(rows, ms) in steps {
        costs.target.record(rows, ms / 1000.0);
    }
    let prices = costs.prices(1, 1);
    (costs, prices)
}

#[test]
fn the_cheapest_length_may_be_longer_than_asked() {
    let (_, prices) = this_cpu();
    // 12 to 15 drafted tokens (13 to 16 rows): 16 rows cost least.
    for k in 12..=15 {
        assert_eq!(prices.cheapest(k, 32).0, 15, "{k}");
    }
    let (_, cost) = prices.cheapest(15, 32);
    assert!((cost - 250.0 / 35.0).abs() < 1e-6, "{cost}");
    // Never past the most allowed (the longest of equal prices), and a
    // length that is cheapest stays.
    assert_eq!(prices.cheapest(12, 14).0, 14);
    assert_eq!(prices.cheapest(3, 32).0, 3);
    // The tuner's usual prices never fall as drafts grow.
    assert!(prices.verify(12) >= prices.verify(11));
    assert!(prices.verify(14) <= prices.verify(15));
}

#[test]
fn a_run_drafts_where_the_kernels_are_cheapest_and_ends_at_a_refusal() {
    let (mut costs, prices) = this_cpu();
    let mut tuner = Tuner::new(&costs);
    // A long match outside any run: a short probe.
    let probe = tuner
        .plan(0, &prices, Offer::lookup(32, LONG_MATCH), false, 32)
        .unwrap();
    assert!((Tuner::RUN_START..=4).contains(&probe.tokens), "{probe:?}");
    tuner.record(probe.source, probe.tokens, probe.tokens, &mut costs);
    // Kept whole: the run drafts 15 (16 rows), though lookup offered 9.
    let run = tuner
        .plan(3, &prices, Offer::lookup(9, LONG_MATCH), false, 32)
        .unwrap();
    assert_eq!(run.tokens, 15, "{run:?}");
    // Refused within the run: back to short probes, and the run's refusal
    // did not count against the source outside runs.
    tuner.record(run.source, run.tokens, 6, &mut costs);
    let next = tuner
        .plan(10, &prices, Offer::lookup(32, LONG_MATCH), false, 32)
        .unwrap();
    assert_eq!(next.tokens, probe.tokens, "{next:?}");
    // A one-token draft kept starts no run.
    tuner.record(next.source, 1, 1, &mut costs);
    let after_one = tuner
        .plan(12, &prices, Offer::lookup(32, LONG_MATCH), false, 32)
        .unwrap();
    assert!(after_one.tokens <= 4, "{after_one:?}");
    // Nor does a short match's draft kept whole (code's boilerplate).
    let mut tuner = Tuner::new(&costs);
    let short = Offer::lookup(32, LONG_MATCH - 1);
    tuner.record(Source::Ngram, 3, 3, &mut costs);
    let next = tuner.plan(3, &prices, short, false, 32);
    assert!(next.is_none_or(|d| d.tokens <= 3), "{next:?}");
}

#[test]
fn a_very_long_match_starts_a_run_even_while_probes_rest() {
    let (mut tuner, prices, produced) = resting();
    // Resting, a match just short of a run's is not drafted; a dozen
    // tokens repeating an earlier place starts a run at 16 rows.
    let almost = Offer::lookup(32, Tuner::RUN_MATCH - 1);
    assert_eq!(tuner.plan(produced, &prices, almost, false, 32), None);
    let copied = Offer::lookup(32, Tuner::RUN_MATCH);
    let run = tuner.plan(produced, &prices, copied, false, 32).unwrap();
    assert_eq!((run.source, run.tokens), (Source::NgramLong, 15));
}

#[test]
fn a_shorter_match_into_the_requests_own_text_starts_a_run_while_probes_rest() {
    let (mut tuner, prices, produced) = resting();
    let matched = Tuner::GIVEN_RUN_MATCH;
    // The same match into the answer's own text stays at rest.
    let repeat = Offer::lookup(32, matched);
    assert_eq!(tuner.plan(produced, &prices, repeat, false, 32), None);
    let almost = Offer::given(32, matched - 1);
    assert_eq!(tuner.plan(produced, &prices, almost, false, 32), None);
    let copied = Offer::given(32, matched);
    let run = tuner.plan(produced, &prices, copied, false, 32).unwrap();
    assert_eq!((run.source, run.tokens), (Source::NgramLong, 15));
}

/// A tuner whose long-match probes were all refused until the source
/// rests, on this box on a day when small batches cost nearly a plain
/// step a row (4 rows 3.4 steps) and 16 rows 8.5: probes barely pay.
/// Also the prices and the tokens produced by then.
fn resting() -> (Tuner, Prices, u32) {
    let (mut costs, prices) = measured(&[
        (1, 30.6),
        (2, 59.1),
        (4, 102.5),
        (8, 225.3),
        (16, 260.1),
        (32, 473.1),
    ]);
    let mut tuner = Tuner::new(&costs);
    let long = Offer::lookup(32, LONG_MATCH);
    let mut produced = 0;
    while let Some(probe) = tuner.plan(produced, &prices, long, false, 32) {
        assert!(probe.tokens <= 3, "{probe:?}");
        tuner.record(probe.source, probe.tokens, 0, &mut costs);
        produced += 1;
        assert!(produced < 10, "the probes never rest");
    }
    (tuner, prices, produced)
}

#[test]
fn a_draft_pays_for_the_rows_it_adds_beside_other_slots_drafts() {
    let (costs, _) = this_cpu();
    let share = costs.target.predict(2, 0.0).unwrap() / 2.0;
    // Two slots generating: the first one's lookup draft is lengthened to
    // 14, filling the batch to 16 rows, the size measured to cost least.
    let first = costs.prices(2, 2);
    assert_eq!(first.cheapest(12, 32).0, 14);
    // The second is priced on top of those 16 rows: its draft is
    // lengthened to fill the batch to 32 (the next size measured), not to
    // the 14 that would make an unmeasured 30.
    let second = costs.prices_beside(2, 14, 2);
    assert_eq!(second.cheapest(12, 32).0, 16);
    // And each token it adds is priced where the batch already stands.
    let added = |from: usize, to: usize| {
        (costs.target.predict(to, 0.0).unwrap() - costs.target.predict(from, 0.0).unwrap()) / share
    };
    assert!(
        (second.verify(4) - added(16, 20)).abs() < 1e-9,
        "{second:?}"
    );
    assert!((first.verify(4) - added(2, 6)).abs() < 1e-9, "{first:?}");
    // Nothing committed: the usual prices.
    assert_eq!(costs.prices_beside(2, 0, 2), first);
}

#[test]
fn a_losing_draft_model_is_not_probed_while_catching_it_up_costs_more_than_resting() {
    // As above, but the draft model's cache is 40 plain tokens' work behind
    // the text: a tenth of a 16-token rest cannot pay for that, nor of the
    // 32-token one after it.
    let mut costs = Costs::new(1.0);
    let mut behind = Prices::linear(0.3, 0.5);
    behind.catch_up = 40.0;
    let mut tuner = Tuner::new(&costs);
    let drafted = (0..200)
        .filter(|&produced| {
            tuner
                .plan(produced, &behind, Offer::lookup(0, 0), true, 16)
                .is_some()
        })
        .count();
    assert_eq!(drafted, 0);
    // Caught up (a few tokens behind), the next probe is made.
    behind.catch_up = 0.5;
    let probe = (200..800)
        .find_map(|produced| tuner.plan(produced, &behind, Offer::lookup(0, 0), true, 16));
    assert_eq!(probe.map(|p| p.source), Some(Source::Model));
    // Catching up is no cost to a draft model that wins.
    let mut winning = Prices::linear(0.05, 0.05);
    winning.catch_up = 40.0;
    tuner.record(Source::Model, 16, 16, &mut costs);
    assert!(tuner
        .plan(900, &winning, Offer::lookup(0, 0), true, 16)
        .is_some());
}

#[test]
fn catching_up_is_priced_in_plain_tokens() {
    let mut costs = Costs::new(0.5);
    assert_eq!(costs.catch_up(1, 100), 0.0);
    for (rows, ms) in [(1, 30.0), (2, 50.0)] {
        costs.target.record(rows, ms / 1000.0);
    }
    for (tokens, ms) in [(1, 10.0), (4, 25.0)] {
        costs.draft.record(tokens, ms / 1000.0);
    }
    // 4 draft tokens take 25 ms, a plain token 30.
    assert!((costs.catch_up(1, 4) - 25.0 / 30.0).abs() < 1e-9);
    // Two generating: a plain token's share is 25 ms.
    assert!((costs.catch_up(2, 4) - 1.0).abs() < 1e-9);
    assert_eq!(costs.catch_up(1, 0), 0.0);
}

/// The prompt of the edit tests: `50` is a name the answer renames to
/// `60`; it recurs at index 10.
const RENAMED: [i32; 16] = [
    100, 101, 102, 103, 50, 104, 105, 106, 107, 108, 50, 109, 110, 111, 112, 113,
];

/// What the engine drafts for `text` (prompt then answer so far).
fn edited(edits: &mut Edits, text: &[i32], max: usize) -> Vec<Token> {
    let text = tokens(text);
    let found = ngram_draft(&text, 2, 16, max);
    edits.draft(&text, &found, max)
}

fn with_answer(answer: &[i32]) -> Vec<i32> {
    RENAMED.iter().chain(answer).copied().collect()
}

#[test]
fn a_rename_seen_once_is_drafted_where_the_old_name_recurs() {
    let mut edits = Edits::default();
    // Copying the prompt's start, lookup drafts the old name.
    let before = edited(&mut edits, &with_answer(&[100, 101, 102, 103]), 4);
    assert_eq!(before, tokens(&[50, 104, 105, 106]));
    // The answer wrote 60 there and copied on; the next long match picks
    // the prompt up again after the old name, so 50 → 60 is learnt and
    // made where 50 comes again.
    let text = with_answer(&[100, 101, 102, 103, 60, 104, 105, 106, 107]);
    assert_eq!(edited(&mut edits, &text, 4), tokens(&[108, 60, 109, 110]));
    // Without the edits, the same lookup drafts the old name.
    let plain = ngram_draft(&tokens(&text), 2, 16, 4).tokens;
    assert_eq!(plain, tokens(&[108, 50, 109, 110]));
}

/// Edits that learnt the rename 50 → 60, and the text after it, whose
/// draft (just made) is 108, 60, 109, 110.
fn renamed_once() -> (Edits, Vec<i32>) {
    let mut edits = Edits::default();
    edited(&mut edits, &with_answer(&[100, 101, 102, 103]), 4);
    let text = with_answer(&[100, 101, 102, 103, 60, 104, 105, 106, 107]);
    assert_eq!(edited(&mut edits, &text, 4), tokens(&[108, 60, 109, 110]));
    (edits, text)
}

#[test]
fn an_edit_whose_token_is_refused_is_forgotten() {
    let (mut edits, text) = renamed_once();
    // The target kept 108 and refused the edit's 60.
    edits.verified(1);
    assert_eq!(edited(&mut edits, &text, 4), tokens(&[108, 50, 109, 110]));
}

#[test]
fn a_refused_copied_token_keeps_the_edits() {
    let (mut edits, text) = renamed_once();
    // 108 itself refused: the edit's token was never judged.
    edits.verified(0);
    assert_eq!(edited(&mut edits, &text, 4), tokens(&[108, 60, 109, 110]));
}

#[test]
fn a_long_rewrite_is_not_learnt_as_an_edit() {
    let mut edits = Edits::default();
    edited(&mut edits, &with_answer(&[100, 101, 102, 103]), 4);
    // Nine tokens written where the prompt had one: a rewrite, not an edit.
    let written = [61, 62, 63, 64, 65, 66, 67, 68, 69];
    let answer: Vec<i32> = [100, 101, 102, 103]
        .iter()
        .chain(&written)
        .chain(&[104, 105, 106, 107])
        .copied()
        .collect();
    let text = with_answer(&answer);
    assert_eq!(edited(&mut edits, &text, 4), tokens(&[108, 50, 109, 110]));
}

#[test]
fn a_draft_copying_an_end_stops_there_unless_more_rows_cost_less() {
    // 16 rows cost less than 12 here, 4 rows far less than 16.
    let (_, prices) = measured(&[(1, 30.0), (4, 100.0), (12, 320.0), (16, 280.0)]);
    assert_eq!(prices.up_to_end(None, 15), 15);
    assert_eq!(prices.up_to_end(Some(20), 15), 15);
    assert_eq!(prices.up_to_end(Some(3), 15), 3);
    assert_eq!(prices.up_to_end(Some(11), 15), 15);
}
