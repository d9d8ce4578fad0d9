//! A registry on loopback that speaks the Hugging Face resolve protocol and
//! the Ollama (OCI v2) registry protocol, serves real bytes, and injects the
//! faults pulls must survive. For tests and benchmarks only.
//!
//! Hugging Face: `/api/models/O/R/tree/main`, `/api/models/O/R`, and
//! `/O/R/resolve/main/FILE`, which redirects to `/cdn/<sha256>` with
//! `X-Linked-Etag` and `X-Linked-Size` as the hub does. Ollama:
//! `/v2/NS/MODEL/manifests/TAG`, and `/v2/NS/MODEL/blobs/sha256:<hex>`,
//! which redirects to `/cdn/<hex>`. `/cdn/` honours `Range`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A test fixture: a poisoned lock should fail the test.

mod split;

pub use split::split_gguf;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// Faults to inject into blob bodies served from `/cdn/`.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Abort the connection once, after this many body bytes in total.
    pub drop_after: Option<u64>,
    /// Stop sending (without closing) once this many body bytes were served in total.
    pub hang_after: Option<u64>,
    /// Serve every blob with its first byte flipped, under the original digest.
    pub corrupt: bool,
    /// Throttle each response to this many bytes a second.
    pub bytes_per_sec: Option<u64>,
    /// Answer ranged requests with the whole body, as some servers do.
    pub ignore_ranges: bool,
    /// Hugging Face: no `/tree/` API, only `/api/models/O/R` with bare `siblings`.
    pub no_tree: bool,
    /// Hugging Face: list only the top level of the tree, whatever `recursive` says.
    pub flat_tree: bool,
    /// Answer HEAD with 405.
    pub no_head: bool,
    /// Ollama side: demand a bearer token from `/token`, as Docker-style registries do.
    pub token_auth: bool,
}

/// The token `/token` hands out when `token_auth` is on.
pub const REGISTRY_TOKEN: &str = "mock-registry-token";

#[derive(Default)]
struct Content {
    /// sha256 hex → bytes.
    blobs: HashMap<String, Bytes>,
    /// "owner/repo" → [(path, sha256 hex)].
    hf_repos: HashMap<String, Vec<(String, String)>>,
    /// "owner/repo" → the token it wants.
    gated: HashMap<String, String>,
    /// "ns/model:tag" → manifest bytes.
    manifests: HashMap<String, Vec<u8>>,
}

struct Shared {
    content: Mutex<Content>,
    faults: Mutex<Faults>,
    served: AtomicU64,
    served_changed: (Mutex<()>, Condvar),
    requests: Mutex<Vec<String>>,
}

/// A running mock registry; it stops when the process exits.
#[derive(Clone)]
pub struct MockRegistry {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MockRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MockRegistry({})", self.addr)
    }
}

