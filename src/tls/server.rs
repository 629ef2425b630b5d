//! The TLS listener's side of TLS (`--listen-tls`, SPEC §11): the certificate chain and key
//! it presents, checked at start, and the handshake with each client. Built with the
//! `tls-server` feature, like interception, which brings rustls' server side and signing code.
//!
//! The chain is sent as given (the server's certificate first); the key may be PKCS#8, SEC1 or
//! PKCS#1, ECDSA, Ed25519 or RSA, and is refused if group or others can read it. ALPN offers
//! `http/1.1` only: the proxy speaks HTTP/1.1 inside.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_io::Timer;
use futures_lite::FutureExt;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::describe;
use crate::stream::{Stream, Tcp};

/// Largest certificate chain or key file read; a chain is a few KB.
const MAX_FILE: u64 = 1024 * 1024;

/// Reads and checks `--tls-cert` and `--tls-key`. The error is the exit status (1: a file
/// cannot be read, 2: what it holds is refused) and one line.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, (u8, String)> {
    crate::file::private("--tls-key", key)?;
    let read = |flag: &str, path: &Path| {
        crate::file::read_limited(path, MAX_FILE)
            .map_err(|e| (1, format!("cannot read {flag} {}: {e}", path.display())))
    };
    let (cert_pem, key_pem) = (read("--tls-cert", cert)?, read("--tls-key", key)?);
    let refuse = |why: String| (2u8, why);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| refuse(format!("--tls-cert {}: bad PEM", cert.display())))?;
    if chain.is_empty() {
        return Err(refuse(format!(
            "--tls-cert {}: no PEM certificate in it",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        refuse(format!(
            "--tls-key {}: no unencrypted private key in PEM in it",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| refuse(format!("TLS server settings: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            refuse(format!(
                "--tls-cert {} with --tls-key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS handshake with a client of the listener, within `timeout`. Through rustls'
/// `Acceptor`, as interception does: a refusal (an h2-only ALPN offer) then reaches the client
/// as its alert before the connection closes.
pub async fn accept(
    config: &Arc<ServerConfig>,
    tcp: Tcp,
    timeout: Duration,
) -> Result<Stream, String> {
    let handshake = async {
        let start = futures_rustls::LazyConfigAcceptor::new(Default::default(), tcp)
            .await
            .map_err(|e| format!("bad TLS client hello: {}", describe(&e)))?;
        start
            .into_stream(config.clone())
            .await
            .map(Stream::shared)
            .map_err(|e| describe(&e))
    };
    handshake
        .or(async {
            Timer::after(timeout).await;
            Err("TLS handshake timed out".into())
        })
        .await
}
