//! Hugging Face: choose the GGUF files of a repository, then fetch them
//! through `/{repo}/resolve/main/{file}` as `huggingface_hub` does.
//!
//! The file list comes from `/api/models/{repo}/tree/main` (falling back to
//! `/api/models/{repo}`). The expected sha256 comes from the listing's LFS
//! object id, or from the `X-Linked-Etag` / `ETag` header of the resolve
//! URL's redirect.

use std::collections::BTreeMap;

use reqwest::header::{HeaderMap, CONTENT_LENGTH, ETAG, LINK};
use serde::Deserialize;
use shelf_store::{Digest, HfName, HfTarget};

use crate::error::PullError;
use crate::http::{check, send, small_body, with_auth, Clients};
use crate::{BlobSource, Plan, PullOptions};

const GATED_HINT: &str = "the repository is gated or private: accept its terms on the hub and set HF_TOKEN to a token with access";
const TOKEN_REFUSED_HINT: &str =
    "HF_TOKEN was refused: check the token has access to this repository";
/// What a name without a quant picks when a repository has several.
const DEFAULT_QUANT: &str = "Q4_K_M";

/// A file in the repository, with what the listing says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RepoFile {
    path: String,
    size: Option<u64>,
    sha256: Option<Digest>,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    #[serde(alias = "sha256")]
    oid: String,
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Deserialize)]
struct ModelInfo {
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

struct Hub<'a> {
    clients: &'a Clients,
    options: &'a PullOptions,
    repo: String,
}