/// sha256 hex of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl MockRegistry {
    /// Serve on 127.0.0.1 and an ephemeral port, on a thread of its own.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    pub fn start_on(addr: &str) -> Self {
        let listener = std::net::TcpListener::bind(addr).expect("bind the mock registry");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            content: Mutex::default(),
            faults: Mutex::default(),
            served: AtomicU64::new(0),
            served_changed: (Mutex::new(()), Condvar::new()),
            requests: Mutex::default(),
        });
        let app_state = shared.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(move |method, uri, headers| {
                    handle(app_state.clone(), method, uri, headers)
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self { addr, shared }
    }

    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, for registry names.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Put a file in a Hugging Face repository.
    pub fn add_hf_file(&self, repo: &str, path: &str, bytes: Bytes) {
        let hex = sha256_hex(&bytes);
        let mut content = self.shared.content.lock().unwrap();
        content.blobs.insert(hex.clone(), bytes);
        content
            .hf_repos
            .entry(repo.to_string())
            .or_default()
            .push((path.to_string(), hex));
    }

    /// Make a repository answer 401 unless asked with `Authorization: Bearer TOKEN`.
    pub fn gate(&self, repo: &str, token: &str) {
        let mut content = self.shared.content.lock().unwrap();
        content.gated.insert(repo.to_string(), token.to_string());
    }

    /// Publish `NS/MODEL:TAG` with a GGUF layer and extra `(media type, bytes)` layers.
    pub fn add_ollama_model(&self, name: &str, gguf: Bytes, extra: &[(&str, Bytes)]) {
        let mut content = self.shared.content.lock().unwrap();
        let mut descriptor = |media_type: &str, bytes: &Bytes| {
            let hex = sha256_hex(bytes);
            content.blobs.insert(hex.clone(), bytes.clone());
            serde_json::json!({
                "mediaType": media_type,
                "digest": format!("sha256:{hex}"),
                "size": bytes.len(),
            })
        };
        let config = Bytes::from_static(br#"{"model_format":"gguf"}"#);
        let config = descriptor("application/vnd.docker.container.image.v1+json", &config);
        let mut layers = vec![descriptor("application/vnd.ollama.image.model", &gguf)];
        layers.extend(extra.iter().map(|(media, bytes)| descriptor(media, bytes)));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": config,
            "layers": layers,
        });
        content
            .manifests
            .insert(name.to_string(), serde_json::to_vec(&manifest).unwrap());
    }

    /// Stop serving a blob (a registry with a layer missing).
    pub fn remove_blob(&self, hex: &str) {
        self.shared.content.lock().unwrap().blobs.remove(hex);
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Blob body bytes served so far.
    pub fn bytes_served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    pub fn reset_counters(&self) {
        self.shared.served.store(0, Ordering::SeqCst);
        self.shared.requests.lock().unwrap().clear();
    }

    /// Block until at least `bytes` blob bytes were served; false on timeout.
    pub fn wait_served(&self, bytes: u64, timeout: Duration) -> bool {
        let (lock, changed) = &self.shared.served_changed;
        let guard = lock.lock().unwrap();
        let (_guard, result) = changed
            .wait_timeout_while(guard, timeout, |_| self.bytes_served() < bytes)
            .unwrap();
        !result.timed_out()
    }

    /// "METHOD PATH auth=yes|no" for every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn handle(shared: Arc<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    shared.requests.lock().unwrap().push(format!(
        "{method} {path} auth={}",
        if auth.is_some() { "yes" } else { "no" }
    ));
    let faults = shared.faults.lock().unwrap().clone();
    if faults.no_head && method == Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if faults.token_auth
        && segments.first() == Some(&"v2")
        && auth.as_deref() != Some(REGISTRY_TOKEN)
    {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let scope = segments.get(1..3).map(|p| p.join("/")).unwrap_or_default();
        let challenge = format!(
            "Bearer realm=\"http://{host}/token\",service=\"mock\",scope=\"repository:{scope}:pull\""
        );
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            "",
        )
            .into_response();
    }
    match segments.as_slice() {
        ["token"] => {
            let asked_for_scope = uri.query().is_some_and(|q| q.contains("scope=repository"));
            if asked_for_scope {
                axum::Json(serde_json::json!({"token": REGISTRY_TOKEN})).into_response()
            } else {
                (StatusCode::BAD_REQUEST, "scope missing").into_response()
            }
        }
        ["cdn", hex] => serve_blob(&shared, &method, hex, &headers),
        ["v2", ns, model, "manifests", tag] => {
            let key = format!("{ns}/{model}:{tag}");
            match shared.content.lock().unwrap().manifests.get(&key) {
                Some(bytes) => (
                    [(
                        header::CONTENT_TYPE,
                        "application/vnd.docker.distribution.manifest.v2+json",
                    )],
                    bytes.clone(),
                )
                    .into_response(),
                None => not_found(),
            }
        }
        ["v2", _, _, "blobs", digest] => match digest.strip_prefix("sha256:") {
            Some(hex) => redirect(&format!("/cdn/{hex}"), StatusCode::TEMPORARY_REDIRECT, &[]),
            None => not_found(),
        },
        ["api", "models", _, _, "tree", ..] if faults.no_tree => not_found(),
        ["api", "models", owner, repo, "tree", "main", dir @ ..] => {
            let listing = Listing {
                tree: true,
                flat: faults.flat_tree,
                dir: dir.join("/"),
            };
            hf_listing(
                &shared,
                &format!("{owner}/{repo}"),
                auth.as_deref(),
                &listing,
            )
        }
        ["api", "models", owner, repo] => {
            let listing = Listing {
                tree: false,
                flat: false,
                dir: String::new(),
            };
            hf_listing(
                &shared,
                &format!("{owner}/{repo}"),
                auth.as_deref(),
                &listing,
            )
        }
        [owner, repo, "resolve", _revision, file @ ..] => hf_resolve(
            &shared,
            &format!("{owner}/{repo}"),
            &file.join("/"),
            auth.as_deref(),
        ),
        _ => not_found(),
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn redirect(location: &str, status: StatusCode, extra: &[(&str, String)]) -> Response {
    let mut response = Response::builder()
        .status(status)
        .header(header::LOCATION, location);
    for (name, value) in extra {
        response = response.header(*name, value);
    }
    response.body(Body::empty()).unwrap()
}

/// 401 for a gated repository asked without its token.
fn gate_check(content: &Content, repo: &str, auth: Option<&str>) -> Option<Response> {
    let wanted = content.gated.get(repo)?;
    (auth != Some(wanted.as_str())).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            "Access to this repository is restricted.",
        )
            .into_response()
    })
}

/// Which listing of a repository to give.
struct Listing {
    /// The tree API (with LFS sizes and digests), or bare `siblings`.
    tree: bool,
    /// Only the entries directly in `dir`, with subdirectories as entries.
    flat: bool,
    dir: String,
}

/// The entries of a flat listing of `dir`: files in it, and its subdirectories.
fn flat_entries(files: &[(String, String)], dir: &str) -> Vec<(String, Option<String>)> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries: Vec<(String, Option<String>)> = Vec::new();
    for (path, hex) in files {
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        let entry = match rest.split_once('/') {
            Some((sub, _)) => (format!("{prefix}{sub}"), None),
            None => (path.clone(), Some(hex.clone())),
        };
        if !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    entries
}

