//! Certificates for `serve`: loading a PEM pair, or making a self-signed
//! one and keeping it under `~/.shelf/tls` so clients can pin it once.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use shelf_server::rustls::{self, pki_types};

/// A server TLS setup and what to tell the user about it.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate, `AB:CD:…`.
    pub fingerprint: String,
    pub cert_path: PathBuf,
}

/// Load a certificate chain and its key.
pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Tls> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .with_context(|| format!("cannot read the certificate {}", cert_path.display()))?;
    let leaf = certs
        .first()
        .with_context(|| format!("{} holds no certificate", cert_path.display()))?;
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("cannot read the private key {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not make a usable pair")?;
    // HTTP/2 first: clients that speak it multiplex on one connection.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(config),
        fingerprint,
        cert_path: cert_path.to_path_buf(),
    })
}

/// The certificate in `dir`, made first if missing or if it does not name
/// every host in `names`.
pub fn self_signed(dir: &Path, names: &[String]) -> anyhow::Result<Tls> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let names_path = dir.join("names");
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_path).ok();
    if !cert_path.exists() || !key_path.exists() || current.as_deref() != Some(wanted.as_str()) {
        make(dir, names)?;
        write_atomically(&names_path, wanted.as_bytes(), 0o644)?;
    }
    load(&cert_path, &key_path)
}

/// The names a self-signed certificate should cover for this address.
pub fn names_for(ip: IpAddr, allowed_hosts: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names.extend(allowed_hosts.iter().filter(|h| *h != "*").cloned());
    names.dedup();
    names
}

fn make(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names.to_vec())
            .context("cannot make a self-signed certificate")?;
    write_atomically(
        &dir.join("key.pem"),
        signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomically(&dir.join("cert.pem"), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Write to a temporary file, sync it, then rename it into place.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&temp);
    let mut file = options
        .open(&temp)
        .with_context(|| format!("cannot write {}", temp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// SHA-256 of a DER certificate, as `openssl x509 -fingerprint -sha256`
/// prints it.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_kept_and_remade_for_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = names_for("0.0.0.0".parse().unwrap(), &["box.lan".into()]);
        let first = self_signed(dir.path(), &names).unwrap();
        let again = self_signed(dir.path(), &names).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        assert_eq!(first.config.alpn_protocols[0], b"h2");
        let other = self_signed(dir.path(), &names_for("10.0.0.2".parse().unwrap(), &[])).unwrap();
        assert_ne!(first.fingerprint, other.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
