//! Reading a restore's target namespace on its member: every object of the kinds that make up an
//! application (the inventory `multicluster_core::snapshot::conflicts` compares), as the JSON
//! the inventory reads. Shared by the restore webhook (from the API server's watch cache) and the
//! restore loop's re-check just before it writes (a consistent read).

use kube::Client;
use kube::api::{DynamicObject, GroupVersionKind, ListParams};
use kube::discovery::ApiResource;

/// The kinds whose objects make up a namespace's application inventory.
const INVENTORY_KINDS: &[(&str, &str, &str)] = &[
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("apps", "v1", "DaemonSet"),
    ("batch", "v1", "CronJob"),
    ("batch", "v1", "Job"),
    ("", "v1", "Service"),
    ("", "v1", "PersistentVolumeClaim"),
    ("", "v1", "ConfigMap"),
];

/// How current a read of the member must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Read through to etcd (a consistent read): what the restore re-checks just before writing.
    Consistent,
    /// Served from the API server's watch cache (`resourceVersion=0`), at most the watch's lag
    /// behind: enough for admission, which the restore's own consistent re-check backs up, and
    /// it spares etcd a range read of the whole namespace on every `NamespaceRestore` CREATE.
    WatchCache,
}

/// Every object of the inventory kinds in `namespace` on the member `client` reaches, with its
/// kind set (list items come without it). An absent namespace has none.
pub async fn live_objects(
    client: &Client,
    namespace: &str,
    freshness: Freshness,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let params = match freshness {
        Freshness::Consistent => ListParams::default(),
        Freshness::WatchCache => ListParams::default().match_any(),
    };
    let lists = INVENTORY_KINDS.iter().map(|(group, version, kind)| {
        let (client, params) = (client.clone(), params.clone());
        async move {
            let request = list_request(group, version, kind, namespace, &params)?;
            if *kind == "ConfigMap" {
                config_maps(&client, request, ListEncoding::Protobuf).await
            } else {
                json_list(&client, request, kind).await
            }
        }
    });
    let all = futures::future::try_join_all(lists).await?;
    Ok(all.into_iter().flatten().collect())
}

fn list_request(
    group: &str,
    version: &str,
    kind: &str,
    namespace: &str,
    params: &ListParams,
) -> anyhow::Result<http::Request<Vec<u8>>> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Ok(
        kube::core::Request::new(<DynamicObject as kube::Resource>::url_path(
            &resource,
            Some(namespace),
        ))
        .list(params)?,
    )
}

/// A list's items with their kind set (list items come without it), read as plain JSON: the
/// inventory works on JSON, and a namespace of thousands of objects is parsed once instead of
/// into typed objects and back.
async fn json_list(
    client: &Client,
    request: http::Request<Vec<u8>>,
    kind: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut list: serde_json::Value = client.request(request).await?;
    let items = match list.get_mut("items").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(items)) => items,
        _ => Vec::new(),
    };
    Ok(items
        .into_iter()
        .map(|mut v| {
            v["kind"] = kind.into();
            v
        })
        .collect())
}

/// How the ConfigMaps of a target namespace are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListEncoding {
    Json,
    /// What the check uses (see [`config_maps`]).
    Protobuf,
}

/// The ConfigMaps of `namespace` as the admission check reads them (from the watch cache), as
/// the JSON the inventory reads, in either encoding: for tests/benches/snapshot_restore.rs,
/// which times the two side by side.
pub async fn read_config_maps(
    client: &Client,
    namespace: &str,
    encoding: ListEncoding,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let params = ListParams::default().match_any();
    let request = list_request("", "v1", "ConfigMap", namespace, &params)?;
    config_maps(client, request, encoding).await
}

/// The protobuf media type of Kubernetes' built-in kinds.
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The ConfigMaps `list` asks for, as the JSON the inventory reads (kind, name, `data`,
/// `binaryData`), read as protobuf unless `encoding` says JSON. ConfigMaps are usually most of a
/// namespace's bytes, and the API server encodes a list of them as protobuf in about two thirds
/// of the time JSON takes, which is most of what the conflict check waits for
/// (tests/bench/snapshot.sh measures both). Anything but a protobuf list in answer (an error, or
/// a server that sends JSON) is read again as JSON, so that errors read as kube's.
async fn config_maps(
    client: &Client,
    list: http::Request<Vec<u8>>,
    encoding: ListEncoding,
) -> anyhow::Result<Vec<serde_json::Value>> {
    use http_body_util::BodyExt as _;
    if encoding == ListEncoding::Protobuf {
        let (mut parts, body) = list.clone().into_parts();
        parts.headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static(PROTOBUF),
        );
        let response = client
            .send(http::Request::from_parts(parts, body.into()))
            .await?;
        let is_protobuf = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(PROTOBUF.as_bytes()));
        if response.status().is_success() && is_protobuf {
            let bytes = response.into_body().collect().await?.to_bytes();
            return config_maps_from_protobuf(&bytes);
        }
    }
    json_list(client, list, "ConfigMap").await
}

