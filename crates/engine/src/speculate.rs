//! Speculative decoding's model-free parts: proposing tokens from n-grams
//! of the text so far, judging drafted tokens so the output is what the
//! target alone would give, and choosing how many tokens to draft from what
//! drafting and verifying have been measured to cost.
//!
//! Pure functions and small state over token ids, probabilities and
//! seconds. The decode loop that drafts, verifies in one batch and rolls
//! back KV caches is `shelf-engine-llama`'s; [`crate::fake`] runs the same
//! judging on known distributions. Knows no model and no C++.

use crate::{SpeculativeConfig, Token};

/// A prompt-lookup proposal: what followed an earlier repeat of the
/// text's last tokens, and how many of them the repeat matched (a longer
/// match is likelier to go on repeating).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    pub tokens: Vec<Token>,
    pub matched: usize,
    /// Where in the history `tokens` were copied from.
    pub from: usize,
}

/// Matches at least this long are long: text being copied, whose drafts
/// are kept far more often than a short match's.
pub const LONG_MATCH: usize = 4;

/// Draft up to `max_draft` tokens by prompt lookup: find the earlier place
/// where the most of `history`'s last tokens (from `min_n` up to `max_n`)
/// occurred, the latest of the longest, and propose what followed it.
/// Empty when nothing repeats.
///
/// One pass over the history: every earlier occurrence of the last token
/// is extended backwards while it matches.
pub fn ngram_draft(history: &[Token], min_n: usize, max_n: usize, max_draft: usize) -> Lookup {
    let Some((&last, before)) = history.split_last() else {
        return Lookup::default();
    };
    let mut best: Option<(usize, usize)> = None;
    for end in (0..before.len()).rev() {
        if before[end] != last {
            continue;
        }
        let matched = 1
            + (1..max_n)
                .take_while(|&back| {
                    end >= back && history[end - back] == before[before.len() - back]
                })
                .count();
        if matched >= min_n.max(1) && best.is_none_or(|(n, _)| matched > n) {
            best = Some((matched, end + 1));
            if matched >= max_n {
                break;
            }
        }
    }
    let Some((matched, after)) = best.filter(|_| max_draft > 0) else {
        return Lookup::default();
    };
    let end = (after + max_draft).min(history.len());
    Lookup {
        tokens: history[after..end].to_vec(),
        matched,
        from: after,
    }
}

/// The edits an answer made to text it copies, learnt so that later
/// copies of that text make them too: a renamed variable or a changed
/// value recurs wherever the old text does, and a plain lookup's draft is
/// refused at each place.
///
/// Each long lookup match aligns the answer with the text it copies. When
/// the next one finds the answer copying the same text again a few tokens
/// further on, what the answer wrote where it left the copy replaces what
/// it skipped. An edit whose own tokens are refused is forgotten.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edits {
    learnt: Vec<Edit>,
    /// The last long match's alignment: the text index it copies from,
    /// and the index where the answer goes on.
    anchor: Option<(usize, usize)>,
    /// For each token of the last draft, the learnt edit it comes from
    /// (empty when no edit was made).
    origins: Vec<Option<usize>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Edit {
    old: Vec<Token>,
    new: Vec<Token>,
}

impl Edits {
    /// Longest side of an edit: longer stretches are rewrites, not edits.
    const LONGEST: usize = 8;
    /// Most edits a request keeps, so applying them stays cheap.
    const MOST: usize = 16;

    /// The draft for lookup's `found` in `text`: its source copied again
    /// from `found.from` with the learnt edits made, up to `max` tokens.
    /// A long match first teaches the edit it closes.
    pub fn draft(&mut self, text: &[Token], found: &Lookup, max: usize) -> Vec<Token> {
        self.origins.clear();
        if found.tokens.is_empty() {
            return Vec::new();
        }
        if found.matched >= LONG_MATCH {
            self.learn(text, found);
            self.anchor = Some((found.from, text.len()));
        }
        // Nothing learnt (most requests): lookup's own proposal is the draft.
        if self.learnt.is_empty() {
            return found.tokens.clone();
        }
        let mut tokens = Vec::with_capacity(max);
        let mut at = found.from;
        while tokens.len() < max && at < text.len() {
            match self
                .learnt
                .iter()
                .position(|e| text[at..].starts_with(&e.old))
            {
                Some(e) => {
                    let edit = &self.learnt[e];
                    tokens.extend_from_slice(&edit.new);
                    self.origins
                        .extend(std::iter::repeat_n(Some(e), edit.new.len()));
                    at += edit.old.len();
                }
                None => {
                    tokens.push(text[at]);
                    self.origins.push(None);
                    at += 1;
                }
            }
        }
        tokens.truncate(max);
        self.origins.truncate(max);
        tokens
    }

