//! Fresh certificates for one playground cluster: its own CA, the API server's serving certificate,
//! an admin client certificate (`O=system:masters`) and the service-account signing key.

use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// PEM text of everything a cluster needs; written to its directory by the caller.
#[derive(Debug)]
pub struct ClusterCerts {
    pub ca_cert: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    pub service_account_key: String,
    pub service_account_pub: String,
    /// The front proxy (aggregation layer): the CA aggregated API servers trust for the API
    /// server's forwarded requests, and the client certificate the API server presents to them.
    pub front_proxy_ca_cert: String,
    pub front_proxy_client_cert: String,
    pub front_proxy_client_key: String,
    /// The API server's identity towards admission webhooks: a CA of its own (which the hub
    /// server trusts for its admission routes) and the client certificate the API server presents
    /// when it calls a webhook.
    pub admission_ca_cert: String,
    pub admission_client_cert: String,
    pub admission_client_key: String,
    /// Client certificates of the cluster's own components (controller-manager, scheduler,
    /// kube-proxy, each node's kubelet), by the file stem the caller writes them under.
    pub components: Vec<(String, String, String)>,
}

/// A component that authenticates to its cluster's API server with a client certificate: the user
/// names are the ones Kubernetes' bootstrap RBAC (and the Node authorizer) grant exactly their
/// component's rights.
#[derive(Debug, Clone)]
pub struct Component {
    /// Where its files go: `<stem>.crt`, `<stem>.key`.
    pub stem: String,
    pub common_name: String,
    pub organization: Option<String>,
}

impl Component {
    pub fn new(stem: &str, common_name: &str, organization: Option<&str>) -> Self {
        Self {
            stem: stem.to_owned(),
            common_name: common_name.to_owned(),
            organization: organization.map(str::to_owned),
        }
    }

    /// A node's kubelet: `system:node:<name>` in `system:nodes`, what the Node authorizer confines
    /// to that node's own objects.
    pub fn kubelet(node: &str) -> Self {
        Self::new(
            &format!("kubelet-{node}"),
            &format!("system:node:{node}"),
            Some("system:nodes"),
        )
    }
}

/// Common name of the API server's admission client certificate (the hub server's default).
pub const ADMISSION_CLIENT: &str = "kube-apiserver-admission";

/// Common name of the front-proxy client certificate (as kubeadm names it).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// The first address of the playground's service range: the `kubernetes` Service's ClusterIP,
/// which in-cluster clients dial and the serving certificate must therefore name.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// Everything `cluster` needs; its API server's serving certificate also names `listen` (the
/// address it listens on besides loopback names), and a client certificate is made for each of
/// `components`.
pub fn generate(
    cluster: &str,
    listen: Ipv4Addr,
    components: &[Component],
) -> Result<ClusterCerts, rcgen::Error> {
    let (ca_cert, issuer) = new_ca(cluster)?;

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ])?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)));
    if listen != Ipv4Addr::LOCALHOST {
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(listen)));
    }
    serving.distinguished_name = name("kube-apiserver", None);
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    let (admin_cert, admin_key) =
        client_cert("multicluster-admin", Some("system:masters"), &issuer)?;

    let (front_proxy_ca, front_proxy_issuer) = new_ca(&format!("{cluster} front proxy"))?;
    let (front_proxy_cert, front_proxy_key) =
        client_cert(FRONT_PROXY_CLIENT, None, &front_proxy_issuer)?;

    let (admission_ca, admission_issuer) = new_ca(&format!("{cluster} admission clients"))?;
    let (admission_cert, admission_key) = client_cert(ADMISSION_CLIENT, None, &admission_issuer)?;

    let components = components
        .iter()
        .map(|c| {
            let (cert, key) = client_cert(&c.common_name, c.organization.as_deref(), &issuer)?;
            Ok((c.stem.clone(), cert.pem(), key.serialize_pem()))
        })
        .collect::<Result<_, rcgen::Error>>()?;

    let sa_key = KeyPair::generate()?;
    Ok(ClusterCerts {
        components,
        admission_ca_cert: admission_ca.pem(),
        admission_client_cert: admission_cert.pem(),
        admission_client_key: admission_key.serialize_pem(),
        front_proxy_ca_cert: front_proxy_ca.pem(),
        front_proxy_client_cert: front_proxy_cert.pem(),
        front_proxy_client_key: front_proxy_key.serialize_pem(),
        ca_cert: ca_cert.pem(),
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
        service_account_pub: sa_key.public_key_pem(),
        service_account_key: sa_key.serialize_pem(),
    })
}

/// A CA and a serving certificate for 127.0.0.1/localhost, for the hub server the playground runs
/// as a local process (the API server calls it at `https://127.0.0.1:PORT`, trusting the CA).
#[derive(Debug)]
pub struct ServingCerts {
    pub ca_cert: String,
    pub cert: String,
    pub key: String,
}

pub fn generate_loopback_serving(
    service: &str,
    also: &[String],
) -> Result<ServingCerts, rcgen::Error> {
    let mut names = vec!["localhost".to_owned()];
    names.extend_from_slice(also);
    generate_serving(service, &names, &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
}

/// A fresh CA and a serving certificate it signed for `dns_names` and `ips`.
pub fn generate_serving(
    service: &str,
    dns_names: &[String],
    ips: &[IpAddr],
) -> Result<ServingCerts, rcgen::Error> {
    let (ca_cert, issuer) = new_ca(service)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.distinguished_name = name(service, None);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(ServingCerts {
        ca_cert: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A client certificate (and its key) for `common_name` in `organization`, signed by `issuer`.
fn client_cert(
    common_name: &str,
    organization: Option<&str>,
    issuer: &Issuer<'static, KeyPair>,
) -> Result<(rcgen::Certificate, KeyPair), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common_name, organization);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert, key))
}

/// A fresh self-signed CA named after what it signs for, and the issuer that signs with it.
fn new_ca(label: &str) -> Result<(rcgen::Certificate, Issuer<'static, KeyPair>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = name(
        &format!("kubectl-multicluster playground CA ({label})"),
        None,
    );
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert, Issuer::new(params, key)))
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cluster_gets_fresh_pem_material() {
        let a = generate("hub", Ipv4Addr::LOCALHOST, &[]).unwrap();
        let b = generate("hub", Ipv4Addr::LOCALHOST, &[Component::kubelet("n")]).unwrap();
        assert_eq!(b.components.len(), 1);
        assert_eq!(b.components[0].0, "kubelet-n");
        assert!(a.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.admin_key.contains("PRIVATE KEY"));
        assert!(a.service_account_pub.contains("PUBLIC KEY"));
        assert_ne!(a.ca_cert, b.ca_cert, "certificates must never be reused");
    }
}
