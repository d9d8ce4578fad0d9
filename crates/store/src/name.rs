//! Model names: `name[:tag]`, parsed once and validated.

use std::fmt;

/// A validated `name:tag`. Names are lowercase path-like segments
/// (`smollm2`, `library/qwen2.5`); the tag defaults to `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName {
    name: String,
    tag: String,
}

/// Why a string is not a valid model name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model name '{input}': {reason}")]
pub struct NameError {
    pub input: String,
    pub reason: &'static str,
}

const MAX_SEGMENTS: usize = 4;
const MAX_PART: usize = 128;

impl ModelName {
    /// Parse `name` or `name:tag`.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let fail = |reason| NameError {
            input: input.to_string(),
            reason,
        };
        let (name, tag) = match input.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => (input, "latest"),
        };
        if name.is_empty() {
            return Err(fail("the name is empty"));
        }
        let segments: Vec<&str> = name.split('/').collect();
        if segments.len() > MAX_SEGMENTS {
            return Err(fail("too many '/' segments"));
        }
        for segment in &segments {
            check_part(segment).map_err(fail)?;
        }
        check_part(tag).map_err(|_| fail("the tag must be letters, digits, '.', '_' or '-'"))?;
        Ok(Self {
            name: name.to_ascii_lowercase(),
            tag: tag.to_string(),
        })
    }

    /// The part before the colon.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The part after the colon.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// A segment is 1–128 of `[A-Za-z0-9._-]`, starting with a letter or digit,
/// so `.`, `..` and hidden files can never appear in a path.
fn check_part(part: &str) -> Result<(), &'static str> {
    if part.is_empty() || part.len() > MAX_PART {
        return Err("each part must be 1 to 128 characters");
    }
    let mut chars = part.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err("each part must start with a letter or digit");
    }
    if !part
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("only letters, digits, '.', '_', '-' and '/' are allowed");
    }
    Ok(())
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = ModelName::parse(input)
            .map(|n| n.to_string())
            .map_err(|e| e.reason);
        match expected {
            Ok(name) => assert_eq!(got, Ok(name.to_string()), "{input}"),
            Err(fragment) => {
                let reason = got.expect_err(input);
                assert!(reason.contains(fragment), "{input}: {reason}");
            }
        }
    }

    #[test]
    fn names() {
        check("smollm2", Ok("smollm2:latest"));
        check("SmolLM2:Q4_1", Ok("smollm2:Q4_1"));
        check(
            "library/qwen2.5:32b-instruct-q8_0",
            Ok("library/qwen2.5:32b-instruct-q8_0"),
        );
        check("", Err("empty"));
        check("../etc/passwd", Err("start with"));
        check("a/../b", Err("start with"));
        check("a//b", Err("1 to 128"));
        check("a:..", Err("tag"));
        check("a b", Err("only letters"));
        check("/abs", Err("1 to 128"));
        check("a/b/c/d/e", Err("segments"));
    }
}