    /// After the last draft was judged and `kept` of its tokens kept: an
    /// edit whose token was refused is wrong here, and is forgotten.
    pub fn verified(&mut self, kept: usize) {
        if let Some(&Some(e)) = self.origins.get(kept) {
            self.learnt.remove(e);
        }
        self.origins.clear();
    }

    /// From the last alignment, follow the copy (and the edits already
    /// learnt) to where the answer left it; if `found`'s match picks the
    /// same text up again within [`Self::LONGEST`] tokens, learn the edit.
    fn learn(&mut self, text: &[Token], found: &Lookup) {
        let Some((mut source, mut answer)) = self.anchor else {
            return;
        };
        let source_end = found.from.saturating_sub(found.matched);
        let answer_end = text.len().saturating_sub(found.matched);
        while answer < answer_end && source < source_end {
            if text[source] == text[answer] {
                (source, answer) = (source + 1, answer + 1);
                continue;
            }
            let known = self
                .learnt
                .iter()
                .find(|e| text[source..].starts_with(&e.old) && text[answer..].starts_with(&e.new));
            match known {
                Some(e) => (source, answer) = (source + e.old.len(), answer + e.new.len()),
                None => break,
            }
        }
        if answer >= answer_end || source > source_end {
            return;
        }
        let old = &text[source..source_end];
        let new = &text[answer..answer_end];
        let sizes = 1..=Self::LONGEST;
        if !sizes.contains(&old.len()) || !sizes.contains(&new.len()) || old == new {
            return;
        }
        if self.learnt.len() < Self::MOST && !self.learnt.iter().any(|e| e.old == old) {
            self.learnt.push(Edit {
                old: old.to_vec(),
                new: new.to_vec(),
            });
        }
    }
}

/// Continue `draft`, proposed to follow `text`, with what followed the
/// latest of the longest earlier repeats of its last tokens (as
/// [`ngram_draft`] finds them), a one-token repeat included,
/// until it holds `max` tokens or nothing repeats. For drafts padded to a
/// fixed length, whose every place costs the same: a weak guess is worth
/// more there than filler. (A draft stops short when its source reaches
/// the end of the text, as when a list repeats its own last lines.)
pub fn ngram_extend(text: &[Token], draft: &mut Vec<Token>, longest: usize, max: usize) {
    let mut all: Vec<Token> = text.iter().chain(draft.iter()).copied().collect();
    while draft.len() < max {
        let more = ngram_draft(&all, 1, longest, max - draft.len()).tokens;
        if more.is_empty() {
            return;
        }
        all.extend_from_slice(&more);
        draft.extend(more);
    }
}

/// Drafting in runs, for a backend where a step of a new shape costs
/// several steps (CUDA replays a captured graph only while the batch keeps
/// its shape, and captures again after a change): a request starts drafting
/// on a long match (text being copied), then drafts padded drafts every
/// step, however little they find, until [`Runs::LEAVE_AFTER`] in a row
/// keep nothing.
///
/// Measured on an H100 with SmolLM2 (docs/benchmarks.md): a plain step
/// takes 1.1 ms and a padded 8-row one 1.6 ms once settled, but each change
/// of shape costs two steps of about 3.1 ms, so dropping to plain decode
/// and back costs what about 14 fruitless padded steps do. Replaying the
/// bench tasks' answers with these costs put leaving after 8 and after 16
/// within 2% of each other, and both far ahead of deciding step by step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runs {
    drafting: bool,
    /// Drafting steps in a row that kept nothing.
    fruitless: u32,
}

impl Runs {
    pub const LEAVE_AFTER: u32 = 8;

    /// Whether to draft this step, given how long a match the lookup found
    /// and how many tokens it offered.
    pub fn plan(&mut self, matched: usize, offered: usize) -> bool {
        if !self.drafting && offered > 0 && matched >= LONG_MATCH {
            self.drafting = true;
            self.fruitless = 0;
        }
        self.drafting
    }

