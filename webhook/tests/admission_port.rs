//! The admission port's listener, in process over real TLS on loopback: certificate rotation
//! without restart (the files are swapped the way a Secret volume swaps its `..data` symlink, and
//! the next handshake is served the new certificate), the connection cap, and the header read
//! timeout that closes a client that never finishes its headers.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio_rustls::TlsConnector;

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: rcgen::Issuer::new(params, key),
        pem,
    }
}

/// Writes a fresh leaf certificate for 127.0.0.1 into `dir/<version>/` and points `dir/..data` at it,
/// as the kubelet does for a Secret volume (`tls.crt` → `..data/tls.crt`).
fn write_version(ca: &Ca, dir: &Path, version: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let cert = params.signed_by(&key, &ca.issuer).unwrap().pem();
    let version_dir = dir.join(version);
    std::fs::create_dir_all(&version_dir).unwrap();
    std::fs::write(version_dir.join("tls.crt"), &cert).unwrap();
    std::fs::write(version_dir.join("tls.key"), key.serialize_pem()).unwrap();
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(version, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = dir.join(file);
        if !link.exists() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
    cert
}

fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(multicluster_webhook::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A handshake with the server at `addr`, or the error (a timeout when it is never accepted).
async fn handshake(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    connector(ca_pem)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), stream)
        .await
}

/// The admission port as `serve` runs it (a router answering `/` with "ok"), with at most
/// `max_connections` and the given header read timeout; returns its address and the CA.
async fn admission_port(
    dir: &Path,
    max_connections: usize,
    header_read_timeout: std::time::Duration,
) -> (std::net::SocketAddr, Ca) {
    let ca = ca();
    write_version(&ca, dir, "v1");
    let resolver = Arc::new(
        multicluster_webhook::tls::ReloadingCert::load(
            &dir.join("tls.crt"),
            &dir.join("tls.key"),
            multicluster_webhook::tls::provider(),
        )
        .unwrap(),
    );
    let config = multicluster_webhook::tls::server_config(resolver).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls =
        multicluster_webhook::tls::TlsListener::new(listener, config, max_connections).unwrap();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let limits = multicluster_webhook::serving::Limits {
        header_read_timeout,
        ..Default::default()
    };
    tokio::spawn(multicluster_webhook::serving::serve(
        tls,
        router,
        limits,
        std::future::pending(),
    ));
    (addr, ca)
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (addr, ca) = admission_port(dir.path(), 16, std::time::Duration::from_secs(1)).await;
    let mut slow = handshake(addr, &ca.pem).await.unwrap();
    slow.write_all(b"POST /validate/intent HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    // The rest of the headers never comes. The server must end the connection (it may say 408
    // first); a bound far above the 1 s timeout, so that only a server that never does fails.
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        slow.read_to_end(&mut answer),
    )
    .await;
    assert!(
        ended.is_ok(),
        "the connection was still open 15 s after the headers stalled"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // A client that sends its request gets its answer.
    let mut quick = handshake(addr, &ca.pem).await.unwrap();
    quick
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    quick.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).ends_with("ok"));
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, ca) = admission_port(dir.path(), 2, std::time::Duration::from_secs(10)).await;
    let first = handshake(addr, &ca.pem).await.unwrap();
    let _second = handshake(addr, &ca.pem).await.unwrap();
    // The third is not accepted (its handshake gets no answer) while two are open...
    let third = tokio::spawn({
        let ca = ca.pem.clone();
        async move { handshake(addr, &ca).await }
    });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served beyond the cap of 2"
    );
    // ...and is, once one closes.
    drop(first);
    let third = tokio::time::timeout(std::time::Duration::from_secs(15), third)
        .await
        .expect("the third connection was never served after one closed")
        .unwrap();
    assert!(third.is_ok(), "{third:?}");
}

async fn served_certificate(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let tls = handshake(addr, ca_pem).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let first = write_version(&ca, dir.path(), "v1");
    let resolver = Arc::new(
        multicluster_webhook::tls::ReloadingCert::load(
            &dir.path().join("tls.crt"),
            &dir.path().join("tls.key"),
            multicluster_webhook::tls::provider(),
        )
        .unwrap(),
    );
    let config = multicluster_webhook::tls::server_config(resolver).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = multicluster_webhook::tls::TlsListener::new(listener, config, 16).unwrap();
    tokio::spawn(async move {
        axum::serve(tls, axum::Router::new()).await.unwrap();
    });

    let der_of = |pem: &str| {
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    };
    assert_eq!(served_certificate(addr, &ca.pem).await, der_of(&first));

    let second = write_version(&ca, dir.path(), "v2");
    assert_ne!(first, second);
    assert_eq!(
        served_certificate(addr, &ca.pem).await,
        der_of(&second),
        "the new certificate must be served without a restart"
    );
}
