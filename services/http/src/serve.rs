//! Serving a router on a listener, over TLS when a certificate is configured, until a shutdown
//! signal (then in-flight requests finish).
//!
//! TLS handshakes run on their own tasks, bounded by [`HANDSHAKE_TIMEOUT`], so a client that
//! opens a connection and says nothing holds up no one else.

use axum::Router;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ServerConfig, crypto};
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// A server certificate and its key.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl Tls {
    /// Loads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("TLS certificate {}: no certificate in the file", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("TLS certificate and key: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)) })
    }
}

/// An HTTP service, bound and not yet serving (the service recipe: [`HttpServer::bind`], then
/// [`HttpServer::run`]): the front door, the query API and the admin routes each run as one.
pub struct HttpServer {
    name: &'static str,
    listener: TcpListener,
    app: Router,
    tls: Option<Tls>,
}

impl HttpServer {
    /// Binds `address` for `app` (over TLS when `tls` is given); `name` names the service in
    /// logs and errors. Fails when the address cannot be bound.
    pub async fn bind(
        name: &'static str,
        address: SocketAddr,
        app: Router,
        tls: Option<Tls>,
    ) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(address).await?;
        Ok(HttpServer { name, listener, app, tls })
    }

    /// The address bound (the port the system chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel` fires, then lets in-flight requests finish. A server that ends
    /// otherwise (its listener failed) ends its handle with the error.
    pub fn run(self, cancel: tokio_util::sync::CancellationToken) -> tally_runtime::Handle {
        let HttpServer { name, listener, app, tls } = self;
        tally_runtime::Handle::spawn(
            name,
            cancel.clone(),
            (),
            serve(listener, app, tls, cancel.cancelled_owned()),
        )
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
        Some(tls) => {
            let listener = TlsListener::start(listener, tls.acceptor)?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
    }
}

/// Connections that have finished their TLS handshake.
struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (sender, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    // The server is gone: stop accepting, and let the port go.
                    _ = sender.closed() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(connection) => connection,
                        Err(e) => {
                            tracing::warn!("accepting a connection: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => drop(sender.send((tls, peer)).await),
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accepting task only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