impl Hub<'_> {
    fn endpoint(&self) -> &str {
        self.options.hf_endpoint.trim_end_matches('/')
    }

    fn hint(&self) -> &'static str {
        if self.options.hf_token.is_some() {
            TOKEN_REFUSED_HINT
        } else {
            GATED_HINT
        }
    }

    fn resolve_url(&self, path: &str) -> String {
        format!("{}/{}/resolve/main/{path}", self.endpoint(), self.repo)
    }

    async fn get_json(&self, url: &str) -> Result<(Vec<u8>, HeaderMap), PullError> {
        let request = with_auth(
            self.clients.follow.get(url),
            self.options.hf_token.as_deref(),
        )
        .timeout(self.options.stall_timeout);
        let what = format!("Hugging Face repository {}", self.repo);
        let response = check(send(request, url).await?, &what, self.hint())?;
        let headers = response.headers().clone();
        Ok((small_body(response, url).await?, headers))
    }

    /// Every file, from the tree API (following `Link: rel="next"` pages),
    /// or from the model info when the tree API is not there.
    async fn list_files(&self) -> Result<Vec<RepoFile>, PullError> {
        let first = format!(
            "{}/api/models/{}/tree/main?recursive=true",
            self.endpoint(),
            self.repo
        );
        let tree_error = match self.list_tree(first).await {
            Ok(files) => return Ok(files),
            // The other endpoints would say the same; don't hide the real error.
            Err(e @ (PullError::Unauthorized { .. } | PullError::Connection { .. })) => {
                return Err(e)
            }
            Err(e) => e,
        };
        let endpoint = self.endpoint();
        for url in [
            format!("{endpoint}/api/models/{}?blobs=true", self.repo),
            format!(
                "{endpoint}/api/models/{}/revision/main?blobs=true",
                self.repo
            ),
        ] {
            if let Ok(files) = self.list_info(&url).await {
                return Ok(files);
            }
        }
        Err(tree_error)
    }

    /// The tree, page by page; directories a server listed without their
    /// contents (it ignored `recursive`) are listed in turn.
    async fn list_tree(&self, first: String) -> Result<Vec<RepoFile>, PullError> {
        const MAX_LISTINGS: usize = 1000;
        let mut files = Vec::new();
        let mut directories = Vec::new();
        let mut queue = vec![first];
        let mut listings = 0;
        while let Some(url) = queue.pop() {
            listings += 1;
            if listings > MAX_LISTINGS {
                return Err(PullError::BadManifest {
                    url,
                    reason: format!("more than {MAX_LISTINGS} listing pages"),
                });
            }
            let (body, headers) = self.get_json(&url).await?;
            let entries: Vec<TreeEntry> =
                serde_json::from_slice(&body).map_err(|e| PullError::BadManifest {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            for entry in entries {
                match entry.kind.as_str() {
                    "file" => files.push(RepoFile {
                        sha256: entry.lfs.as_ref().and_then(|l| lfs_digest(&l.oid)),
                        size: entry.lfs.and_then(|l| l.size).or(entry.size),
                        path: entry.path,
                    }),
                    "directory" => directories.push(entry.path),
                    _ => {}
                }
            }
            queue.extend(next_page(&headers, self.endpoint()));
            if queue.is_empty() {
                for dir in directories.drain(..) {
                    let prefix = format!("{dir}/");
                    if !files.iter().any(|f| f.path.starts_with(&prefix)) {
                        queue.push(format!(
                            "{}/api/models/{}/tree/main/{dir}",
                            self.endpoint(),
                            self.repo
                        ));
                    }
                }
            }
        }
        Ok(files)
    }

    async fn list_info(&self, url: &str) -> Result<Vec<RepoFile>, PullError> {
        let (body, _) = self.get_json(url).await?;
        let info: ModelInfo =
            serde_json::from_slice(&body).map_err(|e| PullError::BadManifest {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(info
            .siblings
            .into_iter()
            .map(|s| RepoFile {
                sha256: s.lfs.as_ref().and_then(|l| lfs_digest(&l.oid)),
                size: s.lfs.and_then(|l| l.size).or(s.size),
                path: s.rfilename,
            })
            .collect())
    }

    /// Size and sha256 from the resolve URL's own headers, without following
    /// the redirect: `X-Linked-Size` / `X-Linked-Etag` on an LFS redirect.
    async fn head(&self, file: &mut RepoFile) -> Result<(), PullError> {
        let url = self.resolve_url(&file.path);
        let request = with_auth(
            self.clients.no_follow.head(&url),
            self.options.hf_token.as_deref(),
        )
        .timeout(self.options.stall_timeout);
        let what = format!("{} in Hugging Face repository {}", file.path, self.repo);
        let response = check(send(request, &url).await?, &what, self.hint())?;
        let headers = response.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if file.sha256.is_none() {
            file.sha256 = header("x-linked-etag")
                .or_else(|| header(ETAG.as_str()))
                .and_then(|etag| Digest::from_hex(etag.trim_start_matches("W/").trim_matches('"')));
        }
        if file.size.is_none() {
            let direct = response.status().is_success();
            file.size = header("x-linked-size")
                .or_else(|| direct.then(|| header(CONTENT_LENGTH.as_str())).flatten())
                .and_then(|s| s.parse().ok());
        }
        Ok(())
    }
}

pub(crate) async fn plan(
    clients: &Clients,
    name: &HfName,
    options: &PullOptions,
) -> Result<Plan, PullError> {
    let hub = Hub {
        clients,
        options,
        repo: format!("{}/{}", name.owner, name.repo),
    };
    let mut files = match &name.target {
        HfTarget::File(file) => split_siblings(file)
            .into_iter()
            .map(|path| RepoFile {
                path,
                size: None,
                sha256: None,
            })
            .collect(),
        target => choose(&hub.repo, &hub.list_files().await?, target)?,
    };
    let mut blobs = Vec::new();
    for file in &mut files {
        if file.size.is_none() || file.sha256.is_none() {
            match hub.head(file).await {
                Ok(()) => {}
                Err(e @ (PullError::Unauthorized { .. } | PullError::NotFound(_))) => {
                    return Err(e)
                }
                // No HEAD support: the download finds the size itself.
                Err(e) => tracing::debug!(error = %e, "HEAD of {} failed", file.path),
            }
        }
        blobs.push(BlobSource {
            url: hub.resolve_url(&file.path),
            expected: file.sha256.clone(),
            size: file.size,
            label: file.path.clone(),
            is_gguf: true,
        });
    }
    Ok(Plan {
        blobs,
        manifest: None,
        auth: options.hf_token.clone(),
    })
}

/// The `rel="next"` URL of a `Link` header, if it is on the same hub.
fn next_page(headers: &HeaderMap, endpoint: &str) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        if !params.contains("rel=\"next\"") {
            return None;
        }
        let url = url.trim().trim_start_matches('<').trim_end_matches('>');
        if url.starts_with('/') {
            Some(format!("{endpoint}{url}"))
        } else {
            url.starts_with(endpoint).then(|| url.to_string())
        }
    })
}