/// A `ConfigMapList` in Kubernetes' protobuf envelope (the magic `k8s\0`, then a
/// `runtime.Unknown` holding the list) as the JSON the inventory reads: `binaryData` base64 as in
/// JSON, an empty map absent as in JSON, so that a ConfigMap digests the same read either way.
pub(crate) fn config_maps_from_protobuf(body: &[u8]) -> anyhow::Result<Vec<serde_json::Value>> {
    use base64::Engine as _;
    use prost::Message as _;
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| anyhow::anyhow!("not a Kubernetes protobuf message (no k8s magic)"))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(unknown)?;
    let list =
        k8s_pb::api::core::v1::ConfigMapList::decode(unknown.raw.unwrap_or_default().as_slice())?;
    Ok(list
        .items
        .into_iter()
        .map(|config_map| {
            let mut object = serde_json::json!({
                "kind": "ConfigMap",
                "metadata": {"name": config_map.metadata.and_then(|m| m.name).unwrap_or_default()},
            });
            if !config_map.data.is_empty() {
                object["data"] = serde_json::to_value(config_map.data).unwrap_or_default();
            }
            if !config_map.binary_data.is_empty() {
                object["binaryData"] = config_map
                    .binary_data
                    .into_iter()
                    .map(|(key, bytes)| {
                        (
                            key,
                            base64::engine::general_purpose::STANDARD
                                .encode(bytes)
                                .into(),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            object
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_pb::api::core::v1::{ConfigMap, ConfigMapList};
    use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use prost::Message as _;
    use serde_json::json;

    use super::config_maps_from_protobuf;

    /// What the API server sends for a `ConfigMapList` as protobuf (as in k8s.io/apimachinery's
    /// protobuf serializer: the magic, then a `runtime.Unknown` holding the encoded list).
    fn envelope(list: &ConfigMapList) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".to_owned()),
                kind: Some("ConfigMapList".to_owned()),
            }),
            raw: Some(list.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [b"k8s\0".as_slice(), &unknown.encode_to_vec()].concat()
    }

    fn config_map(name: &str, data: &[(&str, &str)], binary: &[(&str, &[u8])]) -> ConfigMap {
        ConfigMap {
            metadata: Some(ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            }),
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            binary_data: binary
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    #[test]
    fn config_maps_read_as_protobuf_have_the_inventory_of_the_same_config_maps_read_as_json() {
        let list = ConfigMapList {
            items: vec![
                config_map("text", &[("b", "2"), ("a", "1\n\"quoted\"")], &[]),
                config_map("binary", &[], &[("blob", &[0, 159, 146, 150, 255])]),
                config_map("both", &[("a", "1")], &[("blob", b"x")]),
                config_map("empty", &[], &[]),
                config_map("kube-root-ca.crt", &[("ca.crt", "pem")], &[]),
            ],
            ..Default::default()
        };
        // The same ConfigMaps as the API server writes them in JSON: keys sorted, binaryData in
        // base64, empty maps left out.
        let json = [
            json!({"kind": "ConfigMap", "metadata": {"name": "text", "uid": "u1"}, "data": {"a": "1\n\"quoted\"", "b": "2"}}),
            json!({"kind": "ConfigMap", "metadata": {"name": "binary"}, "binaryData": {"blob": "AJ+Slv8="}}),
            json!({"kind": "ConfigMap", "metadata": {"name": "both"}, "data": {"a": "1"}, "binaryData": {"blob": "eA=="}}),
            json!({"kind": "ConfigMap", "metadata": {"name": "empty"}}),
            json!({"kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "pem"}}),
        ];
        let from_protobuf = config_maps_from_protobuf(&envelope(&list)).unwrap();
        let inventory = multicluster_core::snapshot::inventory(&from_protobuf);
        assert_eq!(inventory, multicluster_core::snapshot::inventory(&json));
        // Four ConfigMaps with four different digests (kube-root-ca.crt is left out).
        let digests: std::collections::BTreeSet<_> = inventory
            .iter()
            .map(|a| a.aspects["data"].clone())
            .collect();
        assert_eq!((inventory.len(), digests.len()), (4, 4), "{inventory:?}");
    }

    #[test]
    fn a_body_that_is_not_a_kubernetes_protobuf_list_is_an_error_not_an_empty_namespace() {
        for body in [&b"{\"items\": []}"[..], b"k8s\0\xff\xff\xff", b""] {
            assert!(config_maps_from_protobuf(body).is_err(), "{body:?}");
        }
    }

    proptest::proptest! {
        /// Any body a member (or something posing as one) sends, after the envelope's magic or
        /// not, and any real list with bytes changed: read or refused, never a panic.
        #[test]
        fn the_protobuf_reader_never_panics(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            with_magic in proptest::prelude::any::<bool>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            xor in 1u8..,
        ) {
            let mut body = if with_magic { b"k8s\0".to_vec() } else { Vec::new() };
            body.extend(&tail);
            let _ = config_maps_from_protobuf(&body);
            let list = ConfigMapList {
                items: vec![config_map("a", &[("k", "v")], &[("b", &[0, 1])])],
                ..Default::default()
            };
            let mut real = envelope(&list);
            let i = at.index(real.len());
            real[i] ^= xor;
            let _ = config_maps_from_protobuf(&real);
        }
    }
}
