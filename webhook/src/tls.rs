//! TLS for the admission port: rustls (TLS 1.2 and 1.3), a certificate re-read when its files
//! change, and a listener that does handshakes off the accept path.
//!
//! A Secret mounted as a volume rotates by swapping its `..data` symlink: the paths stay, the files
//! behind them change. The resolver stats both files on each handshake (two `stat` calls, far
//! cheaper than the handshake itself) and reloads when their identity or modification time changed,
//! so a rotated certificate is served without a restart. A half-written pair that fails to load is
//! logged and the previous certificate kept.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds no PEM certificate or key usable here: {source}")]
    Pem {
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the key in {path} cannot be used: {source}")]
    Key {
        path: String,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("the front-proxy CA is not usable: {0}")]
    ClientCa(String),
}

/// Identity of the files behind the paths: changes when a Secret volume swaps `..data`.
type Stamp = [(u64, u64, i64, i64); 2];

fn stamp(cert: &Path, key: &Path) -> io::Result<Stamp> {
    let one =
        |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()));
    Ok([one(cert)?, one(key)?])
}

#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<(Stamp, Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let stamp = stamp(cert_path, key_path).map_err(|source| TlsError::Read {
            path: cert_path.display().to_string(),
            source,
        })?;
        let key = load_certified_key(cert_path, key_path, &provider)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new((stamp, key)),
        })
    }

    fn refresh(&self) {
        let Ok(now) = stamp(&self.cert_path, &self.key_path) else {
            return; // mid-swap: keep serving what we have
        };
        if self.current.read().is_ok_and(|c| c.0 == now) {
            return;
        }
        match load_certified_key(&self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                if let Ok(mut current) = self.current.write() {
                    *current = (now, key);
                    tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "new certificate files do not load; still serving the previous one")
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        self.current.read().ok().map(|c| c.1.clone())
    }
}

fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| TlsError::Pem { path, source }
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(pem_err(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(cert))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| TlsError::Key {
            path: key.display().to_string(),
            source,
        })?;
    Ok(Arc::new(CertifiedKey::new(certs, signing_key)))
}

/// A server configuration for TLS 1.2+ that takes its certificate from `resolver`.
pub fn server_config(resolver: Arc<ReloadingCert>) -> Result<rustls::ServerConfig, TlsError> {
    server_config_with_clients(resolver, None)
}

/// `server_config` that also asks for a client certificate signed by `client_ca_pem` (the hub's
/// front proxy, for the proxy API). A client without one (an API server calling a webhook) is
/// still served; only a certificate that is presented must verify.
pub fn server_config_with_clients(
    resolver: Arc<ReloadingCert>,
    client_ca_pem: Option<&str>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = resolver.provider.clone();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| TlsError::ClientCa(e.to_string()))?;
                roots.add(cert)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The ring provider, chosen explicitly so that no process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The admission port's listener: TLS handshakes run off the accept path (10 s each at most), so a
/// silent client never holds up the others; finished connections queue for the server. At most
/// `max_connections` are open at once: the next waits in the kernel's backlog until one closes, so
/// a flood of idle connections costs file descriptors up to that cap and no more.
#[derive(Debug)]
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(Counted<TlsStream<TcpStream>>, SocketAddr)>,
}

/// A handshake that has not finished in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        config: rustls::ServerConfig,
        max_connections: usize,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = mpsc::channel(256);
        let open = Arc::new(Semaphore::new(max_connections.max(1)));
        tokio::spawn(async move {
            loop {
                // A place first, then the connection: at the cap, new ones wait unaccepted.
                let Ok(permit) = open.clone().acquire_owned().await else {
                    break;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Nagle's algorithm adds tens of milliseconds to small responses.
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let conn_tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let counted = Counted {
                                inner: tls,
                                _open: permit,
                            };
                            let _ = conn_tx.send((counted, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    break;
                }
            }
        });
        Ok(Self { local_addr, ready })
    }

    /// The next connection, handshake done.
    pub async fn accept(&mut self) -> (Counted<TlsStream<TcpStream>>, SocketAddr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Counted<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        TlsListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// A connection that holds one of the listener's places until it is dropped (closed).
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    _open: OwnedSemaphorePermit,
}

impl<S> Counted<S> {
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Who is at the other end of a connection: the common name of its verified client certificate.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub client_common_name: Option<String>,
}

impl Peer {
    /// Who presented which client certificate on `connection`.
    pub fn of(connection: &Counted<TlsStream<TcpStream>>) -> Self {
        let (_, session) = connection.get_ref().get_ref();
        let client_common_name = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|der| common_name(der));
        Peer { client_common_name }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Peer::of(stream.io())
    }
}

fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}