    /// Learn from a drafting step that kept `kept` tokens.
    pub fn record(&mut self, kept: usize) {
        self.fruitless = if kept > 0 {
            0
        } else {
            self.fruitless.saturating_add(1)
        };
        if self.fruitless >= Self::LEAVE_AFTER {
            self.drafting = false;
        }
    }
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
pub fn draw(probs: &Probs, u: f64) -> Option<Token> {
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

/// What the target makes of one drafted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    Kept,
    /// Refused; this token, drawn from the residual, takes its place.
    Replaced(Token),
}

/// Speculative sampling (Leviathan et al. 2023; Chen et al. 2023) for one
/// drafted token: kept with chance min(1, p(x)/q(x)); refused, the target's
/// token is drawn from the residual max(0, p − q), renormalised. Judging
/// drafted tokens in order this way, and drawing from the target's next
/// distribution when all are kept, makes the output distributed exactly as
/// sampling the target alone.
///
/// `p` is the target's distribution at the token's position; `q` the one
/// the token was drawn from, `None` for a deterministic draft (n-gram
/// lookup, or a draft model's arg-max), which is then one-hot. `uniform`
/// yields numbers in [0, 1). `None` only when `p` is empty.
pub fn judge(
    token: Token,
    p: &Probs,
    q: Option<&Probs>,
    uniform: &mut impl FnMut() -> f64,
) -> Option<Judged> {
    let pt = f64::from(prob(p, token));
    let qt = q.map_or(1.0, |q| f64::from(prob(q, token)));
    if qt > 0.0 && uniform() < (pt / qt).min(1.0) {
        return Some(Judged::Kept);
    }
    let residual: Vec<(Token, f32)> = p
        .iter()
        .map(|&(t, pt)| {
            let qt = match q {
                Some(q) => prob(q, t),
                None if t == token => 1.0,
                None => 0.0,
            };
            (t, (pt - qt).max(0.0))
        })
        .collect();
    // p ≤ q everywhere only happens when p = q, which always keeps; fall
    // back to p itself against rounding.
    draw(&residual, uniform())
        .or_else(|| draw(p, uniform()))
        .map(Judged::Replaced)
}

/// [`judge`] over a whole draft: `target[i]` is the target's distribution
/// after the first `i` drafted tokens (one more than `drafted`), `draft[i]`
/// the one `drafted[i]` was drawn from.
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
        let q = draft.map(|d| d[i]);
        match judge(token, target[i], q, &mut uniform)? {
            Judged::Kept => continue,
            Judged::Replaced(next) => return Some(Verdict { accepted: i, next }),
        }
    }
    let next = draw(target[drafted.len()], uniform())?;
    Some(Verdict {
        accepted: drafted.len(),
        next,
    })
}

/// Where a step's drafted tokens come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Prompt lookup on a short match: free to make.
    Ngram,
    /// Prompt lookup on a long match ([`LONG_MATCH`]): text being copied.
    NgramLong,
    /// The draft model: one draft decode per token.
    Model,
}

impl Source {
    fn is_lookup(self) -> bool {
        matches!(self, Self::Ngram | Self::NgramLong)
    }

    /// Its place in per-source tables.
    fn index(self) -> usize {
        self as usize
    }
}

/// Expected tokens a step yields with `k` drafted, each kept with chance
/// `rate` once the ones before it were: 1 + a + a² + … + a^k (the target's
/// own token included).
pub fn expected_tokens(rate: f64, k: usize) -> f64 {
    let a = rate.clamp(0.0, 1.0);
    (0..=k).map(|i| a.powi(i as i32)).sum()
}

/// How often drafted tokens are kept, as the per-token chance of the
/// geometric model: kept tokens are successes, a step's first refusal a
/// failure (tokens after it are never judged). Counts decay so the rate
/// follows the recent text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acceptance {
    kept: f64,
    refused: f64,
    /// The rate before anything is seen, worth a couple of steps.
    prior: f64,
}

impl Acceptance {
    /// Weight of a step's counts after each later step.
    const DECAY: f64 = 0.9;
    /// Steps the prior is worth.
    const PRIOR_WEIGHT: f64 = 2.0;

    /// Starting at 0.6 (a draft model's or a short match's, roughly).
    pub const fn new() -> Self {
        Self::starting_at(0.6)
    }

    pub const fn starting_at(prior: f64) -> Self {
        Self {
            kept: 0.0,
            refused: 0.0,
            prior,
        }
    }

    /// Starting at `prior` as if `tokens` drafted tokens had been judged
    /// at that rate: a prior that fades as counts decay, where steps judge
    /// many tokens each.
    pub fn seeded(prior: f64, tokens: f64) -> Self {
        Self {
            kept: prior * tokens,
            refused: (1.0 - prior) * tokens,
            prior,
        }
    }

    /// The chance each drafted token is kept.
    pub fn rate(&self) -> f64 {
        let (prior_kept, prior_refused) = (
            self.prior * Self::PRIOR_WEIGHT,
            (1.0 - self.prior) * Self::PRIOR_WEIGHT,
        );
        (self.kept + prior_kept) / (self.kept + self.refused + prior_kept + prior_refused)
    }

