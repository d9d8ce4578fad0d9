//! Model names, parsed once into where the model comes from and where it is
//! kept: Ollama-style registry names and Hugging Face repositories.
//!
//! | written                                   | source                                  |
//! |-------------------------------------------|-----------------------------------------|
//! | `smollm2`, `llama3.2:3b`                  | default registry, namespace `library`   |
//! | `library/qwen2.5:32b-instruct-q8_0`       | default registry                        |
//! | `HOST[:PORT]/NAMESPACE/MODEL[:TAG]`       | that registry                           |
//! | `hf.co/OWNER/REPO[:QUANT]`                | Hugging Face, GGUF chosen by quant      |
//! | `hf.co/OWNER/REPO/FILE.gguf`              | Hugging Face, that file                 |
//!
//! A local name (`shelf import FILE --name mine`) is a registry name that was
//! never pulled, exactly as in Ollama. Registry names are lowercased; Hugging
//! Face owners and repositories keep their case (the store matches any case).

use std::fmt;

/// The registry a name without a host refers to.
pub const DEFAULT_REGISTRY: &str = "registry.ollama.ai";
/// The namespace a name without one refers to.
pub const DEFAULT_NAMESPACE: &str = "library";
/// The tag a name without one refers to.
pub const DEFAULT_TAG: &str = "latest";
/// The host segment under which Hugging Face models are kept.
pub const HF_HOST: &str = "hf.co";

/// A parsed, validated model name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelName {
    Registry(RegistryName),
    HuggingFace(HfName),
}

/// `HOST/NAMESPACE/MODEL:TAG` on an Ollama-style (OCI v2) registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryName {
    /// `host` or `host:port`, lowercase.
    pub host: String,
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

/// A Hugging Face repository and which GGUF in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HfName {
    /// Owner and repository as written: URLs and listings use them as they
    /// are; the store matches them regardless of case.
    pub owner: String,
    pub repo: String,
    pub target: HfTarget,
}

/// Which GGUF of a Hugging Face repository a name means.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HfTarget {
    /// No quant given: the repository's only GGUF, else its Q4_K_M.
    Default,
    /// A quant such as `Q4_K_M`, matched case-insensitively against file names.
    Quant(String),
    /// One file at the top of the repository (all its parts, if split).
    File(String),
}

/// Why a string is not a valid model name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid model name '{input}': {reason}")]
pub struct NameError {
    pub input: String,
    pub reason: &'static str,
}

const MAX_PART: usize = 128;

impl ModelName {
    /// Parse any of the forms in the module docs.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let fail = |reason| NameError {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(fail("the name is empty"));
        }
        if input.contains("://") {
            return Err(fail(
                "write the registry host without a scheme; --insecure allows plain http",
            ));
        }
        let segments: Vec<&str> = input.split('/').collect();
        let first = segments[0].to_ascii_lowercase();
        if segments.len() > 1 && (first == HF_HOST || first == "huggingface.co") {
            return parse_hf(&segments[1..]).map_err(fail);
        }
        parse_registry(&segments).map_err(fail)
    }

    /// Rebuild a name from its place under `manifests/`: `[host, namespace, model, tag]`.
    pub fn from_key(key: &[String]) -> Option<Self> {
        let [host, namespace, model, tag] = key else {
            return None;
        };
        let text = if host == HF_HOST {
            if tag.to_ascii_lowercase().ends_with(".gguf") {
                format!("{HF_HOST}/{namespace}/{model}/{tag}")
            } else {
                format!("{HF_HOST}/{namespace}/{model}:{tag}")
            }
        } else {
            format!("{host}/{namespace}/{model}:{tag}")
        };
        let parsed = Self::parse(&text).ok()?;
        (parsed.key() == key).then_some(parsed)
    }

    /// Where the manifest lives under `manifests/`: four safe path segments.
    pub fn key(&self) -> [String; 4] {
        match self {
            Self::Registry(r) => [
                r.host.clone(),
                r.namespace.clone(),
                r.model.clone(),
                r.tag.clone(),
            ],
            Self::HuggingFace(h) => {
                let tag = match &h.target {
                    HfTarget::Default => DEFAULT_TAG.to_string(),
                    HfTarget::Quant(q) => q.to_ascii_uppercase(),
                    HfTarget::File(f) => f.clone(),
                };
                [HF_HOST.to_string(), h.owner.clone(), h.repo.clone(), tag]
            }
        }
    }
}

fn parse_hf(rest: &[&str]) -> Result<ModelName, &'static str> {
    let (owner, repo, target) = match rest {
        [owner, repo_tag] => {
            let (repo, target) = match repo_tag.split_once(':') {
                Some((repo, quant)) if quant.eq_ignore_ascii_case(DEFAULT_TAG) => {
                    (repo, HfTarget::Default)
                }
                Some((repo, quant)) => {
                    check_part(quant)
                        .map_err(|_| "the quant must be letters, digits, '.', '_' or '-'")?;
                    (repo, HfTarget::Quant(quant.to_string()))
                }
                None => (*repo_tag, HfTarget::Default),
            };
            (*owner, repo, target)
        }
        [owner, repo, file] if file.to_ascii_lowercase().ends_with(".gguf") => {
            check_part(file)?;
            (*owner, *repo, HfTarget::File(file.to_string()))
        }
        [_, _, ..] => {
            return Err(
                "a Hugging Face name is hf.co/OWNER/REPO[:QUANT] or hf.co/OWNER/REPO/FILE.gguf",
            )
        }
        _ => return Err("a Hugging Face name needs OWNER/REPO"),
    };
    check_part(owner)?;
    check_part(repo)?;
    Ok(ModelName::HuggingFace(HfName {
        owner: owner.to_string(),
        repo: repo.to_string(),
        target,
    }))
}

