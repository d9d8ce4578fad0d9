//! Stop strings over streamed text.

/// Finds stop strings in streamed text, holding back any tail that could be
/// the start of one so a stop string is never partly emitted.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    /// The stop string found, once one is.
    matched: Option<String>,
}

/// What to do after a piece of text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Emit this text (possibly empty) and keep going.
    Continue(String),
    /// Emit this text, then stop: a stop string was found.
    Stop(String),
}

impl StopMatcher {
    /// A matcher for these stop strings; empty strings are ignored.
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            matched: None,
        }
    }

    /// Feed a piece of generated text.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.held.push_str(text);
        if let Some((at, stop)) = self.earliest_match() {
            self.matched = Some(self.stops[stop].clone());
            self.held.truncate(at);
            return StopOutcome::Stop(std::mem::take(&mut self.held));
        }
        let keep = self.longest_partial_suffix();
        let emit_len = self.held.len() - keep;
        let rest = self.held.split_off(emit_len);
        StopOutcome::Continue(std::mem::replace(&mut self.held, rest))
    }

    /// The held-back text, once generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The stop string that ended the text, if one did.
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    /// Where the earliest stop string starts, and which it is.
    fn earliest_match(&self) -> Option<(usize, usize)> {
        self.stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at, i)))
            .min()
    }

    /// Length of the longest suffix of `held` that is a proper prefix of a stop string.
    fn longest_partial_suffix(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            for (len, _) in stop.char_indices().skip(1) {
                if len > best && self.held.ends_with(&stop[..len]) {
                    best = len;
                }
            }
        }
        best
    }
}

/// The index of `matched` among a request's `stop` strings.
pub fn stop_index(stops: &[String], matched: Option<&str>) -> Option<u8> {
    let matched = matched?;
    stops
        .iter()
        .position(|s| s == matched)
        .and_then(|i| u8::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut matcher = StopMatcher::new(&stops);
        let mut out = String::new();
        for piece in pieces {
            match matcher.push(piece) {
                StopOutcome::Continue(text) => out.push_str(&text),
                StopOutcome::Stop(text) => {
                    out.push_str(&text);
                    return (out, true);
                }
            }
        }
        out.push_str(&matcher.finish());
        (out, false)
    }

    #[test]
    fn stop_split_across_pieces_is_not_emitted() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), true)
        );
    }

    #[test]
    fn false_start_is_released() {
        assert_eq!(run(&["END"], &["an E", "xit"]), ("an Exit".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(
            run(&["world", "lo"], &["hello world"]),
            ("hel".into(), true)
        );
    }

    #[test]
    fn no_stops_passes_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&[""], &["a"]), ("a".into(), false));
    }

    #[test]
    fn multibyte_prefixes_are_held_on_char_boundaries() {
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
    }
}
