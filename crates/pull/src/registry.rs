//! Ollama-style registries: the OCI distribution v2 manifest and blob endpoints.
//!
//! `GET /v2/<namespace>/<model>/manifests/<tag>` gives the layers;
//! `GET /v2/<namespace>/<model>/blobs/<digest>` gives each one, usually
//! through a redirect to a CDN.

use shelf_store::{Digest, Manifest, RegistryName, MANIFEST_MEDIA_TYPE};

use crate::error::PullError;
use crate::http::{check, send, small_body, Clients};
use crate::{BlobSource, Plan, PullOptions};

const AUTH_HINT: &str = "the registry wants credentials, which shelf does not send yet";

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
    let request = clients
        .follow
        .get(&url)
        .header(
            reqwest::header::ACCEPT,
            format!("{MANIFEST_MEDIA_TYPE}, application/vnd.oci.image.manifest.v1+json"),
        )
        .timeout(options.stall_timeout);
    let response = check(send(request, &url).await?, &what, AUTH_HINT)?;
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
        auth: None,
    })
}