fn parse_registry(segments: &[&str]) -> Result<ModelName, &'static str> {
    let (path, last) = segments.split_at(segments.len() - 1);
    let (model, tag) = match last[0].split_once(':') {
        Some((model, tag)) => (model, tag),
        None => (last[0], DEFAULT_TAG),
    };
    let (host, namespace) = match path {
        [] => (DEFAULT_REGISTRY, DEFAULT_NAMESPACE),
        [one] if looks_like_host(one) => (*one, DEFAULT_NAMESPACE),
        [namespace] => (DEFAULT_REGISTRY, *namespace),
        [host, namespace] => (*host, *namespace),
        _ => return Err("too many '/' segments: use HOST/NAMESPACE/MODEL:TAG"),
    };
    check_host(host)?;
    check_part(namespace)?;
    check_part(model)?;
    check_part(tag).map_err(|_| "the tag must be letters, digits, '.', '_' or '-'")?;
    Ok(ModelName::Registry(RegistryName {
        host: host.to_ascii_lowercase(),
        namespace: namespace.to_ascii_lowercase(),
        model: model.to_ascii_lowercase(),
        tag: tag.to_string(),
    }))
}

/// Docker's rule: a first segment with a dot or a port, or `localhost`, is a host.
fn looks_like_host(segment: &str) -> bool {
    segment.contains('.') || segment.contains(':') || segment == "localhost"
}

/// `host` or `host:port`: a hostname or IPv4 address, and a numeric port.
fn check_host(host: &str) -> Result<(), &'static str> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err("the registry port must be a number");
        }
    }
    check_part(name).map_err(|_| "the registry host must be a hostname or address")
}

/// A segment is 1–128 of `[A-Za-z0-9._-]`, starting with a letter or digit,
/// so `.`, `..` and hidden files can never appear in a path.
fn check_part(part: &str) -> Result<(), &'static str> {
    if part.is_empty() || part.len() > MAX_PART {
        return Err("each part must be 1 to 128 characters");
    }
    if !part.starts_with(|c: char| c.is_ascii_alphanumeric()) {
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

/// The short form: default registry and namespace are left out, as Ollama does.
impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Registry(r) => {
                if r.host != DEFAULT_REGISTRY {
                    write!(f, "{}/{}/", r.host, r.namespace)?;
                } else if r.namespace != DEFAULT_NAMESPACE {
                    write!(f, "{}/", r.namespace)?;
                }
                write!(f, "{}:{}", r.model, r.tag)
            }
            Self::HuggingFace(h) => {
                let [_, owner, repo, tag] = self.key();
                match h.target {
                    HfTarget::File(_) => write!(f, "{HF_HOST}/{owner}/{repo}/{tag}"),
                    _ => write!(f, "{HF_HOST}/{owner}/{repo}:{tag}"),
                }
            }
        }
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
    fn registry_names() {
        check("smollm2", Ok("smollm2:latest"));
        check("SmolLM2:Q4_1", Ok("smollm2:Q4_1"));
        check("llama3.2:3b", Ok("llama3.2:3b"));
        check(
            "library/qwen2.5:32b-instruct-q8_0",
            Ok("qwen2.5:32b-instruct-q8_0"),
        );
        check("someone/model:v1", Ok("someone/model:v1"));
        check(
            "127.0.0.1:5000/library/smollm2:135m",
            Ok("127.0.0.1:5000/library/smollm2:135m"),
        );
        check("localhost/tiny", Ok("localhost/library/tiny:latest"));
        check("registry.ollama.ai/library/smollm2:1", Ok("smollm2:1"));
    }

    #[test]
    fn hugging_face_names() {
        check(
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:q4_k_m",
            Ok("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
        );
        check("huggingface.co/a/b", Ok("hf.co/a/b:latest"));
        check("hf.co/a/b/Model.Q4_1.gguf", Ok("hf.co/a/b/Model.Q4_1.gguf"));
        let Ok(ModelName::HuggingFace(h)) = ModelName::parse("hf.co/Owner/Repo:Q8_0") else {
            panic!("not a hf name");
        };
        assert_eq!((h.owner.as_str(), h.repo.as_str()), ("Owner", "Repo"));
        assert_eq!(h.target, HfTarget::Quant("Q8_0".into()));
    }

    #[test]
    fn bad_names() {
        check("", Err("empty"));
        check("../etc/passwd", Err("host"));
        check("a/../b", Err("start with"));
        check("a//b", Err("1 to 128"));
        check("a:..", Err("tag"));
        check("a b", Err("only letters"));
        check("/abs", Err("1 to 128"));
        check("a/b/c/d", Err("too many"));
        check("hf.co/a", Err("OWNER/REPO"));
        check("hf.co/a/b/c", Err("FILE.gguf"));
        check("hf.co/a/b/..gguf", Err("start with"));
        check("hf.co/a/b:..x", Err("quant"));
        check("http://host/a/b", Err("scheme"));
        check("host:port/a/b", Err("port"));
    }

    #[test]
    fn keys_round_trip() {
        for text in [
            "smollm2",
            "someone/model:v1",
            "127.0.0.1:5000/library/smollm2:135m",
            "hf.co/Owner/Repo:q4_k_m",
            "hf.co/Owner/Repo",
            "hf.co/Owner/Repo/file-Q8_0.gguf",
        ] {
            let name = ModelName::parse(text).unwrap();
            let key = name.key().to_vec();
            let back = ModelName::from_key(&key).unwrap();
            assert_eq!(back.key(), name.key(), "{text}");
        }
        let traversal = ["..".to_string(), "a".into(), "b".into(), "c".into()];
        assert!(ModelName::from_key(&traversal).is_none());
    }
}