    /// Learn from a step that drafted `drafted` tokens and kept `kept`.
    pub fn record(&mut self, drafted: usize, kept: usize) {
        self.record_decaying(drafted, kept, Self::DECAY);
    }

    fn record_decaying(&mut self, drafted: usize, kept: usize, decay: f64) {
        self.kept = self.kept * decay + kept as f64;
        self.refused = self.refused * decay + f64::from(u8::from(kept < drafted));
    }
}

impl Default for Acceptance {
    fn default() -> Self {
        Self::new()
    }
}

/// The least-squares line seconds = a + b · tokens, with exponential
/// forgetting so it follows the machine's present load; its slope carries
/// a [`CostCurve`] past the sizes it has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CostLine {
    w: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
}

impl CostLine {
    const FORGET: f64 = 0.95;

    /// Note that a decode of `tokens` tokens took `seconds`.
    fn record(&mut self, tokens: usize, seconds: f64) {
        let (x, y) = (tokens as f64, seconds);
        let f = Self::FORGET;
        self.w = self.w * f + 1.0;
        self.sx = self.sx * f + x;
        self.sy = self.sy * f + y;
        self.sxx = self.sxx * f + x * x;
        self.sxy = self.sxy * f + x * y;
    }

    /// Seconds per extra token, once decodes of different sizes were seen.
    fn slope(&self) -> Option<f64> {
        if self.w <= 0.0 {
            return None;
        }
        let mx = self.sx / self.w;
        let var = self.sxx / self.w - mx * mx;
        // Sizes must really differ (about one token's spread) to tell a
        // slope from noise.
        (var > 0.2).then(|| ((self.sxy / self.w - mx * self.sy / self.w) / var).max(0.0))
    }
}

/// Seconds a decode takes against the tokens in its batch: the recent mean
/// of each size seen, read between sizes along straight lines and past
/// them along the least-squares line. Decode cost is not a line: on a CPU
/// the first extra row costs more than later ones (matrix-vector kernels
/// give way to matrix-matrix ones), and a line through long drafts would
/// make short ones look cheap.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostCurve {
    /// `(tokens, weight, weighted seconds)`, by tokens.
    sizes: Vec<(usize, f64, f64)>,
    line: CostLine,
}

impl CostCurve {
    const FORGET: f64 = 0.8;

    /// Note that a decode of `tokens` tokens took `seconds`.
    pub fn record(&mut self, tokens: usize, seconds: f64) {
        self.line.record(tokens, seconds);
        let at = self.sizes.partition_point(|s| s.0 < tokens);
        match self.sizes.get_mut(at) {
            Some(size) if size.0 == tokens => {
                size.1 = size.1 * Self::FORGET + 1.0;
                size.2 = size.2 * Self::FORGET + seconds;
            }
            _ => self.sizes.insert(at, (tokens, 1.0, seconds)),
        }
    }

    /// Seconds a decode of `tokens` tokens takes; `slope` (seconds per
    /// token) stands in where no line is known yet.
    pub fn predict(&self, tokens: usize, slope: f64) -> Option<f64> {
        let mean = |s: &(usize, f64, f64)| s.2 / s.1;
        let at = self.sizes.partition_point(|s| s.0 < tokens);
        let slope = self.line.slope().unwrap_or(slope);
        let seconds = match (
            at.checked_sub(1).and_then(|i| self.sizes.get(i)),
            self.sizes.get(at),
        ) {
            (_, Some(upper)) if upper.0 == tokens => mean(upper),
            (Some(lower), Some(upper)) => {
                let along = (tokens - lower.0) as f64 / (upper.0 - lower.0) as f64;
                mean(lower) + along * (mean(upper) - mean(lower))
            }
            (Some(lower), None) => mean(lower) + slope * (tokens - lower.0) as f64,
            (None, Some(upper)) => mean(upper) - slope * (upper.0 - tokens) as f64,
            (None, None) => return None,
        };
        Some(seconds.max(0.0))
    }

    /// Seconds a decode of `tokens` tokens costs at most, padded out to
    /// the next size measured: sizes between two measured ones are not
    /// read along a line, which would hide where kernels favour the larger
    /// (a CPU's take 16 rows for less than 13).
    pub fn padded(&self, tokens: usize, slope: f64) -> Option<f64> {
        let at = self.sizes.partition_point(|s| s.0 < tokens);
        match self.sizes.get(at) {
            Some(size) => Some((size.2 / size.1).max(0.0)),
            None => self.predict(tokens, slope),
        }
    }
}

