//! What a Distribution would change on members, found by a server-side dry run on each member:
//! `distribute --dry-run=server` (for a bundle not stored yet) and `diff NAME` (for a stored one).
//! Member access uses the hub's stored credentials, so the user needs `get` on Secrets in
//! `multicluster-system` on the hub (an administrator's right).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{ConflictPolicy, MemberCluster};
use multicluster_core::cluster::Kinds;
use multicluster_core::distribution::{self, Action};
use multicluster_core::members::join::Capability;
use serde::Serialize;
use serde_json::Value;

use crate::output::Tabular;

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    Update,
    Unchanged,
    Conflict,
    Error,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ObjectChange {
    pub member: String,
    pub object: String,
    pub change: Change,
    /// Unified diff (live → what the hub would write), for Create and Update; or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Serialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub changes: Vec<ObjectChange>,
}

impl Preview {
    pub fn differs(&self) -> bool {
        self.changes.iter().any(|c| c.change != Change::Unchanged)
    }

    /// The diffs, as `kubectl diff` prints them.
    pub fn diffs(&self) -> String {
        self.changes
            .iter()
            .filter_map(|c| {
                c.detail
                    .as_ref()
                    .filter(|_| matches!(c.change, Change::Create | Change::Update))
            })
            .cloned()
            .collect()
    }
}

impl Tabular for Preview {
    fn headers(&self) -> Vec<&'static str> {
        vec!["member", "object", "change", "detail"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.changes
            .iter()
            .map(|c| {
                let detail = match c.change {
                    Change::Conflict | Change::Error => c.detail.clone().unwrap_or_default(),
                    _ => String::new(),
                };
                vec![
                    c.member.clone(),
                    c.object.clone(),
                    format!("{:?}", c.change),
                    detail,
                ]
            })
            .collect()
    }
}

/// A client for `member` with the distribution credentials the hub keeps for it: the preview
/// reads what the hub's distribution identity there would find, with that identity.
pub async fn member_client(hub: &Client, member: &MemberCluster) -> anyhow::Result<Client> {
    let name = &Capability::Distribution.secret_name(&member.spec.credentials_secret.name);
    let secret = Api::<Secret>::namespaced(hub.clone(), SYSTEM_NAMESPACE)
        .get(name)
        .await
        .with_context(|| {
            format!(
                "reading the hub's credentials for member {} (Secret {SYSTEM_NAMESPACE}/{name}; \
                 this needs `get` on Secrets in {SYSTEM_NAMESPACE})",
                kube::ResourceExt::name_any(member)
            )
        })?;
    let config = multicluster_core::members::join::client_config_from_secret(
        &member.spec.endpoint,
        &secret,
        Duration::from_secs(15),
    )?;
    Ok(Client::try_from(config)?)
}

/// Fields the API server sets that say nothing about what was applied.
fn comparable(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = o["metadata"].as_object_mut() {
        for f in [
            "managedFields",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "uid",
        ] {
            meta.remove(f);
        }
    }
    o
}

/// Secret values never reach a terminal: each is shown as `***`, marked when it changes (as
/// `kubectl diff` does).
fn mask_secrets(mut before: Option<&mut Value>, after: &mut Value) {
    if after["kind"] != "Secret" {
        return;
    }
    mask_copies_of_secret_data(after);
    if let Some(before) = before.as_deref_mut() {
        mask_copies_of_secret_data(before);
    }
    let old = before
        .as_ref()
        .map(|b| b["data"].clone())
        .unwrap_or(Value::Null);
    if let Some(data) = after["data"].as_object_mut() {
        for (key, value) in data.iter_mut() {
            *value = if old.get(key) == Some(value) {
                "***".into()
            } else {
                "*** (after)".into()
            };
        }
    }
    if let Some(before) = before
        && let Some(data) = before["data"].as_object_mut()
    {
        let new = after["data"].clone();
        for (key, value) in data.iter_mut() {
            *value = if new.get(key).is_some_and(|v| v == "***") {
                "***".into()
            } else {
                "*** (before)".into()
            };
        }
    }
}

/// The other places a Secret's values show up in: `stringData` (write-only, but a copy from the
/// hub may carry it) and kubectl's last-applied annotation, which holds the whole object as
/// applied, values included. Each is shown as `***` and compared as a whole.
fn mask_copies_of_secret_data(secret: &mut Value) {
    if let Some(data) = secret["stringData"].as_object_mut() {
        for value in data.values_mut() {
            *value = "***".into();
        }
    }
    if let Some(last_applied) = secret["metadata"]["annotations"]
        .get_mut(LAST_APPLIED)
        .filter(|v| v.is_string())
    {
        *last_applied = "*** (it holds the Secret's values)".into();
    }
}

/// kubectl's record of the object it last applied (client-side apply).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|_| value.to_string())
}

