//! Certificate rotation without restart: the files are swapped the way a Secret volume swaps its
//! `..data` symlink, and the next handshake is served the new certificate.

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

async fn served_certificate(addr: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(multicluster_webhook::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), stream)
        .await
        .unwrap();
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
    let tls = multicluster_webhook::tls::TlsListener::new(listener, config).unwrap();
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