/// Costs of drafting for one slot in one step, in units of the plain
/// decode step's share of that slot (1 = one plain token's time).
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    /// What verifying k drafted tokens adds to the step, for k = 0 up to
    /// [`SpeculativeConfig::MAX_DRAFT`]; never falling as k grows.
    verify: Vec<f64>,
    /// The same, each length priced as the next measured size, which may
    /// cost less than a shorter one: a CPU's matrix kernels take 16 rows
    /// for less than 13.
    measured: Vec<f64>,
    /// Each token the draft model makes.
    pub draft: f64,
    /// Catching the draft model's cache up with the text before it can
    /// draft (after plain steps it fell behind): paid once, so a probe of
    /// a losing draft model is skipped while this would take more than
    /// [`Tuner::PROBE_SHARE`] of the rest it ends.
    pub catch_up: f64,
}

impl Prices {
    /// Before anything is measured: verification at half a decode (a CPU's
    /// figure; a GPU's is far lower and is learnt at the first draft).
    pub const UNKNOWN_VERIFY: f64 = 0.5;
    /// Where steps keep one shape (a GPU replaying its captured graph),
    /// whose first drafting steps are not measured: a few dozen rows cost
    /// little more than one while decode is bound by reading the weights.
    pub const UNKNOWN_VERIFY_STEADY: f64 = 0.02;

    /// Every verified token at the same price.
    pub fn linear(verify: f64, draft: f64) -> Self {
        let price = |k: usize| k as f64 * verify;
        Self::from_fns(price, price, draft)
    }

    /// Verifying k tokens at `verify(k)`, made non-decreasing, or at
    /// `padded(k)` where the draft may be lengthened.
    fn from_fns(verify: impl Fn(usize) -> f64, padded: impl Fn(usize) -> f64, draft: f64) -> Self {
        let lengths = 0..=SpeculativeConfig::MAX_DRAFT as usize;
        let measured = lengths.clone().map(padded).collect();
        let mut most = 0.0f64;
        let verify = lengths
            .map(|k| {
                most = most.max(verify(k));
                most
            })
            .collect();
        Self {
            verify,
            measured,
            draft,
            catch_up: 0.0,
        }
    }

    /// What verifying `k` drafted tokens adds.
    pub fn verify(&self, k: usize) -> f64 {
        if let Some(&cost) = self.verify.get(k) {
            return cost;
        }
        let last = self.verify.len().saturating_sub(1);
        let most = self.verify.last().copied().unwrap_or(0.0);
        most + (k - last) as f64 * most / last.max(1) as f64
    }

    /// The draft length from `k` up to `max` whose verification adds
    /// least (the longest of equals: a free guess more), and what it adds:
    /// a lookup draft can be lengthened at no cost where the kernels favour
    /// a larger batch.
    pub fn cheapest(&self, k: usize, max: usize) -> (usize, f64) {
        (k..=max)
            .map_while(|j| self.measured.get(j).map(|&cost| (j, cost)))
            .fold(None, |best: Option<(usize, f64)>, next| match best {
                Some(best) if best.1 < next.1 => Some(best),
                _ => Some(next),
            })
            .unwrap_or((k, self.verify(k)))
    }

    /// How much of a `len`-token lookup draft to verify when it copies an
    /// end of generation at `end`: the row before the end predicts it and
    /// no row from it on can be kept, so those rows go unless a longer
    /// batch costs less to verify.
    pub fn up_to_end(&self, end: Option<usize>, len: usize) -> usize {
        match end {
            Some(end) if end < len => self.cheapest(end, len).0,
            _ => len,
        }
    }
}

/// What drafting and verifying cost on one loaded model, learnt from its
/// own decodes, and the acceptance its requests have seen: each new
/// request starts from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Costs {
    /// Target decodes without prompt tokens: seconds against tokens.
    pub target: CostCurve,
    /// Draft decodes: seconds against tokens.
    pub draft: CostCurve,
    /// Draft size over target size: the draft's price before it is measured.
    pub draft_ratio: f64,
    /// What each verified token adds, in plain tokens, before it is measured.
    pub unknown_verify: f64,
    pub acceptance: Acceptances,
    /// Each source's next rest length, carried from request to request: a
    /// source that kept losing on this model's recent requests starts a
    /// new one resting longer, so short answers do not pay for a probe
    /// every few tokens.
    rest_lengths: [u32; 3],
}

/// Acceptance by source, indexed by [`Source::index`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acceptances([Acceptance; 3]);

impl Acceptances {
    pub fn of(&mut self, source: Source) -> &mut Acceptance {
        &mut self.0[source.index()]
    }

