//! HTTPS interception (SPEC §10): opening the TLS of a CONNECT tunnel that `--intercept` names,
//! so that each request inside is handled like an absolute-form `https://` request.
//!
//! After the proxy's `200`, the first byte the client sends decides: a TLS handshake record
//! (0x16) is answered by a TLS server here, with a leaf certificate for the name the client
//! asked for (its SNI, else the CONNECT host; an IP address gets an IP SAN) issued by the
//! interception CA ([`crate::ca::Ca`]) and cached per name; ALPN offers `http/1.1` only, so a
//! client that insists on h2 gets the `no_application_protocol` alert. Any other first byte,
//! or a client that stays silent (a protocol where the server speaks first), leaves the tunnel
//! opaque. What happens to the requests inside is `connection.rs`'s: this file only opens the
//! session. Built with the `tls-server` feature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_io::Timer;
use futures_lite::FutureExt;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::ca::Ca;
use crate::error::describe;
use crate::stream::{Prefixed, Stream};

/// Most leaf certificates kept. A leaf and its chain are under 1 KB; 1024 names cover every
/// API host a deployment intercepts, and past that the oldest half is dropped.
const MAX_LEAVES: usize = 1024;
/// How long a client may stay silent after the `200` before the tunnel is taken for a protocol
/// where the server speaks first (SMTP, SSH) and relayed opaque. TLS clients send their hello
/// at once; 2 s is far beyond any round trip and short enough not to break such protocols.
pub const SILENT_CLIENT: Duration = Duration::from_secs(2);

/// The interception CA and the leaves it issued, ready to serve TLS to clients.
pub struct Interceptor {
    /// The CA that signs leaves.
    ca: Arc<Ca>,
    /// The TLS server settings every session starts from (versions, ALPN, session cache).
    base: Arc<ServerConfig>,
    /// The leaves' key, loaded once for signing handshakes.
    key: Arc<dyn rustls::sign::SigningKey>,
    /// Leaves by name, with the order they were made in, bounded by [`MAX_LEAVES`].
    leaves: Mutex<Leaves>,
}

/// The cache of leaf certificates.
#[derive(Default)]
struct Leaves {
    /// Certificate and key by lowercase name.
    by_name: HashMap<String, (u64, Arc<CertifiedKey>)>,
    /// A counter that stamps each leaf, so the oldest can be dropped.
    made: u64,
}

/// How the first bytes of a tunnel look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// A TLS handshake record.
    Tls,
    /// Something else: this byte.
    Other(u8),
    /// Nothing within [`SILENT_CLIENT`].
    Silent,
    /// The client closed (or the socket failed) before sending anything.
    Closed,
}

/// An opened session: the decrypted stream and the name the client asked for.
pub struct Session {
    /// The TLS session with the client.
    pub stream: Stream,
    /// The SNI the client sent, lowercased.
    pub sni: Option<String>,
}

impl Interceptor {
    /// The interceptor for `ca`. Errors only if the leaf key cannot be loaded, a start-up
    /// invariant.
    pub fn new(ca: Arc<Ca>) -> Result<Interceptor, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(ca.leaf_key_der().into());
        let key = provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| format!("cannot load the leaf key: {e}"))?;
        let mut base = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|e| format!("TLS server settings: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(None)));
        base.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Interceptor {
            ca,
            base: Arc::new(base),
            key,
            leaves: Mutex::default(),
        })
    }

    /// The leaf for `name`, from the cache or issued now.
    fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, String> {
        let name = name.to_ascii_lowercase();
        if let Some((_, leaf)) = self
            .leaves
            .lock()
            .ok()
            .and_then(|l| l.by_name.get(&name).cloned())
        {
            return Ok(leaf);
        }
        // Signed outside the lock: a signature takes a while, and other names need not wait.
        let der = self.ca.issue(&name)?;
        let leaf = Arc::new(CertifiedKey::new(vec![der.into()], self.key.clone()));
        if let Ok(mut leaves) = self.leaves.lock() {
            if leaves.by_name.len() >= MAX_LEAVES {
                // Drop the older half: a name still in use is issued again on its next session.
                let cut = leaves.made - (MAX_LEAVES / 2) as u64;
                leaves.by_name.retain(|_, (stamp, _)| *stamp >= cut);
            }
            leaves.made += 1;
            let stamp = leaves.made;
            leaves.by_name.insert(name, (stamp, leaf.clone()));
        }
        Ok(leaf)
    }

    /// Runs the TLS server handshake with the client over `client` (after `early`, bytes
    /// already read), presenting a leaf for its SNI or else for `host`. The error is one line for the
    /// log, naming the TLS alert when the client sent one.
    pub async fn accept(
        &self,
        client: Stream,
        early: Vec<u8>,
        host: &str,
        timeout: Duration,
    ) -> Result<Session, String> {
        let io = Prefixed::new(early, client);
        let handshake = async {
            let start = futures_rustls::LazyConfigAcceptor::new(Default::default(), io)
                .await
                .map_err(|e| format!("bad TLS client hello: {}", describe(&e)))?;
            let sni = start
                .client_hello()
                .server_name()
                .map(str::to_ascii_lowercase);
            let leaf = self.leaf(sni.as_deref().unwrap_or(host))?;
            let mut config = (*self.base).clone();
            config.cert_resolver = Arc::new(Fixed(Some(leaf)));
            let tls = start
                .into_stream(Arc::new(config))
                .await
                .map_err(|e| describe(&e))?;
            Ok(Session {
                stream: Stream::shared(tls),
                sni,
            })
        };
        handshake
            .or(async {
                Timer::after(timeout).await;
                Err("TLS handshake timed out".into())
            })
            .await
    }
}

/// The first byte of a tunnel, waiting at most [`SILENT_CLIENT`] for it: the first of
/// `early` (already read), else a peek at a plain socket (nothing consumed), else, from a
/// client that is itself inside TLS (a `--listen-tls` client), a read whose byte is appended
/// to `early`.
pub async fn peek(client: &Stream, early: &mut Vec<u8>) -> Peek {
    let deadline = std::time::Instant::now() + SILENT_CLIENT;
    let silent = async {
        Timer::at(deadline).await;
        None
    };
    let byte = match (early.first(), client) {
        (Some(&b), _) => b,
        (None, Stream::Tcp(tcp)) => loop {
            let ready = async { Some(tcp.0.readable().await.is_ok()) }
                .or(async {
                    Timer::at(deadline).await;
                    None
                })
                .await;
            let mut one = [0u8; 1];
            match ready {
                None => return Peek::Silent,
                Some(false) => return Peek::Closed,
                Some(true) => match tcp.0.get_ref().peek(&mut one) {
                    Ok(1) => break one[0],
                    // Woken without data (readiness is a hint): wait again.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => return Peek::Closed,
                },
            }
        },
        (None, Stream::Shared(_)) => {
            let mut one = [0u8; 1];
            let read = async {
                Some(futures_lite::AsyncReadExt::read(&mut client.clone(), &mut one).await)
            };
            match read.or(silent).await {
                None => return Peek::Silent,
                Some(Ok(1)) => {
                    early.push(one[0]);
                    one[0]
                }
                Some(_) => return Peek::Closed,
            }
        }
    };
    // RFC 8446 §5.1: a handshake record starts with content type 22.
    if byte == 0x16 {
        Peek::Tls
    } else {
        Peek::Other(byte)
    }
}

/// A certificate resolver that always answers with the leaf chosen for this session.
#[derive(Debug)]
struct Fixed(Option<Arc<CertifiedKey>>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }
}