/// An LFS object id: 64 hex characters, sometimes written `sha256:<hex>`.
fn lfs_digest(oid: &str) -> Option<Digest> {
    Digest::from_hex(oid.strip_prefix("sha256:").unwrap_or(oid))
}

/// `name-00002-of-00003.gguf` → ("name", 2, 3).
fn split_part(path: &str) -> Option<(&str, u32, u32)> {
    let stem = path.get(..path.len().checked_sub(5)?)?;
    if !path[stem.len()..].eq_ignore_ascii_case(".gguf") {
        return None;
    }
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(count) || !digits(index) {
        return None;
    }
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (index >= 1 && index <= count).then_some((prefix, index, count))
}

/// All parts of a split file, or just the file.
fn split_siblings(file: &str) -> Vec<String> {
    match split_part(file) {
        Some((prefix, _, count)) => (1..=count)
            .map(|i| format!("{prefix}-{i:05}-of-{count:05}.gguf"))
            .collect(),
        None => vec![file.to_string()],
    }
}

/// Whether `quant` appears in `path` as a whole token: `x-Q4_K_M.gguf` and
/// `Q4_K_M/x-00001-of-00002.gguf` match `q4_k_m`; `x-Q4_K_M_L.gguf` and
/// `x-IQ4_K_M.gguf` do not.
fn matches_quant(path: &str, quant: &str) -> bool {
    let hay = path.to_ascii_lowercase();
    let needle = quant.to_ascii_lowercase();
    hay.match_indices(&needle).any(|(at, _)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + needle.len()..].chars().next();
        before.is_none_or(|c| matches!(c, '.' | '-' | '_' | '/'))
            && after.is_none_or(|c| matches!(c, '.' | '-' | '/'))
    })
}

