//! A real S3 server for end-to-end tests: MinIO (built by `tests/install-deps.sh` from the Go
//! module proxy), serving HTTPS on 127.0.0.1 (or an address the playground's pods reach) with a
//! certificate from a CA made for the test, with one bucket. Stopped when dropped.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kubectl_multicluster::local::binaries::{INSTALL_COMMAND, cache_dir};
use multicluster_core::versions;

#[derive(Debug)]
pub struct Minio {
    /// `https://ADDRESS:PORT`
    pub endpoint: String,
    /// The CA that signed the server's certificate (what a StorageLocation's `caBundle` trusts).
    pub ca_pem: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// The drive directory: `DIR/BUCKET/KEY/…` is where MinIO keeps an object.
    pub data_dir: PathBuf,
    child: Child,
}

/// The installed binary, or a panic naming the install command.
pub fn binary() -> PathBuf {
    let path = cache_dir()
        .join("minio")
        .join(versions::minio())
        .join("minio");
    assert!(
        path.is_file(),
        "MinIO {} is not installed (looked for {}); run {INSTALL_COMMAND}",
        versions::minio(),
        path.display()
    );
    path
}

impl Minio {
    /// Starts MinIO in `dir` with bucket `bucket` (a directory on its drive, which MinIO serves as
    /// a bucket) and waits until it answers its health check.
    pub fn start(dir: &Path, bucket: &str) -> Self {
        Self::start_on(dir, bucket, IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Starts MinIO listening on `address` (the playground's bridge address, which pods on its
    /// nodes reach; the certificate names it and 127.0.0.1).
    pub fn start_on(dir: &Path, bucket: &str, address: IpAddr) -> Self {
        let data_dir = dir.join("data");
        let certs_dir = dir.join("certs");
        std::fs::create_dir_all(data_dir.join(bucket)).expect("create the MinIO drive and bucket");
        std::fs::create_dir_all(&certs_dir).expect("create the MinIO certs dir");
        let certs = kubectl_multicluster::local::certs::generate_serving(
            "minio",
            &["localhost".to_owned()],
            &[address, IpAddr::V4(Ipv4Addr::LOCALHOST)],
        )
        .expect("generate MinIO's serving certificate");
        std::fs::write(certs_dir.join("public.crt"), &certs.cert).expect("write public.crt");
        std::fs::write(certs_dir.join("private.key"), &certs.key).expect("write private.key");
        let [port, console] = free_ports();
        let log = std::fs::File::create(dir.join("minio.log")).expect("create minio.log");
        let access_key = "multicluster-e2e".to_owned();
        let secret_key = format!("secret-{}", std::process::id());
        let child = Command::new(binary())
            .arg("server")
            .arg(&data_dir)
            .args(["--address", &format!("{address}:{port}")])
            .args(["--console-address", &format!("127.0.0.1:{console}")])
            .arg("--certs-dir")
            .arg(&certs_dir)
            .env("MINIO_ROOT_USER", &access_key)
            .env("MINIO_ROOT_PASSWORD", &secret_key)
            .env("MINIO_BROWSER", "off")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start minio");
        let minio = Self {
            endpoint: format!("https://{address}:{port}"),
            ca_pem: certs.ca_cert,
            bucket: bucket.to_owned(),
            access_key,
            secret_key,
            data_dir,
            child,
        };
        minio.wait_listening((address, port), dir);
        minio
    }

    /// MinIO opens its port once it serves; a TCP connect is enough to know (the test then speaks
    /// S3 through the product's own client).
    fn wait_listening(&self, (address, port): (IpAddr, u16), dir: &Path) {
        crate::eventually_blocking(
            &format!(
                "MinIO listens on {port} (see {})",
                dir.join("minio.log").display()
            ),
            Duration::from_secs(60),
            || std::net::TcpStream::connect((address, port)),
        );
    }

    /// The bucket through the hub server's own S3 code (to read or alter what the mover stored).
    pub fn store(&self) -> std::sync::Arc<dyn object_store::ObjectStore> {
        let location = multicluster_core::api::S3Location {
            bucket: self.bucket.clone(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".to_owned(),
            prefix: None,
            credentials_secret: multicluster_core::api::SecretRef {
                name: String::new(),
            },
            force_path_style: true,
            ca_bundle: Some(self.ca_pem.clone()),
        };
        multicluster_webhook::snapshot::storage::s3_store(
            &location,
            self.access_key.clone(),
            self.secret_key.clone(),
            object_store::RetryConfig::default(),
        )
        .expect("open the MinIO bucket")
    }

    /// The files MinIO keeps for the objects of its bucket, as object keys (MinIO stores an
    /// object as a directory named by its key).
    pub fn object_keys(&self) -> Vec<String> {
        let root = self.data_dir.join(&self.bucket);
        let mut keys = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.join("xl.meta").is_file() {
                    let key = path.strip_prefix(&root).expect("under the bucket");
                    keys.push(key.display().to_string());
                } else if path.is_dir() {
                    stack.push(path);
                }
            }
        }
        keys.sort();
        keys
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_ports() -> [u16; 2] {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    [
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    ]
}

/// A Secret in `multicluster-system` holding S3 credentials, as `snapshot location add --secret`
/// expects.
pub async fn credentials_secret(hub: &kube::Client, name: &str, id: &str, key: &str) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "multicluster-system"},
        "stringData": {"accessKeyId": id, "secretAccessKey": key}
    }))
    .expect("secret");
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(hub.clone(), "multicluster-system")
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .expect("create the credentials Secret");
}

impl Minio {
    /// Adds a StorageLocation for this bucket with `kubectl multicluster snapshot location add`
    /// (over TLS, trusting the CA written into `dir`, credentials in a new Secret); returns its name.
    pub async fn add_location(
        &self,
        pg: &crate::Playground,
        hub: &kube::Client,
        dir: &Path,
    ) -> String {
        let ca = dir.join("minio-ca.pem");
        std::fs::write(&ca, &self.ca_pem).expect("write the CA");
        let secret = crate::unique_name("minio");
        credentials_secret(hub, &secret, &self.access_key, &self.secret_key).await;
        let name = crate::unique_name("s3");
        let ca = ca.display().to_string();
        crate::run_ok(&mut pg.multicluster(&[
            "snapshot",
            "location",
            "add",
            &name,
            "--bucket",
            &self.bucket,
            "--endpoint",
            &self.endpoint,
            "--force-path-style",
            "--ca-file",
            &ca,
            "--secret",
            &secret,
        ]));
        name
    }
}

/// Adds a StorageLocation for a new directory `dir/archives`; returns its name and the directory.
pub fn add_directory_location(pg: &crate::Playground, dir: &Path) -> (String, PathBuf) {
    let archives = dir.join("archives");
    std::fs::create_dir_all(&archives).expect("create the archive directory");
    let name = crate::unique_name("fs");
    let path = archives.display().to_string();
    crate::run_ok(&mut pg.multicluster(&["snapshot", "location", "add", &name, "--path", &path]));
    (name, archives)
}
