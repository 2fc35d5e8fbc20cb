//! A TLS-terminating proxy in front of the broker, with a CA of its own: an
//! `amqps://` deployment with a private CA (and, optionally, client
//! certificates) on a machine whose RabbitMQ speaks plain AMQP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};

/// The proxy, its CA, and a client certificate that CA signed.
pub struct TlsProxy {
    pub port: u16,
    dir: tempfile::TempDir,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    _stop: tokio_util::sync::DropGuard,
}

impl TlsProxy {
    /// Listens on 127.0.0.1 with a certificate for `127.0.0.1` and
    /// `localhost` signed by a fresh CA; with `require_client_cert`, only
    /// clients with a certificate from that CA get through.
    pub async fn start(upstream: SocketAddr, require_client_cert: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let acceptor = acceptor(dir.path(), require_client_cert);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (handshakes, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(serve(
            listener,
            acceptor,
            upstream,
            Counters {
                handshakes: handshakes.clone(),
                refused: refused.clone(),
            },
            stop.clone(),
        ));
        Self {
            port,
            dir,
            handshakes,
            refused,
            _stop: stop.drop_guard(),
        }
    }

    /// The broker through this proxy, by IP (the certificate names it too).
    pub fn amqps_url(&self) -> String {
        format!("amqps://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// PEM of the CA that signed the proxy's and the client's certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The client certificate and its key, PEM.
    pub fn client_files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("client.pem"),
            self.dir.path().join("client-key.pem"),
        )
    }

    /// TLS handshakes that succeeded.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed (an untrusted or missing certificate).
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

/// A fresh CA and, signed by it, a certificate for `127.0.0.1` and `localhost`
/// and a client certificate; the CA and the client's files go into `dir`. With
/// `require_client_cert`, only clients with a certificate of that CA get through.
fn acceptor(dir: &std::path::Path, require_client_cert: bool) -> TlsAcceptor {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "warden test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["warden-worker".to_owned()]).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.join("client-key.pem"), client_key.serialize_pem()).unwrap();

    let provider = Arc::new(crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(
            vec![server.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// Handshakes that succeeded and failed.
struct Counters {
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

/// Accepts TLS connections on `listener` and pipes each to `upstream` until `stop`.
async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    counters: Counters,
    stop: tokio_util::sync::CancellationToken,
) {
    let Counters {
        handshakes,
        refused,
    } = counters;
    loop {
        let (tcp, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let (acceptor, handshakes, refused, stop) = (
            acceptor.clone(),
            handshakes.clone(),
            refused.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            handshakes.fetch_add(1, Ordering::Relaxed);
            let Ok(mut broker) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut tls, &mut broker) => {}
            }
        });
    }
}