/// The files of the GGUF (all parts, in order) that `target` names.
fn choose(repo: &str, files: &[RepoFile], target: &HfTarget) -> Result<Vec<RepoFile>, PullError> {
    let mut groups: BTreeMap<String, Vec<(u32, u32, &RepoFile)>> = BTreeMap::new();
    for file in files {
        let lower = file.path.to_ascii_lowercase();
        if !lower.ends_with(".gguf") || lower.contains("mmproj") {
            continue;
        }
        let (key, index, count) = match split_part(&file.path) {
            Some((prefix, index, count)) => (prefix.to_string(), index, count),
            None => (file.path.clone(), 1, 1),
        };
        groups.entry(key).or_default().push((index, count, file));
    }
    let available: Vec<String> = groups.keys().cloned().collect();
    let (quant, picked): (&str, Vec<&String>) = match target {
        HfTarget::Quant(q) => (q, groups.keys().filter(|k| matches_quant(k, q)).collect()),
        _ if groups.len() == 1 => ("latest", groups.keys().collect()),
        _ => (
            DEFAULT_QUANT,
            groups
                .keys()
                .filter(|k| matches_quant(k, DEFAULT_QUANT))
                .collect(),
        ),
    };
    let key = match picked.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(PullError::NoMatch {
                repo: repo.into(),
                quant: quant.into(),
                available,
            })
        }
        many => {
            return Err(PullError::Ambiguous {
                repo: repo.into(),
                quant: quant.into(),
                candidates: many.iter().map(|s| s.to_string()).collect(),
            })
        }
    };
    let mut parts = groups.remove(&key).unwrap_or_default();
    parts.sort_by_key(|(index, _, _)| *index);
    let complete = parts
        .iter()
        .enumerate()
        .all(|(i, (index, count, _))| *index as usize == i + 1 && *count as usize == parts.len());
    if !complete {
        return Err(PullError::NotFound(format!(
            "some parts of the split model {key} in {repo}"
        )));
    }
    Ok(parts.into_iter().map(|(_, _, f)| f.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[&str]) -> Vec<RepoFile> {
        paths
            .iter()
            .map(|p| RepoFile {
                path: p.to_string(),
                size: None,
                sha256: None,
            })
            .collect()
    }

    fn picked(paths: &[&str], target: HfTarget) -> Result<Vec<String>, String> {
        choose("o/r", &files(paths), &target)
            .map(|f| f.into_iter().map(|f| f.path).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn quant_tokens() {
        assert!(matches_quant("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "q4_k_m"));
        assert!(matches_quant("model.Q4_1.gguf", "Q4_1"));
        assert!(matches_quant("Q8_0/model-00001-of-00002.gguf", "q8_0"));
        assert!(matches_quant("model-Q4_K_M-00001-of-00002.gguf", "Q4_K_M"));
        assert!(!matches_quant("model-Q4_K_M_L.gguf", "Q4_K_M"));
        assert!(!matches_quant("model-IQ4_XS.gguf", "Q4_XS"));
        assert!(!matches_quant("model-Q4_K_M.gguf", "Q4_K"));
    }

    #[test]
    fn choosing_files() {
        let repo = [
            "README.md",
            "m-Q4_K_M.gguf",
            "m-Q8_0-00002-of-00002.gguf",
            "m-Q8_0-00001-of-00002.gguf",
            "mmproj-m-Q8_0.gguf",
            "m-IQ4_XS.gguf",
        ];
        assert_eq!(
            picked(&repo, HfTarget::Quant("q4_k_m".into())),
            Ok(vec!["m-Q4_K_M.gguf".into()])
        );
        assert_eq!(
            picked(&repo, HfTarget::Quant("Q8_0".into())),
            Ok(vec![
                "m-Q8_0-00001-of-00002.gguf".into(),
                "m-Q8_0-00002-of-00002.gguf".into()
            ])
        );
        assert_eq!(
            picked(&repo, HfTarget::Default),
            Ok(vec!["m-Q4_K_M.gguf".into()])
        );
        let err = picked(&repo, HfTarget::Quant("Q5_K_S".into())).unwrap_err();
        assert!(
            err.contains("no GGUF file matches") && err.contains("m-IQ4_XS.gguf"),
            "{err}"
        );
        assert_eq!(
            picked(&["only.gguf"], HfTarget::Default),
            Ok(vec!["only.gguf".into()])
        );
        let err = picked(
            &["a-Q4_0.gguf", "b-Q4_0.gguf"],
            HfTarget::Quant("Q4_0".into()),
        )
        .unwrap_err();
        assert!(err.contains("several"), "{err}");
        let err = picked(
            &["m-Q8_0-00002-of-00002.gguf"],
            HfTarget::Quant("Q8_0".into()),
        )
        .unwrap_err();
        assert!(err.contains("parts"), "{err}");
    }

    #[test]
    fn split_names() {
        assert_eq!(split_part("a-b-00002-of-00003.gguf"), Some(("a-b", 2, 3)));
        assert_eq!(split_part("a-00004-of-00003.gguf"), None);
        assert_eq!(split_part("a.gguf"), None);
        assert_eq!(
            split_siblings("x-00002-of-00002.gguf"),
            ["x-00001-of-00002.gguf", "x-00002-of-00002.gguf"]
        );
    }
}
