//! What TLS trusts: the system's CA bundle (the first of the usual distribution paths that
//! exists, or `SSL_CERT_FILE` when set) plus every `--ca-file`, and the one rustls client
//! configuration built from them.
//!
//! The `--ca-file` certificates are read and checked at start, so a bad file stops the proxy
//! before it listens; the system bundle is parsed on the first TLS connection only, because its
//! ~150 roots cost a few hundred KB that a proxy which never speaks TLS should not pay. The
//! handshake itself is [`super::connect`]'s. Built only with the `tls` feature.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Where distributions keep the system CA bundle; the first that exists is used.
pub const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine, Arch, OpenWrt
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL, CentOS
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // RHEL 7+
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine (LibreSSL), OpenBSD
    "/etc/pki/tls/cacert.pem",            // OpenELEC
];
/// Largest CA file read. Mozilla's whole bundle is about 220 KB; 4 MiB means a wrong file.
const MAX_CA_FILE: u64 = 4 * 1024 * 1024;

/// The CA certificates trusted for TLS, and the client configuration built from them.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Certificates from `--ca-file`, already checked.
    extra: Vec<CertificateDer<'static>>,
    /// The system bundle to use, found at start (`None`: there is none).
    system: Option<PathBuf>,
    /// The client configuration and its number of roots, built on first use.
    built: Arc<OnceLock<(Arc<ClientConfig>, usize)>>,
}

impl Trust {
    /// Reads and checks the `--ca-file`s and finds the system bundle. `ssl_cert_file` is the
    /// `SSL_CERT_FILE` variable, which replaces the bundle paths when set. Errors carry the
    /// exit status: 1 for a file that cannot be read, 2 for one that holds no certificate.
    pub fn load(
        ca_files: &[PathBuf],
        ssl_cert_file: Option<String>,
    ) -> Result<Trust, (u8, String)> {
        let mut extra = Vec::new();
        for path in ca_files {
            let name = path.display();
            let pem = read(path).map_err(|e| (1, format!("cannot read --ca-file {name}: {e}")))?;
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            if certs.is_empty() {
                return Err((2, format!("--ca-file {name}: no PEM certificate in it")));
            }
            // Each must be usable as a trust anchor, checked now rather than at first use.
            for (i, cert) in certs.iter().enumerate() {
                RootCertStore::empty().add(cert.clone()).map_err(|e| {
                    (
                        2,
                        format!("--ca-file {name}: certificate {} is not usable: {e}", i + 1),
                    )
                })?;
            }
            extra.extend(certs);
        }
        let system = match ssl_cert_file.filter(|v| !v.is_empty()) {
            Some(file) => Some(PathBuf::from(file)).filter(|p| p.is_file()),
            None => SYSTEM_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file()),
        };
        Ok(Trust {
            extra,
            system,
            built: Arc::default(),
        })
    }

    /// The client configuration and its number of roots, built once: system roots first,
    /// then `--ca-file` ones.
    pub(super) fn config(&self) -> &(Arc<ClientConfig>, usize) {
        self.built.get_or_init(|| {
            let mut roots = RootCertStore::empty();
            if let Some(bundle) = self.system.as_deref().and_then(|p| read(p).ok()) {
                // Distribution bundles hold a few certificates webpki cannot use; skip those.
                roots.add_parsable_certificates(
                    CertificateDer::pem_slice_iter(&bundle).filter_map(Result::ok),
                );
            }
            roots.add_parsable_certificates(self.extra.iter().cloned());
            let count = roots.len();
            let provider = Arc::new(rustls::crypto::CryptoProvider {
                key_provider: &NoKeys,
                ..rustls::crypto::ring::default_provider()
            });
            let mut cfg = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            (Arc::new(cfg), count)
        })
    }
}

/// The proxy only verifies servers: it has no key of its own to sign with (no client
/// certificates). Refusing keys here keeps ring's RSA, ECDSA and Ed25519 signing code out of
/// the binary (~25 KB).
#[derive(Debug)]
struct NoKeys;

impl rustls::crypto::KeyProvider for NoKeys {
    fn load_private_key(
        &self,
        _: rustls_pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "smolproxy uses no private keys".into(),
        ))
    }
}

/// Reads a whole CA file of bounded size.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    crate::file::read_limited(path, MAX_CA_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files() {
        let dir = std::env::temp_dir().join(format!("smolproxy-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let err = Trust::load(std::slice::from_ref(&empty), None).unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("no PEM certificate"), "{}", err.1);
        let err = Trust::load(&[dir.join("missing.pem")], None).unwrap_err();
        assert_eq!(err.0, 1);
        assert!(err.1.starts_with("cannot read --ca-file"), "{}", err.1);
        // A PEM block that is not a certificate webpki can use.
        let junk = dir.join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(Trust::load(&[junk], None).unwrap_err().0, 2);
        // SSL_CERT_FILE pointing nowhere: no system store, and TLS says so.
        let t = Trust::load(&[], Some("/nonexistent/ca.pem".into())).unwrap();
        assert!(t.system.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
