//! `kubectl multicluster services list`: every multi-cluster service as the hub holds it (its
//! `ServiceImport`s): type, clusterset IPs, ports, the exporting members, what each member's data
//! planes list now, and what the exports disagree on (the Conflict condition every export
//! carries, which the hub server copies onto the hub's import).

pub mod dns;

use clap::Subcommand;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::keys::{BACKENDS, CONFLICTS};
use multicluster_core::services::{SERVICE_LABEL, mcs_api_resource};
use serde::Serialize;
use serde_json::Value;

use crate::output::{self, OutputFormat, Tabular};

#[derive(Subcommand, Debug)]
pub enum ServicesCommand {
    /// Every multi-cluster service (all namespaces, or the one -n names): type, clusterset IPs,
    /// ports, exporters, the backends listed now and any conflict between the exports
    #[command(visible_alias = "ls")]
    List,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRow {
    pub namespace: String,
    pub name: String,
    /// `ClusterSetIP` or `Headless`.
    #[serde(rename = "type")]
    pub type_: String,
    pub ips: Vec<String>,
    /// `name:port/protocol`, as the import carries them.
    pub ports: Vec<String>,
    /// The members exporting it (`status.clusters`).
    pub exporters: Vec<String>,
    /// Backend addresses listed now of those each member has (`member-1=2/3`); none for headless.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<String>,
    /// The Conflict condition's reasons and message, when the exports disagree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct ServiceTable(pub Vec<ServiceRow>);

impl Tabular for ServiceTable {
    fn headers(&self) -> Vec<&'static str> {
        vec![
            "namespace",
            "name",
            "type",
            "ips",
            "ports",
            "exporters",
            "backends",
            "conflict",
        ]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        let or_dash = |v: String| if v.is_empty() { "-".to_owned() } else { v };
        self.0
            .iter()
            .map(|r| {
                vec![
                    r.namespace.clone(),
                    r.name.clone(),
                    r.type_.clone(),
                    or_dash(r.ips.join(",")),
                    or_dash(r.ports.join(",")),
                    or_dash(r.exporters.join(",")),
                    r.backends.clone().unwrap_or_else(|| "-".to_owned()),
                    // The reasons only: the whole message is in -o json|yaml.
                    r.conflict
                        .as_deref()
                        .map(|c| c.split(':').next().unwrap_or(c).to_owned())
                        .unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect()
    }
}

/// One row from a hub `ServiceImport`.
pub fn row(import: &DynamicObject) -> ServiceRow {
    let spec = &import.data["spec"];
    let strings = |v: &Value, f: &dyn Fn(&Value) -> Option<String>| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(f).collect()
    };
    let annotation = |key: &str| import.annotations().get(key).cloned();
    ServiceRow {
        namespace: import.namespace().unwrap_or_default(),
        name: import.name_any(),
        type_: spec["type"].as_str().unwrap_or("ClusterSetIP").to_owned(),
        ips: strings(&spec["ips"], &|v| v.as_str().map(str::to_owned)),
        ports: strings(&spec["ports"], &|p| {
            let name = p["name"]
                .as_str()
                .map(|n| format!("{n}:"))
                .unwrap_or_default();
            Some(format!(
                "{name}{}/{}",
                p["port"].as_i64()?,
                p["protocol"].as_str().unwrap_or("TCP")
            ))
        }),
        exporters: strings(&import.data["status"]["clusters"], &|c| {
            c["cluster"].as_str().map(str::to_owned)
        }),
        backends: annotation(BACKENDS).filter(|b| !b.is_empty()),
        conflict: annotation(CONFLICTS),
    }
}

pub async fn run(
    cmd: ServicesCommand,
    client: Client,
    namespace: Option<String>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let ServicesCommand::List = cmd;
    let resource = mcs_api_resource("ServiceImport");
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let imports = match api.list(&ListParams::default().labels(SERVICE_LABEL)).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            anyhow::bail!(
                "the hub does not serve the Multi-Cluster Services API (ServiceImport): \
                 install the hub server with `kubectl multicluster init`"
            )
        }
        Err(e) => return Err(e.into()),
    };
    let mut rows: Vec<ServiceRow> = imports.iter().map(row).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    output::print(format, &ServiceTable(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_carries_the_type_ips_ports_exporters_and_the_conflict() {
        let import: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {
                "multicluster.dev/backends": "member-1=1/1",
                "multicluster.dev/conflicts": "PortConflict: exports disagree: member-2: port http:8080/TCP differs"}},
            "spec": {"type": "ClusterSetIP", "ips": ["10.250.0.4"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            "status": {"clusters": [{"cluster": "member-1"}, {"cluster": "member-2"}]}
        }))
        .unwrap();
        let r = row(&import);
        assert_eq!(r.ips, ["10.250.0.4"]);
        assert_eq!(r.ports, ["http:80/TCP"]);
        assert_eq!(r.exporters, ["member-1", "member-2"]);
        let table = ServiceTable(vec![r]).rows();
        assert_eq!(table[0][7], "PortConflict");
        assert_eq!(table[0][6], "member-1=1/1");
    }
}
