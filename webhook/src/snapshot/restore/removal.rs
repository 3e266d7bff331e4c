//! `restore delete --with-objects`: removes what a finished restore wrote to its target. Which
//! objects those are comes from the same plan the restore wrote from (its snapshot's archive);
//! each is deleted only while it still says this restore wrote it and nobody but the control plane
//! changed it since (`multicluster_core::snapshot::restore::kept_because`). The rest, and the
//! namespace, stay and are listed in `status.removal`.

use anyhow::{Context as _, anyhow};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{
    NamespaceRestore, NamespaceSnapshot, RestoreObjectFailure, RestoreRemoval,
};
use multicluster_core::keys;
use multicluster_core::snapshot::restore::{kept_because, removal_order};
use serde_json::{Value, json};

use super::{Context, FIELD_MANAGER, plan_of, read_archive, resolve_kinds, target_member};

/// The removal token the restore asks for and has not been answered yet, if any.
pub(super) fn requested(restore: &NamespaceRestore) -> Option<String> {
    let asked = restore.annotations().get(keys::REMOVE_RESTORED_OBJECTS)?;
    let answered = restore
        .status
        .as_ref()
        .and_then(|s| s.removal.as_ref())
        .map(|r| r.request.as_str());
    (answered != Some(asked.as_str())).then(|| asked.clone())
}

/// Removes the restore's objects and records the outcome (an error included) in its status.
pub(super) async fn run(
    ctx: &Context,
    restore: &NamespaceRestore,
    request: String,
) -> Result<(), kube::Error> {
    let name = restore.name_any();
    let removal = match remove(ctx, restore, &request).await {
        Ok(removal) => removal,
        Err(e) => RestoreRemoval {
            request,
            message: Some(format!("{e:#}; nothing was removed")),
            ..Default::default()
        },
    };
    tracing::info!(restore = %name, removed = removal.removed, kept = removal.kept.len(),
                   "removed what the restore wrote");
    Api::<NamespaceRestore>::namespaced(ctx.hub.clone(), SYSTEM_NAMESPACE)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"removal": removal}})),
        )
        .await
        .map(|_| ())
}

async fn remove(
    ctx: &Context,
    restore: &NamespaceRestore,
    request: &str,
) -> anyhow::Result<RestoreRemoval> {
    let spec = &restore.spec;
    let name = restore.name_any();
    let snapshot = Api::<NamespaceSnapshot>::namespaced(ctx.hub.clone(), SYSTEM_NAMESPACE)
        .get_opt(&spec.snapshot)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "NamespaceSnapshot {} is gone, so what the restore wrote cannot be told apart",
                spec.snapshot
            )
        })?;
    let archive = read_archive(ctx, &snapshot)
        .await
        .context("reading the snapshot's archive to know what the restore wrote")?;
    let plan = plan_of(restore, &archive)?;
    let member = target_member(ctx, &spec.target_cluster).await?;
    let resources = resolve_kinds(&member, &plan).await?;
    let mut out = RestoreRemoval {
        request: request.to_owned(),
        ..Default::default()
    };
    for object in removal_order(&plan) {
        let kind = str_of(&object["kind"]);
        let object_name = str_of(&object["metadata"]["name"]);
        let Some(resource) =
            resources.get(&(str_of(&object["apiVersion"]).to_owned(), kind.to_owned()))
        else {
            continue;
        };
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(member.clone(), ns, resource),
            None => Api::all_with(member.clone(), resource),
        };
        let kept = |message: String| RestoreObjectFailure {
            kind: kind.to_owned(),
            name: object_name.to_owned(),
            message,
        };
        let Some(live) = api.get_metadata_opt(object_name).await? else {
            continue;
        };
        if let Some(why) = kept_because(&live.metadata, &name, FIELD_MANAGER) {
            out.kept.push(kept(why));
            continue;
        }
        match api.delete(object_name, &DeleteParams::background()).await {
            Ok(_) => out.removed += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(kube::Error::Api(s)) => {
                out.kept
                    .push(kept(format!("could not be deleted: {}", s.message)));
            }
            Err(e) => return Err(e).context("the target member stopped answering"),
        }
    }
    out.kept.push(RestoreObjectFailure {
        kind: "Namespace".to_owned(),
        name: spec.target_namespace.clone(),
        message: "stays: a namespace holds what others put there too; delete it once it is empty"
            .to_owned(),
    });
    Ok(out)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}
