//! rustls configurations for the API: TLS 1.3 only, Ed25519 only.
//!
//! The server presents a self-signed certificate for the cluster's derived key. The client
//! ignores certificates altogether and checks the handshake's signature against the pinned
//! public key: a server that does not hold the cluster's key cannot complete the handshake.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::identity::Identity;

/// The name clients ask for (the certificate carries it; the pin is what is checked).
pub const SERVER_NAME: &str = "shoal-cluster";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's provider: on a CPU without AES instructions (small edge boards, emulated
/// machines), ChaCha20-Poly1305 first, which is several times faster there than AES-GCM in
/// software; the server then picks by its own order, as Go's TLS does.
fn server_provider(aes_in_hardware: bool) -> (Arc<rustls::crypto::CryptoProvider>, bool) {
    let mut provider = rustls::crypto::ring::default_provider();
    let prefer_chacha = !aes_in_hardware;
    if prefer_chacha {
        provider.cipher_suites.sort_by_key(|suite| {
            suite.suite() != rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        });
    }
    (Arc::new(provider), prefer_chacha)
}

#[cfg(target_arch = "x86_64")]
fn aes_in_hardware() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn aes_in_hardware() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn aes_in_hardware() -> bool {
    false
}

/// The server's configuration: the cluster's key in a self-signed certificate.
pub fn server_config(identity: &Identity) -> Result<ServerConfig, TlsError> {
    let key_pair = rcgen::KeyPair::try_from(identity.pkcs8.as_slice())?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let cert = params.self_signed(&key_pair)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.pkcs8.clone()));
    let (provider, own_order) = server_provider(aes_in_hardware());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)?;
    config.ignore_client_order = own_order;
    Ok(config)
}

/// The client's configuration: trusts only the pinned Ed25519 key.
pub fn client_config(server_key: [u8; 32]) -> Result<ClientConfig, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { key: server_key }))
        .with_no_client_auth();
    Ok(config)
}

/// Accepts TLS connections on `listener` for ever, each in a task of its own: the handshake
/// gets 5 s, then `serve` gets the stream and the peer's address (an IPv4 peer of a
/// dual-stack socket as IPv4). Used by clusterd's API and configd's maintenance API.
pub async fn serve_tls<F, Fut>(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    what: &'static str,
    serve: F,
) where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::net::SocketAddr) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{what}: accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small answers go out at once (no Nagle delay behind the client's delayed ACK).
        let _ = stream.set_nodelay(true);
        let from = std::net::SocketAddr::new(from.ip().to_canonical(), from.port());
        let (acceptor, serve) = (acceptor.clone(), serve.clone());
        tokio::spawn(async move {
            let handshake = acceptor.accept(stream);
            match tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await {
                Ok(Ok(tls)) => serve(tls, from).await,
                // Most often a client that does not hold the key it pins.
                Ok(Err(e)) => tracing::info!("{what} connection from {from}: TLS: {e}"),
                Err(_) => tracing::info!("{what} connection from {from}: no TLS handshake in 5 s"),
            }
        });
    }
}

/// The server name to connect with.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

#[derive(Debug)]
struct Pinned {
    key: [u8; 32],
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The key is checked in verify_tls13_signature, against the pin, not the certificate.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        _cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::General(format!(
                "the server signed with {:?}, not the cluster's Ed25519 key",
                dss.scheme
            )));
        }
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.key)
            .verify(message, dss.signature())
            .map_err(|_| {
                rustls::Error::General(
                    "the server does not hold the cluster's API key (server_key in shoalctl.toml)"
                        .into(),
                )
            })?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_aes_instructions_the_server_prefers_chacha20() {
        let first = |aes| server_provider(aes).0.cipher_suites[0].suite();
        assert_eq!(
            first(false),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        );
        assert!(server_provider(false).1, "the server's order decides");
        assert_ne!(
            first(true),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        );
        assert!(!server_provider(true).1, "the client's order decides");
    }
}