    pub fn rate(&self, source: Source) -> f64 {
        self.0[source.index()].rate()
    }

    /// Fresh counts starting at these rates: a request starts from what
    /// the model's earlier requests saw, but only as a prior worth a couple
    /// of steps, so its own text decides quickly (after a long copying
    /// answer, a model-level count would take dozens of refused drafts to
    /// unlearn on prose).
    pub fn as_priors(&self) -> Self {
        Self(self.0.map(|seen| Acceptance::starting_at(seen.rate())))
    }
}

impl Default for Acceptances {
    /// A short match and a draft model at 0.6; a long match, text being
    /// copied, at 0.9.
    fn default() -> Self {
        let mut all = [Acceptance::new(); 3];
        all[Source::NgramLong.index()] = Acceptance::starting_at(0.9);
        Self(all)
    }
}

impl Costs {
    pub fn new(draft_ratio: f64) -> Self {
        Self {
            target: CostCurve::default(),
            draft: CostCurve::default(),
            draft_ratio,
            unknown_verify: Prices::UNKNOWN_VERIFY,
            acceptance: Acceptances::default(),
            rest_lengths: [Rest::NONE.length; 3],
        }
    }

    /// What catching the draft model's cache up by `tokens` costs, in
    /// plain tokens of a step holding `rows` (0 until both are measured).
    pub fn catch_up(&self, rows: usize, tokens: usize) -> f64 {
        let rows = rows.max(1);
        let plain = self.target.predict(rows, 0.0).filter(|s| *s > 0.0);
        match (plain, self.draft.predict(tokens, 0.0)) {
            (Some(plain), Some(draft)) if tokens > 0 => draft / (plain / rows as f64),
            _ => 0.0,
        }
    }

    /// Prices for a slot in a step whose plain batch holds `rows` tokens,
    /// with `drafting` slots drafting from the model.
    pub fn prices(&self, rows: usize, drafting: usize) -> Prices {
        self.prices_beside(rows, 0, drafting)
    }

    /// As [`Costs::prices`], after other slots' drafts put `committed` more
    /// tokens in the batch: a draft pays for the rows it adds on top of
    /// theirs. (Priced alone, two slots each drafting up to a CPU's cheap
    /// 16 rows made 30-row steps, and speculating with two requests at once
    /// ran at 0.83x plain decode.)
    pub fn prices_beside(&self, rows: usize, committed: usize, drafting: usize) -> Prices {
        let rows = rows.max(1);
        let Some(plain) = self.target.predict(rows, 0.0).filter(|s| *s > 0.0) else {
            return Prices::linear(self.unknown_verify, self.draft_ratio);
        };
        let share = plain / rows as f64;
        let stand_in = self.unknown_verify * share;
        let drafting = drafting.max(1);
        let draft = self
            .draft
            .predict(drafting, 0.0)
            .map_or(self.draft_ratio, |s| s / drafting as f64 / share);
        let base = rows + committed;
        let before = match committed {
            0 => plain,
            _ => self.target.predict(base, stand_in).unwrap_or(plain),
        };
        let price = |seconds: Option<f64>| (seconds.unwrap_or(before) - before).max(0.0) / share;
        Prices::from_fns(
            |k| price(self.target.predict(base + k, stand_in)),
            |k| price(self.target.padded(base + k, stand_in)),
            draft,
        )
    }
}

/// Speed with `k` drafted at `rate`, drafting and verifying them costing
/// `cost(k)`, relative to plain decode (above 1 is faster).
fn gain(rate: f64, k: usize, cost: impl Fn(usize) -> f64) -> f64 {
    expected_tokens(rate, k) / (1.0 + cost(k))
}

/// The draft length with the best gain, up to `max`, and that gain.
fn best_length(rate: f64, max: usize, cost: impl Fn(usize) -> f64) -> (usize, f64) {
    (1..=max.max(1))
        .map(|k| (k, gain(rate, k, &cost)))
        .fold(
            (1, f64::MIN),
            |best, next| {
                if next.1 > best.1 {
                    next
                } else {
                    best
                }
            },
        )
}

/// What prompt lookup offers one step: how many tokens, from how long a
/// match, and whether they copy the request's own text (its prompt or
/// predicted output) rather than the answer's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offer {
    pub tokens: usize,
    pub matched: usize,
    pub given: bool,
}

#[cfg(test)]
impl Offer {
    /// An offer copying the answer's own earlier text.
    pub const fn lookup(tokens: usize, matched: usize) -> Self {
        Self {
            tokens,
            matched,
            given: false,
        }
    }

