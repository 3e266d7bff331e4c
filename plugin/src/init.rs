//! `kubectl multicluster init`: installs the hub server into the hub cluster (CRDs, namespace,
//! ServiceAccount, least-privilege RBAC, Deployment, Service, PDB, serving certificate) and registers
//! its webhooks, last, once it is available, so that a hub is never left with webhooks pointing at
//! nothing.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use multicluster_core::{SYSTEM_NAMESPACE, install};
use serde::Serialize;

use crate::output::{self, OutputFormat, Tabular};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Print what would be installed (YAML) and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Take the serving certificate from cert-manager (Issuer + Certificate, CA injected) instead of
    /// a self-signed one generated here
    #[arg(long)]
    pub cert_manager: bool,
    /// The hub server image
    #[arg(long, default_value_t = install::default_image())]
    pub image: String,
    #[arg(long, default_value_t = 2)]
    pub replicas: u32,
    /// Let only these addresses (CIDRs of your API servers, as pods see them) reach the admission
    /// port, with a NetworkPolicy: for hubs whose API server cannot present an admission client
    /// certificate (see docs/hub-server.md). Needs a network plugin that enforces NetworkPolicy
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    pub admission_from: Vec<String>,
    /// Register the proxy API (`kubectl multicluster proxy`) with the hub's API server. Off by
    /// default: while the hub server is down, a registered but unavailable API blocks namespace
    /// deletion on the hub
    #[arg(long)]
    pub proxy_api: bool,
    /// Register the webhooks without waiting for the hub server to be available (writes to managed
    /// objects fail until it is)
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the hub server
    #[arg(long, default_value = "180", value_name = "SECONDS")]
    pub timeout: u64,
    /// Remove the hub server: its webhook configurations first (so that nothing is left pointing
    /// at a server that is gone), then the server, its RBAC and certificate. The CRDs and the
    /// multicluster-system namespace stay (they hold your members and snapshots)
    #[arg(long, conflicts_with_all = ["dry_run", "cert_manager", "no_wait"])]
    pub uninstall: bool,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct InitReport {
    pub applied: Vec<String>,
    pub webhooks_registered: bool,
    pub certificates: &'static str,
}

/// What `init --uninstall` removed.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct UninstallReport {
    pub removed: Vec<String>,
}

impl Tabular for UninstallReport {
    fn headers(&self) -> Vec<&'static str> {
        vec!["removed"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.removed.iter().map(|a| vec![a.clone()]).collect()
    }
}

impl Tabular for InitReport {
    fn headers(&self) -> Vec<&'static str> {
        vec!["applied"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.applied.iter().map(|a| vec![a.clone()]).collect()
    }
}

/// The serving certificate's CA: the existing Secret's (so running `init` again does not rotate
/// it), else a new self-signed CA and certificate stored in the Secret.
async fn self_signed_ca(client: &Client) -> anyhow::Result<(String, bool)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    if let Some(existing) = secrets.get_opt(install::TLS_SECRET).await?
        && let Some(ca) = existing.data.as_ref().and_then(|d| d.get("ca.crt"))
    {
        return Ok((String::from_utf8_lossy(&ca.0).into_owned(), false));
    }
    let dns = install::service_dns_name();
    let certs = crate::local::certs::generate_serving(
        "multicluster-webhook",
        &[dns.clone(), format!("{dns}.cluster.local")],
        &[],
    )?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(install::TLS_SECRET.to_owned()),
            namespace: Some(SYSTEM_NAMESPACE.to_owned()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(
            [
                ("tls.crt", &certs.cert),
                ("tls.key", &certs.key),
                ("ca.crt", &certs.ca_cert),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect(),
        ),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .context("storing the serving certificate")?;
    Ok((certs.ca_cert, true))
}

async fn uninstall(client: &Client, format: OutputFormat) -> anyhow::Result<()> {
    let mut removed = Vec::new();
    for value in install::uninstall_objects() {
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let located = match crate::apply::locate(client, &value, None).await {
            Ok(located) => located,
            // A kind the hub does not serve (cert-manager's, when it is not installed): nothing to remove.
            Err(_) => continue,
        };
        match located
            .api
            .delete(&located.name, &kube::api::DeleteParams::default())
            .await
        {
            Ok(_) => {
                eprintln!("deleted {kind} {}", located.name);
                removed.push(format!("{kind}/{}", located.name));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "deleting {kind} {}; what is listed above was removed, run init --uninstall again",
                    located.name
                )));
            }
        }
    }
    eprintln!(
        "The CRDs and namespace {SYSTEM_NAMESPACE} were kept (members, snapshots, policies). To remove \
         everything: kubectl delete namespace {SYSTEM_NAMESPACE}; kubectl get crd -o name | grep multicluster.dev | xargs kubectl delete"
    );
    output::print(format, &UninstallReport { removed })
}

