//! Snapshot storage: a `StorageLocation` opened as an [`ObjectStore`] (the `object_store` crate's
//! local filesystem or S3 client), and the hub loop that checks every location by writing, reading
//! back and deleting a probe object.
//!
//! The S3 client's HTTP goes through [`HyperConnector`]: hyper-rustls with the system's roots plus
//! the location's own CA bundle, so the hub server carries one TLS stack (rustls + ring) and no
//! second HTTP client.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{S3Location, StorageLocation, StorageLocationStatus};
use multicluster_core::keys;
use multicluster_core::snapshot::location::{self, AVAILABLE};
use multicluster_core::{SYSTEM_NAMESPACE, conditions};
use object_store::client::{
    HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse,
    HttpResponseBody, HttpService,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Opens `location` as an object store rooted at its path or bucket prefix. S3 credentials come
/// from the location's Secret in the hub's namespace (keys `accessKeyId`, `secretAccessKey`).
pub async fn open(
    hub: &Client,
    location: &StorageLocation,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    match (&location.spec.filesystem, &location.spec.s3) {
        (Some(fs), _) => {
            let path = std::path::Path::new(&fs.path);
            if !path.is_dir() {
                bail!(
                    "directory {} does not exist on the hub server (mount a volume there, or create it)",
                    fs.path
                );
            }
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .with_context(|| format!("opening directory {}", fs.path))?
                .with_automatic_cleanup(true);
            Ok(Arc::new(store))
        }
        (None, Some(s3)) => open_s3(hub, s3).await,
        (None, None) => bail!("the location sets neither spec.filesystem nor spec.s3"),
    }
}

/// The access key ID and secret access key of S3 location `s3`, from its Secret on the hub.
pub async fn s3_keys(hub: &Client, s3: &S3Location) -> anyhow::Result<(String, String)> {
    let secret_name = &s3.credentials_secret.name;
    let secret = Api::<Secret>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
        .get_opt(secret_name)
        .await
        .with_context(|| format!("reading Secret {SYSTEM_NAMESPACE}/{secret_name}"))?
        .ok_or_else(|| anyhow!("credentials Secret {SYSTEM_NAMESPACE}/{secret_name} not found"))?;
    let value = |key: &str| -> anyhow::Result<String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| anyhow!("Secret {SYSTEM_NAMESPACE}/{secret_name} has no key {key}"))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| {
            anyhow!("key {key} of Secret {SYSTEM_NAMESPACE}/{secret_name} is not UTF-8")
        })
    };
    Ok((value("accessKeyId")?, value("secretAccessKey")?))
}

async fn open_s3(hub: &Client, s3: &S3Location) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let (access_key_id, secret_access_key) = s3_keys(hub, s3).await?;
    // A few quick retries: a check or a snapshot should say what is wrong within seconds, not
    // back off for minutes against an endpoint that is down.
    let retry = object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    s3_store(s3, access_key_id, secret_access_key, retry)
}

/// The store of S3 location `s3` with these keys: the hub server's (keys from the location's
/// Secret on the hub) and the mover's (keys from its environment).
pub fn s3_store(
    s3: &S3Location,
    access_key_id: String,
    secret_access_key: String,
    retry: object_store::RetryConfig,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_access_key_id(access_key_id)
        .with_secret_access_key(secret_access_key)
        .with_virtual_hosted_style_request(!s3.force_path_style)
        .with_http_connector(HyperConnector::new(s3.ca_bundle.as_deref())?)
        .with_retry(retry);
    if let Some(endpoint) = &s3.endpoint {
        // Plain HTTP only when the user wrote an http:// endpoint themselves.
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    let store = builder.build().context("configuring the S3 client")?;
    match s3
        .prefix
        .as_deref()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(prefix) => Ok(Arc::new(object_store::prefix::PrefixStore::new(
            store, prefix,
        ))),
        None => Ok(Arc::new(store)),
    }
}