    /// An offer copying the request's own text.
    pub const fn given(tokens: usize, matched: usize) -> Self {
        Self {
            tokens,
            matched,
            given: true,
        }
    }
}

/// A step's drafting decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draft {
    pub source: Source,
    /// Most tokens to draft.
    pub tokens: usize,
}

/// One request's drafting policy: draft length from its recent acceptance
/// and the model's measured costs, and rests from each source while it
/// would be slower than plain decode, probing again after each rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuner {
    /// This request's acceptance by source.
    seen: Acceptances,
    /// Each source's rest, indexed by [`Source::index`].
    rests: [Rest; 3],
    /// The last lookup draft's length when it was kept whole, else 0: the
    /// request is copying text, in a run.
    streak: usize,
    /// Acceptance of lookup drafts made within runs.
    run: Acceptance,
    /// The last draft planned was made within a run.
    in_run: bool,
}

/// A source's rest from drafting while it loses.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rest {
    /// Tokens produced before which it rests.
    until: u32,
    /// The next rest's length; doubles while probes keep losing.
    length: u32,
    /// The rest just ended: its next drafting step is a probe.
    probe: bool,
}

impl Rest {
    const NONE: Self = Self {
        until: 0,
        length: 16,
        probe: false,
    };
    const LONGEST: u32 = 512;
    /// The longest rest a request inherits, so each still probes.
    const CARRIED: u32 = 128;

    /// A losing step: whether to draft anyway, as the probe after a rest;
    /// otherwise the source rests.
    fn lose(&mut self, produced: u32) -> bool {
        if std::mem::take(&mut self.probe) {
            return true;
        }
        self.until = produced.saturating_add(self.length);
        self.length = (self.length * 2).min(Self::LONGEST);
        self.probe = true;
        false
    }
}

impl Tuner {
    /// Within a run, the chance each drafted token is kept before any run
    /// is seen, as if seen on [`Self::RUN_PRIOR_TOKENS`] tokens: copied
    /// text goes on for a few dozen tokens, and each run ends in a refusal.
    const RUN_PRIOR: f64 = 0.95;
    const RUN_PRIOR_TOKENS: f64 = 20.0;
    /// Weight of a run draft's counts after each later one. A request
    /// holds few runs, each ending in a refusal, and forgetting those
    /// fast makes long copies look endless (drafts then outgrow the runs).
    const RUN_DECAY: f64 = 0.98;
    /// A whole-kept draft this long starts a run, where the lookup's match
    /// is long (text being copied): a one-token draft kept, or a short
    /// match (code's boilerplate), says little of what follows.
    const RUN_START: usize = 2;
    /// A lookup match this long starts a run without a probe: a dozen
    /// tokens repeating an earlier place is text being copied. Where small
    /// batches cost nearly a plain step a row, probes lose, their source
    /// rests, and without this a long copy went by decoded plainly.
    const RUN_MATCH: usize = 12;
    /// A match this long into the request's own text starts a run too:
    /// an answer that rewrites or quotes what it was given copies it at
    /// length, and picks it up again a few tokens after each change, while
    /// the answer's own repeats (code's boilerplate) say less. Replayed
    /// over the bench's answers, 6 lifted rewrites 3% against 12 and cost
    /// prose 1% (a restated question); 4 lost on both (matches into the
    /// instruction's wording).
    const GIVEN_RUN_MATCH: usize = 6;
    /// Most of a rest's time a probe may spend catching the draft model up
    /// with the text (a probe of a lookup costs nothing to prepare).
    const PROBE_SHARE: f64 = 0.1;
    /// Most tokens a lookup draft outside a run holds. Most refusals come
    /// where copying stops, and the draft after one is refused again more
    /// often than not, so it is kept short until a draft is kept whole.
    const PROBE_MOST: usize = 3;

    /// A request's tuner, starting from the acceptance the model has seen.
    pub fn new(costs: &Costs) -> Self {
        Self {
            seen: costs.acceptance.as_priors(),
            rests: costs.rest_lengths.map(|length| Rest {
                length,
                ..Rest::NONE
            }),
            streak: 0,
            run: Acceptance::seeded(Self::RUN_PRIOR, Self::RUN_PRIOR_TOKENS),
            in_run: false,
        }
    }