/// Dry-runs every copy (already transformed for `member`) on the member and compares.
pub async fn member_changes(
    client: &Client,
    member: &str,
    owner: distribution::Owner<'_>,
    policy: ConflictPolicy,
    copies: Vec<Value>,
) -> Vec<ObjectChange> {
    let mut kinds = Kinds::default();
    let mut located = Vec::new();
    let mut changes = Vec::new();
    for copy in copies {
        let label = describe(&copy);
        match crate::apply::locate_cached(client, &copy, None, &mut kinds).await {
            Ok(l) => located.push((label, copy, l)),
            Err(e) => changes.push(ObjectChange {
                member: member.to_owned(),
                object: label,
                change: Change::Error,
                detail: Some(format!("{e:#}")),
            }),
        }
    }
    let params = PatchParams::apply(distribution::FIELD_MANAGER)
        .force()
        .dry_run();
    let results: Vec<ObjectChange> = stream::iter(located.into_iter().map(|(label, copy, l)| {
        let params = params.clone();
        async move {
            let change = |change, detail| ObjectChange {
                member: member.to_owned(),
                object: label.clone(),
                change,
                detail,
            };
            let live = match l.api.get_opt(&l.name).await {
                Ok(live) => live,
                Err(e) => return change(Change::Error, Some(e.to_string())),
            };
            let labels: Option<BTreeMap<String, String>> = live
                .as_ref()
                .map(|o| o.metadata.labels.clone().unwrap_or_default());
            if let Action::Conflict(why) = distribution::decide(labels.as_ref(), owner, policy) {
                return change(Change::Conflict, Some(why));
            }
            let after = match l.api.patch(&l.name, &params, &Patch::Apply(&copy)).await {
                Ok(after) => after,
                // Its namespace does not exist on the member yet (the sync creates it first), so
                // the server cannot dry-run it: show what would be created.
                Err(kube::Error::Api(s)) if s.code == 404 && live.is_none() => {
                    let mut copy = copy.clone();
                    if let Some(data) = copy["stringData"].take().as_object() {
                        for (k, v) in data {
                            copy["data"][k] = v.clone();
                        }
                    }
                    mask_secrets(None, &mut copy);
                    let diff = similar::TextDiff::from_lines("", yaml(&copy).as_str())
                        .unified_diff()
                        .header(
                            &format!("{member}: {label} (live)"),
                            &format!("{member}: {label} (from the hub, namespace created first)"),
                        )
                        .to_string();
                    return change(Change::Create, Some(diff));
                }
                Err(e) => return change(Change::Error, Some(e.to_string())),
            };
            let mut after = comparable(&serde_json::to_value(after).unwrap_or_default());
            let mut before = live.map(|o| comparable(&serde_json::to_value(o).unwrap_or_default()));
            if before.as_ref() == Some(&after) {
                return change(Change::Unchanged, None);
            }
            mask_secrets(before.as_mut(), &mut after);
            let (kind, before_text) = match &before {
                None => (Change::Create, String::new()),
                Some(b) => (Change::Update, yaml(b)),
            };
            let after_text = yaml(&after);
            let diff = similar::TextDiff::from_lines(&before_text, &after_text)
                .unified_diff()
                .header(
                    &format!("{member}: {label} (live)"),
                    &format!("{member}: {label} (from the hub)"),
                )
                .to_string();
            change(kind, Some(diff))
        }
    }))
    .buffered(16)
    .collect()
    .await;
    changes.extend(results);
    changes
}

fn describe(o: &Value) -> String {
    let kind = o["kind"].as_str().unwrap_or_default();
    let name = o["metadata"]["name"].as_str().unwrap_or_default();
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_values_in_string_data_and_the_last_applied_annotation_are_masked() {
        let applied = r#"{"apiVersion":"v1","kind":"Secret","data":{"password":"czNjcjN0"}}"#;
        let mut before = json!({"kind": "Secret", "metadata": {"annotations": {LAST_APPLIED: applied, "team": "web"}},
                                "data": {"password": "czNjcjN0"}});
        let mut after = json!({"kind": "Secret", "metadata": {"annotations": {LAST_APPLIED: applied}},
                               "stringData": {"token": "plain-text"}, "data": {"password": "czNjcjN0"}});
        mask_secrets(Some(&mut before), &mut after);
        let shown = format!("{}{}", yaml(&before), yaml(&after));
        for secret in ["czNjcjN0", "plain-text"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert_eq!(before["metadata"]["annotations"]["team"], "web");
    }

    #[test]
    fn secret_values_are_masked_and_changes_marked() {
        let mut before =
            json!({"kind": "Secret", "data": {"same": "YQ==", "changed": "Yg==", "gone": "Yw=="}});
        let mut after =
            json!({"kind": "Secret", "data": {"same": "YQ==", "changed": "ZA==", "new": "ZQ=="}});
        mask_secrets(Some(&mut before), &mut after);
        assert_eq!(
            after["data"],
            json!({"same": "***", "changed": "*** (after)", "new": "*** (after)"})
        );
        assert_eq!(
            before["data"],
            json!({"same": "***", "changed": "*** (before)", "gone": "*** (before)"})
        );
        let mut config = json!({"kind": "ConfigMap", "data": {"a": "visible"}});
        mask_secrets(None, &mut config);
        assert_eq!(config["data"]["a"], "visible");
    }
}