/// Writes, reads back and deletes a probe object; the error says which step failed.
pub async fn probe(store: &dyn ObjectStore, token: &str) -> anyhow::Result<()> {
    let path = Path::from(format!(".multicluster-probe-{token}"));
    let content = Bytes::from(format!("kubectl-multicluster storage check {token}\n"));
    store
        .put(&path, PutPayload::from_bytes(content.clone()))
        .await
        .context("writing the probe object")?;
    let read = store
        .get(&path)
        .await
        .context("reading the probe object back")?
        .bytes()
        .await
        .context("reading the probe object back")?;
    if read != content {
        bail!("the probe object read back differs from what was written");
    }
    store
        .delete(&path)
        .await
        .context("deleting the probe object")?;
    Ok(())
}

/// Checks every `StorageLocation` in the hub's namespace when it is new, changed, asked for
/// (`multicluster.dev/check-requested`) or [`location::RECHECK_AFTER`] old, and records the
/// verdict as its `Available` condition.
pub async fn check_locations(hub: Client, run: crate::loops::Loop) {
    let api: Api<StorageLocation> = Api::namespaced(hub.clone(), SYSTEM_NAMESPACE);
    crate::loops::run_controller(api, check_one, Arc::new(hub), run).await;
}

async fn check_one(
    location: Arc<StorageLocation>,
    hub: Arc<Client>,
) -> Result<Action, kube::Error> {
    let now = Timestamp::now();
    if let Some(wait) = location::check_due(&location, now) {
        return Ok(Action::requeue(wait));
    }
    let name = location.name_any();
    let token = format!("{}", now.as_millisecond());
    let verdict = match open(&hub, &location).await {
        Ok(store) => probe(store.as_ref(), &token).await,
        Err(e) => Err(e),
    };
    let (available, reason, message) = match &verdict {
        Ok(()) => (
            true,
            "Checked",
            "wrote, read back and deleted a probe object".to_owned(),
        ),
        Err(e) => (false, "CheckFailed", format!("{e:#}")),
    };
    match &verdict {
        Ok(()) => tracing::info!(location = %name, "storage location available"),
        Err(e) => {
            tracing::warn!(location = %name, error = %format!("{e:#}"), "storage location check failed")
        }
    }
    let previous = location.status.clone().unwrap_or_default();
    let new_status = StorageLocationStatus {
        conditions: vec![conditions::condition(
            &previous.conditions,
            AVAILABLE,
            available,
            reason,
            message,
            location.metadata.generation,
            now,
        )],
        last_check_time: Some(Time(now)),
        last_check_request: location.annotations().get(keys::CHECK_REQUESTED).cloned(),
        // Not the sweep's record: absent from the merge patch, so it stays as the sweep wrote it.
        last_collection: None,
    };
    Api::<StorageLocation>::namespaced((*hub).clone(), SYSTEM_NAMESPACE)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": new_status })),
        )
        .await?;
    Ok(Action::requeue(location::RECHECK_AFTER))
}

/// The S3 client's HTTP transport: hyper over rustls (ring), trusting the system's roots and the
/// location's CA bundle.
#[derive(Debug)]
pub struct HyperConnector {
    transport: Transport,
}

type Transport = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector>,
    HttpRequestBody,
>;

/// Bounds the wait for a response's headers (an endpoint that accepts and then hangs).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

impl HyperConnector {
    pub fn new(ca_bundle: Option<&str>) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        // A host without system roots (a scratch image with only a private CA) still works.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = ca_bundle {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(cert.context("reading spec.s3.caBundle")?)
                    .context("adding a certificate of spec.s3.caBundle")?;
                added += 1;
            }
            if added == 0 {
                bail!("spec.s3.caBundle holds no PEM certificate");
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let transport =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(Self { transport })
    }
}

impl object_store::client::HttpConnector for HyperConnector {
    fn connect(&self, _options: &object_store::ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(HyperService(self.transport.clone())))
    }
}

#[derive(Debug)]
struct HyperService(Transport);

#[async_trait::async_trait]
impl HttpService for HyperService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = tokio::time::timeout(RESPONSE_TIMEOUT, self.0.request(request))
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Timeout, e))?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        let (parts, body) = response.into_parts();
        let body = body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}
