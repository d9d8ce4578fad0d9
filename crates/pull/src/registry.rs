//! Ollama-style registries: the OCI distribution v2 manifest and blob endpoints.
//!
//! `GET /v2/<namespace>/<model>/manifests/<tag>` gives the layers;
//! `GET /v2/<namespace>/<model>/blobs/<digest>` gives each one, usually
//! through a redirect to a CDN. A registry that answers 401 with
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…` gets the anonymous
//! token flow of the Docker registry protocol, as public pulls need.

use shelf_store::{Digest, Manifest, RegistryName, MANIFEST_MEDIA_TYPE};

use crate::error::PullError;
use crate::http::{check, send, small_body, Clients};
use crate::{BlobSource, Plan, PullOptions};

const AUTH_HINT: &str =
    "the registry wants credentials beyond an anonymous token, which shelf does not send yet";

pub(crate) async fn plan(
    clients: &Clients,
    name: &RegistryName,
    options: &PullOptions,
) -> Result<Plan, PullError> {
    let scheme = if options.insecure { "http" } else { "https" };
    let base = format!(
        "{scheme}://{}/v2/{}/{}",
        name.host, name.namespace, name.model
    );
    let url = format!("{base}/manifests/{}", name.tag);
    let what = format!(
        "{}/{}/{}:{} on {}",
        name.host, name.namespace, name.model, name.tag, name.host
    );
    let manifest_request = |token: Option<&str>| {
        let request = clients
            .follow
            .get(&url)
            .header(
                reqwest::header::ACCEPT,
                format!("{MANIFEST_MEDIA_TYPE}, application/vnd.oci.image.manifest.v1+json"),
            )
            .timeout(options.stall_timeout);
        crate::http::with_auth(request, token)
    };
    let mut response = send(manifest_request(None), &url).await?;
    let mut token = None;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED {
        if let Some(challenge) = bearer_challenge(response.headers()) {
            let fetched = anonymous_token(clients, &challenge, options).await?;
            response = send(manifest_request(Some(&fetched)), &url).await?;
            token = Some(fetched);
        }
    }
    let response = check(response, &what, AUTH_HINT)?;
    let bytes = small_body(response, &url).await?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| PullError::BadManifest {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    if !manifest.layers.iter().any(|l| l.is_model()) {
        return Err(PullError::BadManifest {
            url,
            reason: "no model layer".into(),
        });
    }
    let mut blobs = Vec::new();
    for layer in manifest.blobs() {
        let digest = Digest::parse(&layer.digest).ok_or_else(|| PullError::BadManifest {
            url: url.clone(),
            reason: format!("bad digest '{}'", layer.digest),
        })?;
        blobs.push(BlobSource {
            url: format!("{base}/blobs/{digest}"),
            label: format!("{}…", &digest.hex()[..12]),
            expected: Some(digest),
            size: Some(layer.size),
            is_gguf: layer.is_model(),
        });
    }
    Ok(Plan {
        blobs,
        manifest: Some(bytes),
        auth: token,
    })
}

/// `realm`, `service` and `scope` of a `WWW-Authenticate: Bearer` challenge.
fn bearer_challenge(headers: &reqwest::header::HeaderMap) -> Option<Vec<(String, String)>> {
    let value = headers
        .get(reqwest::header::WWW_AUTHENTICATE)?
        .to_str()
        .ok()?;
    let params = value.strip_prefix("Bearer ")?;
    let pairs: Vec<(String, String)> = params
        .split(',')
        .filter_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            Some((key.to_string(), value.trim_matches('"').to_string()))
        })
        .collect();
    pairs.iter().any(|(k, _)| k == "realm").then_some(pairs)
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// Ask the challenge's realm for an anonymous token.
async fn anonymous_token(
    clients: &Clients,
    challenge: &[(String, String)],
    options: &PullOptions,
) -> Result<String, PullError> {
    let realm = challenge
        .iter()
        .find(|(k, _)| k == "realm")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let query: Vec<(&str, &str)> = challenge
        .iter()
        .filter(|(k, _)| k == "service" || k == "scope")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let request = clients
        .follow
        .get(&realm)
        .query(&query)
        .timeout(options.stall_timeout);
    let response = check(
        send(request, &realm).await?,
        "the registry's token service",
        AUTH_HINT,
    )?;
    let body = small_body(response, &realm).await?;
    let answer: TokenAnswer =
        serde_json::from_slice(&body).map_err(|e| PullError::BadManifest {
            url: realm.clone(),
            reason: format!("token answer: {e}"),
        })?;
    answer
        .token
        .or(answer.access_token)
        .ok_or_else(|| PullError::BadManifest {
            url: realm,
            reason: "the token answer has no token".into(),
        })
}