async fn wait_available(client: &Client, replicas: u32, timeout: Duration) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let deadline = Instant::now() + timeout;
    let wanted = i32::try_from(replicas.min(1)).unwrap_or(1);
    loop {
        let available = deployments
            .get(install::NAME)
            .await?
            .status
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        if available >= wanted {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the hub server (Deployment {SYSTEM_NAMESPACE}/{}) has no available replica after {}s, so its \
                 webhooks were NOT registered and nothing is blocked. See why with \
                 `kubectl -n {SYSTEM_NAMESPACE} describe deployment {0}` (image {}?), then run init again",
                install::NAME,
                timeout.as_secs(),
                install::default_image()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A CIDR as a NetworkPolicy's ipBlock takes it (`10.0.0.0/24`, `fd00::/64`), or a clear error.
fn cidr_checked(cidr: &str) -> anyhow::Result<()> {
    let valid = cidr.split_once('/').is_some_and(|(addr, bits)| {
        let max = match addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => 32,
            Ok(std::net::IpAddr::V6(_)) => 128,
            Err(_) => return false,
        };
        bits.parse::<u8>().is_ok_and(|b| b <= max)
    });
    if valid {
        Ok(())
    } else {
        anyhow::bail!("--admission-from takes CIDRs such as 10.0.0.0/24, got {cidr:?}")
    }
}

pub async fn run(
    args: InitArgs,
    client: Option<Client>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let mut objects = install::hub_server_objects(&args.image, args.replicas);
    if !args.admission_from.is_empty() {
        for cidr in &args.admission_from {
            cidr_checked(cidr)?;
        }
        objects.push(install::admission_network_policy(&args.admission_from));
    }
    if args.dry_run {
        let mut all: Vec<serde_json::Value> = multicluster_core::crds::all()
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?;
        all.extend(objects);
        let ca = "<CA of the self-signed certificate generated by init>";
        if args.cert_manager {
            all.extend(install::cert_manager_objects(args.proxy_api));
        } else {
            all.extend(install::webhook_objects(ca));
            if args.proxy_api {
                all.extend(install::proxy_api_objects(ca));
            }
        }
        let yaml = install::to_yaml(&all)?;
        let note = if args.cert_manager {
            ""
        } else {
            "# Also: Secret multicluster-system/multicluster-webhook-tls with a self-signed CA and serving\n# certificate generated at install (not printed).\n"
        };
        print!("{note}{yaml}");
        return Ok(());
    }
    let Some(client) = client else {
        bail!("no hub to install into: pass --kubeconfig/--context");
    };
    if args.uninstall {
        return uninstall(&client, format).await;
    }
    let progress = |m: &str| eprintln!("{m}");
    progress("Installing the multicluster.dev CRDs");
    crate::apply::install_crds(&client).await?;
    progress(
        "Installing the hub server (namespace, RBAC, Deployment, Service, PodDisruptionBudget)",
    );
    let mut applied = crate::apply::apply_objects(&client, &objects).await?;
    let (webhooks, certificates) = if args.cert_manager {
        let certificate_objects: Vec<_> = install::cert_manager_objects(args.proxy_api)
            .into_iter()
            .filter(|o| {
                !o["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with("WebhookConfiguration")
            })
            .collect();
        let issued = crate::apply::apply_objects(&client, &certificate_objects).await.map_err(|e| {
            e.context("cert-manager does not seem to be installed in this cluster (cert-manager.io/v1); \
                       install it, or run init without --cert-manager for self-signed certificates")
        })?;
        applied.extend(issued);
        let webhooks: Vec<_> = install::cert_manager_objects(args.proxy_api)
            .into_iter()
            .filter(|o| {
                o["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with("WebhookConfiguration")
            })
            .collect();
        (webhooks, "cert-manager")
    } else {
        let (ca, created) = self_signed_ca(&client).await?;
        progress(if created {
            "Generated a self-signed serving certificate (Secret multicluster-system/multicluster-webhook-tls)"
        } else {
            "Kept the existing serving certificate (Secret multicluster-system/multicluster-webhook-tls)"
        });
        let mut webhooks = install::webhook_objects(&ca);
        if args.proxy_api {
            webhooks.extend(install::proxy_api_objects(&ca));
        }
        (webhooks, "self-signed")
    };
    if args.no_wait {
        progress(
            "Not waiting for the hub server: writes to managed objects fail until it is available",
        );
    } else {
        progress(&format!(
            "Waiting for the hub server to be available (up to {}s)",
            args.timeout
        ));
        wait_available(&client, args.replicas, Duration::from_secs(args.timeout)).await?;
    }
    applied.extend(crate::apply::apply_objects(&client, &webhooks).await?);
    progress("Webhooks registered");
    output::print(
        format,
        &InitReport {
            applied,
            webhooks_registered: true,
            certificates,
        },
    )
}