    /// What to draft after `produced` tokens: `lookup` is what prompt
    /// lookup offers, `model` says whether a draft model is there, and at
    /// most `max` may be drafted. `None`: decode plainly this step.
    pub fn plan(
        &mut self,
        produced: u32,
        prices: &Prices,
        lookup: Offer,
        model: bool,
        max: usize,
    ) -> Option<Draft> {
        let (offered, matched) = (lookup.tokens, lookup.matched);
        let copying =
            matched >= Self::RUN_MATCH || (lookup.given && matched >= Self::GIVEN_RUN_MATCH);
        let mut sources = Vec::with_capacity(2);
        if offered > 0 && max > 0 {
            let source = match matched >= LONG_MATCH {
                true => Source::NgramLong,
                false => Source::Ngram,
            };
            sources.push((source, offered.min(max), 0.0));
        }
        if model && max > 0 {
            sources.push((Source::Model, max, prices.draft));
        }
        let whole = max;
        let mut options: Vec<(Draft, f64, bool)> = sources
            .into_iter()
            .filter_map(|(source, max, draft)| {
                let cost = |k: usize| prices.verify(k) + k as f64 * draft;
                let in_run =
                    source == Source::NgramLong && (self.streak >= Self::RUN_START || copying);
                // A source that would lose even if every token were kept is
                // never tried, not even as a probe. A run drafts even while
                // its source rests: the rest is for the probes that lose.
                let resting = produced < self.rests[source.index()].until && !in_run;
                if resting || best_length(1.0, max, cost).1 < 1.0 {
                    return None;
                }
                // Outside a run a lookup draft is a probe: it may find the
                // copied text that a run then drafts at length.
                let max = match source.is_lookup() && !in_run {
                    true => max.min(Self::PROBE_MOST),
                    false => max,
                };
                let (tokens, g) = best_length(self.seen.rate(source), max, cost);
                let planned = (Draft { source, tokens }, g, false);
                match in_run {
                    true => Some(self.within_run(planned, prices, whole)),
                    false => Some(planned),
                }
            })
            .collect();
        options.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (draft, g, in_run) in options {
            let rest = &mut self.rests[draft.source.index()];
            let winning = g >= 1.0;
            if winning {
                *rest = Rest::NONE;
            }
            // The rest a probe ends is half the next one's length.
            let rested = f64::from(rest.length / 2);
            let catch_up = match draft.source {
                Source::Model => prices.catch_up,
                _ => 0.0,
            };
            if winning || (rest.lose(produced) && catch_up <= Self::PROBE_SHARE * rested) {
                self.in_run = in_run;
                return Some(draft);
            }
        }
        None
    }

    /// A lookup draft made within a run (after a whole one was kept, or on
    /// a dozen-token match): text being copied is kept in long runs, not
    /// token by token at a steady rate, so it is
    /// priced at the rate seen within runs, and lengthened (by weaker
    /// lookups, up to `max`) wherever a longer draft costs less to verify.
    /// `planned` is the draft at the source's usual rate, kept if better.
    fn within_run(
        &self,
        planned: (Draft, f64, bool),
        prices: &Prices,
        max: usize,
    ) -> (Draft, f64, bool) {
        let cost = |k: usize| prices.cheapest(k, max).1;
        let (tokens, g) = best_length(self.run.rate(), max, cost);
        if g <= planned.1 {
            return planned;
        }
        let tokens = prices.cheapest(tokens, max).0;
        let source = planned.0.source;
        (Draft { source, tokens }, g, true)
    }

    /// Whether the draft model should make one more token after `drafted`,
    /// given the product of its own probabilities for them: the chance the
    /// next is kept must pay for drafting and verifying it.
    pub fn draft_more(&self, confidence: f64, prices: &Prices, drafted: usize) -> bool {
        let next = prices.verify(drafted + 1) - prices.verify(drafted) + prices.draft;
        confidence * self.seen.rate(Source::Model) >= next
    }

    /// Learn from a step: `drafted` tokens from `source`, `kept` kept.
    pub fn record(&mut self, source: Source, drafted: usize, kept: usize, costs: &mut Costs) {
        if source.is_lookup() && std::mem::take(&mut self.in_run) {
            self.run.record_decaying(drafted, kept, Self::RUN_DECAY);
        } else {
            self.seen.of(source).record(drafted, kept);
            costs.acceptance.of(source).record(drafted, kept);
        }
        costs.rest_lengths = self.rests.map(|rest| rest.length.min(Rest::CARRIED));
        if source.is_lookup() {
            self.streak = if kept == drafted { drafted } else { 0 };
        }
    }
}

/// A small, fast generator (xorshift64*) for speculative sampling's draws:
/// uniform in [0, 1), seeded per request.
#[derive(Debug, Clone)]
pub struct Uniform(u64);

impl Uniform {
    pub fn new(seed: u64) -> Self {
        // SplitMix64 of the seed: nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)).max(1))
    }

    pub fn draw(&mut self) -> f64 {
        let mut s = self.0;
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        self.0 = s;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests;