fn hf_listing(shared: &Shared, repo: &str, auth: Option<&str>, listing: &Listing) -> Response {
    let content = shared.content.lock().unwrap();
    if let Some(denied) = gate_check(&content, repo, auth) {
        return denied;
    }
    let Some(files) = content.hf_repos.get(repo) else {
        return (StatusCode::NOT_FOUND, "Repository not found").into_response();
    };
    let chosen: Vec<(String, Option<String>)> = if listing.flat {
        flat_entries(files, &listing.dir)
    } else {
        files
            .iter()
            .filter(|(path, _)| {
                listing.dir.is_empty() || path.starts_with(&format!("{}/", listing.dir))
            })
            .map(|(path, hex)| (path.clone(), Some(hex.clone())))
            .collect()
    };
    let entries: Vec<serde_json::Value> = chosen
        .iter()
        .map(|(path, hex)| match hex {
            None => serde_json::json!({"type": "directory", "path": path, "oid": "0000"}),
            Some(hex) if listing.tree => {
                let size = content.blobs.get(hex).map_or(0, |b| b.len());
                serde_json::json!({"type": "file", "path": path, "size": size,
                    "oid": "0000", "lfs": {"oid": hex, "size": size, "pointerSize": 134}})
            }
            Some(_) => serde_json::json!({"rfilename": path}),
        })
        .collect();
    let body = if listing.tree {
        serde_json::Value::Array(entries)
    } else {
        serde_json::json!({"id": repo, "siblings": entries})
    };
    axum::Json(body).into_response()
}

fn hf_resolve(shared: &Shared, repo: &str, file: &str, auth: Option<&str>) -> Response {
    let content = shared.content.lock().unwrap();
    if let Some(denied) = gate_check(&content, repo, auth) {
        return denied;
    }
    let found = content
        .hf_repos
        .get(repo)
        .and_then(|files| files.iter().find(|(path, _)| path == file));
    let Some((_, hex)) = found else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let size = content.blobs.get(hex).map_or(0, |b| b.len());
    redirect(
        &format!("/cdn/{hex}"),
        StatusCode::FOUND,
        &[
            ("x-linked-etag", format!("\"{hex}\"")),
            ("x-linked-size", size.to_string()),
            (
                "x-repo-commit",
                "0123456789abcdef0123456789abcdef01234567".into(),
            ),
            ("etag", format!("\"{hex}\"")),
        ],
    )
}

fn parse_range(headers: &HeaderMap, len: u64) -> Option<(u64, u64)> {
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    let (start, end) = value.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end: u64 = if end.is_empty() {
        len.checked_sub(1)?
    } else {
        end.parse::<u64>().ok()?.min(len.checked_sub(1)?)
    };
    (start <= end).then_some((start, end + 1))
}

fn serve_blob(shared: &Arc<Shared>, method: &Method, hex: &str, headers: &HeaderMap) -> Response {
    let Some(bytes) = shared.content.lock().unwrap().blobs.get(hex).cloned() else {
        return not_found();
    };
    let faults = shared.faults.lock().unwrap().clone();
    let bytes = if faults.corrupt && !bytes.is_empty() {
        let mut flipped = bytes.to_vec();
        flipped[0] ^= 0xff;
        Bytes::from(flipped)
    } else {
        bytes
    };
    let len = bytes.len() as u64;
    let range = if faults.ignore_ranges {
        None
    } else {
        parse_range(headers, len)
    };
    let (status, start, end) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        None => (StatusCode::OK, 0, len),
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ETAG, format!("\"{hex}\""));
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", end - 1),
        );
    }
    if method == Method::HEAD {
        return response.body(Body::empty()).unwrap();
    }
    let body = bytes.slice(start as usize..end as usize);
    response
        .body(Body::from_stream(body_stream(shared.clone(), body, faults)))
        .unwrap()
}

/// The body in 256 KiB pieces, counting served bytes and applying faults.
fn body_stream(
    shared: Arc<Shared>,
    body: Bytes,
    faults: Faults,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    const PIECE: usize = 256 << 10;
    futures::stream::unfold((body, 0usize), move |(body, at)| {
        let shared = shared.clone();
        let faults = faults.clone();
        async move {
            if at >= body.len() {
                return None;
            }
            let mut take = PIECE.min(body.len() - at);
            if let Some(rate) = faults.bytes_per_sec {
                take = take.min((rate / 10).max(1) as usize);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let served = shared.served.load(Ordering::SeqCst);
            let limit = faults.hang_after.or(faults.drop_after);
            if let Some(limit) = limit {
                if served >= limit {
                    if faults.hang_after.is_some() {
                        futures::future::pending::<()>().await;
                    }
                    // Drop once: later requests go through.
                    shared.faults.lock().unwrap().drop_after = None;
                    let error = std::io::Error::other("injected connection drop");
                    return Some((Err(error), (body, usize::MAX)));
                }
                take = take.min((limit - served) as usize);
            }
            let piece = body.slice(at..at + take);
            shared.served.fetch_add(take as u64, Ordering::SeqCst);
            let (lock, changed) = &shared.served_changed;
            drop(lock.lock().unwrap());
            changed.notify_all();
            Some((Ok(piece), (body, at + take)))
        }
    })
}
