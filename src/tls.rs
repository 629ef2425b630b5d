//! TLS toward HTTPS upstream proxies, origins of absolute `https://` requests and an `https://`
//! authorization service: [`connect`] is the one client handshake all of them go through.
//!
//! With the `tls` feature (rustls, ring), the peer is verified against [`Trust`] (`tls/trust.rs`:
//! the system store plus `--ca-file`), the host is sent as SNI and `http/1.1` offered by ALPN.
//! Without any root (a router with no bundle and no `--ca-file`) every TLS connection fails
//! with a clear error. Without the feature, [`connect`] only refuses: https upstreams,
//! `--ca-file` and an https `--authz-url` are refused at start and absolute `https://` requests
//! answered with 501 before a route is walked, so it is never reached. Callers put the peer's
//! name into the error; this file says only what went wrong.

use std::io;

use crate::stream::Stream;

#[cfg(feature = "tls-server")]
pub mod server;
#[cfg(feature = "tls")]
pub mod trust;
/// Without TLS there is nothing to trust; the configuration still carries the (empty) value.
#[cfg(not(feature = "tls"))]
pub mod trust {
    /// What a build without TLS trusts: nothing.
    #[derive(Debug, Clone, Default)]
    pub struct Trust {
        /// Nothing; private so that only [`Trust::load`] and `default` make one.
        _none: (),
    }

    impl Trust {
        /// `--ca-file` is refused earlier in a build without TLS, so there is nothing to load.
        pub fn load(_: &[std::path::PathBuf], _: Option<String>) -> Result<Trust, (u8, String)> {
            Ok(Trust::default())
        }
    }
}
pub use trust::Trust;

/// What a TLS listener serves with: rustls' server settings, or nothing in a build without
/// the `tls-server` feature (where `--listen-tls` is refused).
#[cfg(feature = "tls-server")]
pub type ServerSettings = std::sync::Arc<rustls::ServerConfig>;
/// What a TLS listener serves with: nothing in a build without the `tls-server` feature.
#[cfg(not(feature = "tls-server"))]
pub type ServerSettings = std::convert::Infallible;

/// TLS over `io` to `host` (a name, sent as SNI, or an IP literal checked against the
/// certificate's IP addresses), trusting what `trust` trusts.
#[cfg(feature = "tls")]
pub async fn connect(trust: &Trust, host: &str, io: Stream) -> io::Result<Stream> {
    let (client, roots) = trust.config();
    if *roots == 0 {
        return Err(io::Error::other(
            "no trusted root certificates: no system store found and no --ca-file given",
        ));
    }
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| io::Error::other("bad TLS server name"))?;
    match futures_rustls::TlsConnector::from(client.clone())
        .connect(name, io)
        .await
    {
        Ok(tls) => Ok(Stream::shared(tls)),
        Err(e) => Err(explain(e, host)),
    }
}

/// Without TLS nothing gets here (see the top of this file); this only keeps callers total.
#[cfg(not(feature = "tls"))]
pub async fn connect(_: &Trust, _: &str, _: Stream) -> io::Result<Stream> {
    Err(io::Error::other("this build has no TLS"))
}

/// Turns rustls' certificate errors into words a user can act on.
#[cfg(feature = "tls")]
fn explain(e: io::Error, host: &str) -> io::Error {
    use rustls::CertificateError;
    let Some(rustls::Error::InvalidCertificate(cert)) =
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
    else {
        return e;
    };
    let why = match cert {
        CertificateError::UnknownIssuer => {
            "certificate signed by an unknown authority (add its issuer with --ca-file)".into()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("certificate is not valid for {host}")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate has expired".into()
        }
        other => format!("certificate rejected: {other:?}"),
    };
    io::Error::new(io::ErrorKind::InvalidData, why)
}
