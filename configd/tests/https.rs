//! `https://` with a host name, end to end on 127.0.0.1: a fake DNS server answers the name,
//! a rustls server with a self-signed certificate (rcgen) serves the configuration, and
//! `fetch_with` trusts it through a pin, or refuses it.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection, StreamOwned, SupportedProtocolVersion};
use shoal_configd::http::{
    FetchOptions, HttpError, Request, Trust, Url, fetch_with, format_pin, spki_sha256,
};

const NAME: &str = "config.shoal.test";
const BODY: &str = "[cluster]\nname = \"lab\"\n";
const TIMEOUT: Duration = Duration::from_secs(5);

/// Answers A questions for [`NAME`] with 127.0.0.1, AAAA questions for it with nothing, and
/// every other name with NXDOMAIN. Stops when no question comes for 10 s.
fn fake_dns() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let address = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buffer) {
            let query = &buffer[..n];
            let question = &query[12..];
            let qtype = u16::from_be_bytes([query[n - 4], query[n - 3]]);
            let ours = question.starts_with(b"\x06config\x05shoal\x04test\x00");
            let mut reply = query[..2].to_vec();
            reply.extend_from_slice(if ours { &[0x81, 0x80] } else { &[0x81, 0x83] });
            let answers = u8::from(ours && qtype == 1);
            reply.extend_from_slice(&[0, 1, 0, answers, 0, 0, 0, 0]);
            reply.extend_from_slice(question);
            if answers == 1 {
                // Owner: a pointer to the question's name; A, IN, TTL 60, 127.0.0.1.
                reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
            }
            socket.send_to(&reply, from).unwrap();
        }
    });
    address
}

/// A self-signed certificate for [`NAME`] and its private key.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>, Vec<u8>) {
    let generated = rcgen::generate_simple_self_signed(vec![NAME.to_string()]).unwrap();
    let spki = generated.key_pair.public_key_der();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    (generated.cert.der().clone(), key, spki)
}

/// Always presents this certificate with this key, matching or not (`with_single_cert` refuses
/// a key that does not match, which is what an impostor server needs).
#[derive(Debug)]
struct Presents(Arc<CertifiedKey>);

impl ResolvesServerCert for Presents {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// An HTTPS server on 127.0.0.1 that answers `connections` connections with [`BODY`], then
/// stops; the port it listens on.
fn https_server(
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    versions: &[&'static SupportedProtocolVersion],
    connections: usize,
) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider.key_provider.load_private_key(key).unwrap();
    let certified = Arc::new(CertifiedKey::new(vec![certificate], signing_key));
    let config = Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Presents(certified))),
    );
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let stream = stream.unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let connection = ServerConnection::new(config.clone()).unwrap();
            let mut tls = StreamOwned::new(connection, stream);
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            // A failed handshake (the client refused us) ends this connection.
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut chunk) {
                    Ok(n) if n > 0 => request.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            if !request.starts_with(b"GET /x HTTP/1.1\r\n") {
                continue;
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                BODY.len()
            );
            let _ = tls.write_all(response.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}

fn request(host: &str, port: u16) -> Request {
    Request::get(Url::parse(&format!("https://{host}:{port}/x")).unwrap())
}

fn options(dns: SocketAddr, trust: Trust) -> FetchOptions {
    FetchOptions {
        trust,
        nameservers: Some(vec![dns]),
        ..FetchOptions::default()
    }
}

#[test]
fn a_pinned_self_signed_server_is_fetched_by_name_over_tls_1_3_and_1_2() {
    let dns = fake_dns();
    let (cert, key, spki) = certificate();
    // The pin of the certificate is the SHA-256 of the key's SubjectPublicKeyInfo.
    let pin = spki_sha256(&cert).unwrap();
    assert_eq!(
        pin.as_slice(),
        ring::digest::digest(&ring::digest::SHA256, &spki).as_ref()
    );
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let port = https_server(cert.clone(), key.clone_key(), &[versions], 1);
        let response = fetch_with(
            &request(NAME, port),
            TIMEOUT,
            &options(dns, Trust::Pin(pin)),
        )
        .unwrap_or_else(|e| panic!("{versions:?}: {e}"));
        assert_eq!(response.status, 200);
        assert_eq!(String::from_utf8(response.body).unwrap(), BODY);
    }
}

#[test]
fn a_wrong_pin_is_refused_and_says_which_key_was_found() {
    let dns = fake_dns();
    let (cert, key, _) = certificate();
    let port = https_server(cert.clone(), key, &[&rustls::version::TLS13], 1);
    let wrong = [0x42; 32];
    let error = fetch_with(
        &request(NAME, port),
        TIMEOUT,
        &options(dns, Trust::Pin(wrong)),
    )
    .unwrap_err();
    assert_eq!(
        error,
        HttpError::PinMismatch {
            host: NAME.into(),
            pin: format_pin(&wrong),
            found: format_pin(&spki_sha256(&cert).unwrap()),
        }
    );
    assert!(
        error
            .to_string()
            .starts_with("TLS with config.shoal.test: the certificate's public key is sha256:"),
        "{error}"
    );
}

#[test]
fn without_a_pin_a_self_signed_certificate_is_an_unknown_issuer() {
    let dns = fake_dns();
    let (cert, key, _) = certificate();
    let port = https_server(cert, key, &[&rustls::version::TLS13], 1);
    let error =
        fetch_with(&request(NAME, port), TIMEOUT, &options(dns, Trust::WebPki)).unwrap_err();
    let HttpError::Tls { host, reason } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(host, NAME);
    assert!(reason.contains("(unknown issuer)"), "{error}");
}

#[test]
fn a_server_with_the_pinned_certificate_but_not_its_key_is_refused() {
    let dns = fake_dns();
    let (cert, _, _) = certificate();
    let (_, other_key, _) = certificate();
    let pin = spki_sha256(&cert).unwrap();
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let port = https_server(cert.clone(), other_key.clone_key(), &[versions], 1);
        let error = fetch_with(
            &request(NAME, port),
            TIMEOUT,
            &options(dns, Trust::Pin(pin)),
        )
        .unwrap_err();
        assert!(
            matches!(&error, HttpError::Tls { reason, .. } if reason.contains("does not hold the certificate's private key")),
            "{versions:?}: {error:?}"
        );
    }
}

#[test]
fn a_name_that_does_not_exist_is_a_clear_error() {
    let dns = fake_dns();
    let error = fetch_with(
        &request("missing.shoal.test", 443),
        TIMEOUT,
        &options(dns, Trust::WebPki),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "name missing.shoal.test: no such name (NXDOMAIN from 127.0.0.1)"
    );
}

#[test]
fn plain_http_resolves_names_too() {
    let dns = fake_dns();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let n = stream.read(&mut request).unwrap();
        let host_header = format!("Host: {NAME}:{port}\r\n");
        let status = if String::from_utf8_lossy(&request[..n]).contains(&host_header) {
            "200 OK"
        } else {
            "400 Bad Request"
        };
        write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok").unwrap();
    });
    let url = Url::parse(&format!("http://{NAME}:{port}/x")).unwrap();
    let response = fetch_with(&Request::get(url), TIMEOUT, &options(dns, Trust::WebPki)).unwrap();
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"ok"[..])
    );
}
