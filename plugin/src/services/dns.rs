//! The clusterset DNS server on a member, as `join` sets it up: the server's objects
//! ([`multicluster_core::services::dns::server_objects`], the hub server's image) unless the
//! member already runs one, and the member's CoreDNS forwarding `clusterset.local` to it. Done
//! with the joining user's credentials on the member (the hub gets no right to do this).

use anyhow::Context;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::services::dns::{
    SERVER_NAME, ZONE, corefile_with_clusterset, server_objects,
};

/// Where kubeadm (and most distributions) keep CoreDNS's configuration.
const COREDNS: (&str, &str) = ("kube-system", "coredns");

/// Sets the server up on `member` running `image`; returns what it did, one line each.
pub async fn install(member: &Client, image: &str) -> anyhow::Result<Vec<String>> {
    let mut report = Vec::new();
    let deployments: Api<Deployment> = Api::namespaced(member.clone(), SYSTEM_NAMESPACE);
    if deployments.get_opt(SERVER_NAME).await?.is_some() {
        report.push(format!(
            "The {ZONE} DNS server already runs on the member ({SYSTEM_NAMESPACE}/{SERVER_NAME}): left as it is"
        ));
    } else {
        crate::apply::apply_objects(member, &server_objects(image, None))
            .await
            .context("creating the clusterset DNS server")?;
        report.push(format!(
            "Started the {ZONE} DNS server on the member ({SYSTEM_NAMESPACE}/{SERVER_NAME}, {image})"
        ));
    }
    let service = Api::<Service>::namespaced(member.clone(), SYSTEM_NAMESPACE)
        .get(SERVER_NAME)
        .await
        .context("reading the clusterset DNS server's Service")?;
    let ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .context("the clusterset DNS server's Service has no cluster IP")?;
    let configmaps: Api<ConfigMap> = Api::namespaced(member.clone(), COREDNS.0);
    let coredns = configmaps
        .get_opt(COREDNS.1)
        .await
        .context("reading CoreDNS's configuration")?;
    let version = coredns
        .as_ref()
        .and_then(|cm| cm.metadata.resource_version.clone());
    let corefile = coredns.and_then(|cm| cm.data?.get("Corefile").cloned());
    match corefile {
        None => report.push(format!(
            "No {}/{} ConfigMap with a Corefile: have the member's cluster DNS forward {ZONE} to {ip}:53 \
             (docs/services.md, Clusterset DNS)",
            COREDNS.0, COREDNS.1
        )),
        Some(corefile) => match corefile_with_clusterset(&corefile, &ip) {
            None => report.push(format!("CoreDNS already serves {ZONE}: its configuration is left as it is")),
            Some(updated) => {
                // Only over the version read: an edit made meanwhile is a conflict, not lost.
                let patch = serde_json::json!({"metadata": {"resourceVersion": version},
                                               "data": {"Corefile": updated}});
                configmaps
                    .patch(COREDNS.1, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .context("adding the clusterset zone to CoreDNS's configuration")?;
                report.push(format!(
                    "CoreDNS forwards {ZONE} to {ip}:53 now (its reload plugin picks the change up; \
                     without it, restart CoreDNS)"
                ));
            }
        },
    }
    Ok(report)
}
