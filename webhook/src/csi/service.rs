//! The CSI services. Each call checks its request with a pure function first (the CSI spec's
//! error codes: `INVALID_ARGUMENT` for a missing field, `NOT_FOUND` for an unknown id,
//! `ALREADY_EXISTS` for a name reused with other arguments), then does its I/O on the [`Store`]
//! under one lock: the driver serves one node, and the copies a snapshot makes are the slow part
//! either way.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use super::generated::csi::*;
use super::store::{self, GroupRecord, SnapshotRecord, Store, VolumeRecord};

use multicluster_core::playground::{CSI_DRIVER as DRIVER_NAME, CSI_TOPOLOGY_KEY as TOPOLOGY_KEY};
/// A volume's size when the claim asks for none.
const DEFAULT_CAPACITY: i64 = 1 << 30;

#[derive(Clone)]
pub struct Driver {
    store: Arc<Mutex<Store>>,
    node_id: String,
}

impl Driver {
    pub fn new(store: Store, node_id: String) -> Self {
        Self {
            store: Arc::new(Mutex::new(store)),
            node_id,
        }
    }

    fn topology(&self) -> Topology {
        Topology {
            segments: HashMap::from([(TOPOLOGY_KEY.to_owned(), self.node_id.clone())]),
        }
    }
}

fn internal(e: std::io::Error) -> Status {
    Status::internal(e.to_string())
}

/// Nanoseconds since the Unix epoch: a snapshot's creation time is the moment of its cut, which
/// users compare with what their hooks did around it.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        // Below 10⁹, so it fits.
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// Only filesystem volumes: a `Block` volume would need a loop device, which the playground's
/// nodes do not get.
pub fn check_capabilities(capabilities: &[VolumeCapability]) -> Result<(), Status> {
    if capabilities.is_empty() {
        return Err(Status::invalid_argument("volume capabilities are required"));
    }
    for capability in capabilities {
        match &capability.access_type {
            Some(volume_capability::AccessType::Mount(_)) => {}
            Some(volume_capability::AccessType::Block(_)) => {
                return Err(Status::invalid_argument(
                    "block volumes are not supported by the playground driver",
                ));
            }
            None => {
                return Err(Status::invalid_argument(
                    "a volume capability needs an access type",
                ));
            }
        }
        if capability.access_mode.is_none() {
            return Err(Status::invalid_argument(
                "a volume capability needs an access mode",
            ));
        }
    }
    Ok(())
}

/// The size a create asks for: `required_bytes`, else the default capped by `limit_bytes`.
pub fn capacity(range: Option<&CapacityRange>) -> Result<i64, Status> {
    let Some(range) = range else {
        return Ok(DEFAULT_CAPACITY);
    };
    if range.required_bytes < 0 || range.limit_bytes < 0 {
        return Err(Status::invalid_argument("capacity must not be negative"));
    }
    if range.limit_bytes > 0 && range.required_bytes > range.limit_bytes {
        return Err(Status::out_of_range("required bytes exceed the limit"));
    }
    Ok(match (range.required_bytes, range.limit_bytes) {
        (0, 0) => DEFAULT_CAPACITY,
        (0, limit) => DEFAULT_CAPACITY.min(limit),
        (required, _) => required,
    })
}

fn volume_message(record: &VolumeRecord, topology: Topology) -> Volume {
    Volume {
        capacity_bytes: record.capacity_bytes,
        volume_id: record.id.clone(),
        content_source: record
            .from_snapshot
            .as_ref()
            .map(|snapshot_id| VolumeContentSource {
                r#type: Some(volume_content_source::Type::Snapshot(
                    volume_content_source::SnapshotSource {
                        snapshot_id: snapshot_id.clone(),
                    },
                )),
            }),
        accessible_topology: vec![topology],
        ..Default::default()
    }
}

fn snapshot_message(record: &SnapshotRecord) -> Snapshot {
    Snapshot {
        size_bytes: record.size_bytes,
        snapshot_id: record.id.clone(),
        source_volume_id: record.source_volume_id.clone(),
        creation_time: Some(timestamp(record.created_nanos)),
        ready_to_use: true,
        group_snapshot_id: record.group.clone().unwrap_or_default(),
        accessible_topology: Vec::new(),
    }
}

/// One page of `ListSnapshots`: `starting_token` is the index to start at, as the previous page's
/// `next_token` said.
pub fn page(
    all: Vec<SnapshotRecord>,
    max_entries: i32,
    starting_token: &str,
) -> Result<(Vec<SnapshotRecord>, String), Status> {
    if max_entries < 0 {
        return Err(Status::invalid_argument("max_entries must not be negative"));
    }
    let start: usize = if starting_token.is_empty() {
        0
    } else {
        starting_token
            .parse()
            .ok()
            .filter(|s| *s <= all.len())
            .ok_or_else(|| Status::aborted(format!("invalid starting token {starting_token:?}")))?
    };
    let rest: Vec<SnapshotRecord> = all.into_iter().skip(start).collect();
    let take = if max_entries == 0 {
        rest.len()
    } else {
        (max_entries as usize).min(rest.len())
    };
    let next = if take < rest.len() {
        (start + take).to_string()
    } else {
        String::new()
    };
    Ok((rest.into_iter().take(take).collect(), next))
}

#[tonic::async_trait]
impl identity_server::Identity for Driver {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::service::Type;
        let service = |t: Type| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(
                plugin_capability::Service { r#type: t as i32 },
            )),
        };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: vec![
                service(Type::ControllerService),
                service(Type::VolumeAccessibilityConstraints),
                service(Type::GroupControllerService),
            ],
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl controller_server::Controller for Driver {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("a volume needs a name"));
        }
        check_capabilities(&req.volume_capabilities)?;
        let capacity_bytes = capacity(req.capacity_range.as_ref())?;
        let from_snapshot = match req.volume_content_source.and_then(|s| s.r#type) {
            None => None,
            Some(volume_content_source::Type::Snapshot(s)) => Some(s.snapshot_id),
            Some(volume_content_source::Type::Volume(_)) => {
                return Err(Status::invalid_argument(
                    "cloning a volume is not supported by the playground driver; snapshot it and restore the snapshot",
                ));
            }
        };
        let record = VolumeRecord {
            id: store::id_for("vol", &req.name),
            name: req.name,
            capacity_bytes,
            from_snapshot,
        };
        let store = self.store.lock().await;
        if let Some(existing) = store.volume(&record.id).map_err(internal)? {
            if existing != record {
                return Err(Status::already_exists(format!(
                    "volume {} exists with another size or source",
                    existing.name
                )));
            }
            return Ok(Response::new(CreateVolumeResponse {
                volume: Some(volume_message(&existing, self.topology())),
            }));
        }
        if let Some(snapshot) = &record.from_snapshot {
            let found = store.snapshot(snapshot).map_err(internal)?.ok_or_else(|| {
                Status::not_found(format!(
                    "snapshot {snapshot} does not exist on {}",
                    self.node_id
                ))
            })?;
            if found.size_bytes > record.capacity_bytes {
                return Err(Status::out_of_range(format!(
                    "snapshot {snapshot} holds {} bytes, more than the {} asked for",
                    found.size_bytes, record.capacity_bytes
                )));
            }
        }
        store.create_volume(&record).map_err(internal)?;
        tracing::info!(volume = %record.id, name = %record.name, "created volume");
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(volume_message(&record, self.topology())),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(Status::invalid_argument("a volume id is required"));
        }
        let store = self.store.lock().await;
        store.delete_volume(&req.volume_id).map_err(internal)?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented("volumes need no attaching"))
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented("volumes need no attaching"))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(Status::invalid_argument("a volume id is required"));
        }
        if req.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume capabilities are required"));
        }
        let store = self.store.lock().await;
        if store.volume(&req.volume_id).map_err(internal)?.is_none() {
            return Err(Status::not_found(format!(
                "volume {} does not exist",
                req.volume_id
            )));
        }
        Ok(Response::new(
            match check_capabilities(&req.volume_capabilities) {
                Ok(()) => ValidateVolumeCapabilitiesResponse {
                    confirmed: Some(validate_volume_capabilities_response::Confirmed {
                        volume_context: req.volume_context,
                        volume_capabilities: req.volume_capabilities,
                        parameters: req.parameters,
                        mutable_parameters: req.mutable_parameters,
                    }),
                    message: String::new(),
                },
                Err(refusal) => ValidateVolumeCapabilitiesResponse {
                    confirmed: None,
                    message: refusal.message().to_owned(),
                },
            },
        ))
    }

    async fn list_volumes(
        &self,
        _: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        Err(Status::unimplemented("ListVolumes is not offered"))
    }

    async fn get_capacity(
        &self,
        _: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        Err(Status::unimplemented("GetCapacity is not offered"))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        use controller_service_capability::rpc::Type;
        let rpc = |t: Type| ControllerServiceCapability {
            r#type: Some(controller_service_capability::Type::Rpc(
                controller_service_capability::Rpc { r#type: t as i32 },
            )),
        };
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![
                rpc(Type::CreateDeleteVolume),
                rpc(Type::CreateDeleteSnapshot),
                rpc(Type::ListSnapshots),
            ],
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("a snapshot needs a name"));
        }
        if req.source_volume_id.is_empty() {
            return Err(Status::invalid_argument(
                "a snapshot needs a source volume id",
            ));
        }
        let store = self.store.lock().await;
        let snapshot = cut_snapshot(&store, &req.name, &req.source_volume_id, None)?;
        Ok(Response::new(CreateSnapshotResponse {
            snapshot: Some(snapshot_message(&snapshot)),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let req = request.into_inner();
        if req.snapshot_id.is_empty() {
            return Err(Status::invalid_argument("a snapshot id is required"));
        }
        let store = self.store.lock().await;
        if let Some(snapshot) = store.snapshot(&req.snapshot_id).map_err(internal)?
            && let Some(group) = &snapshot.group
            && store.group(group).map_err(internal)?.is_some()
        {
            return Err(Status::failed_precondition(format!(
                "snapshot {} belongs to group snapshot {group}: delete the group",
                req.snapshot_id
            )));
        }
        store.delete_snapshot(&req.snapshot_id).map_err(internal)?;
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let req = request.into_inner();
        let store = self.store.lock().await;
        let all: Vec<SnapshotRecord> = store
            .snapshots()
            .map_err(internal)?
            .into_iter()
            .filter(|s| req.snapshot_id.is_empty() || s.id == req.snapshot_id)
            .filter(|s| {
                req.source_volume_id.is_empty() || s.source_volume_id == req.source_volume_id
            })
            .collect();
        let (entries, next_token) = page(all, req.max_entries, &req.starting_token)?;
        Ok(Response::new(ListSnapshotsResponse {
            entries: entries
                .iter()
                .map(|s| list_snapshots_response::Entry {
                    snapshot: Some(snapshot_message(s)),
                })
                .collect(),
            next_token,
        }))
    }

    async fn controller_expand_volume(
        &self,
        _: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("expansion is not offered"))
    }

    async fn controller_get_volume(
        &self,
        _: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        Err(Status::unimplemented("ControllerGetVolume is not offered"))
    }

    async fn controller_modify_volume(
        &self,
        _: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "ControllerModifyVolume is not offered",
        ))
    }

    async fn controller_list_volume_health(
        &self,
        _: Request<ControllerListVolumeHealthRequest>,
    ) -> Result<Response<ControllerListVolumeHealthResponse>, Status> {
        Err(Status::unimplemented("volume health is not offered"))
    }

    async fn controller_get_volume_health(
        &self,
        _: Request<ControllerGetVolumeHealthRequest>,
    ) -> Result<Response<ControllerGetVolumeHealthResponse>, Status> {
        Err(Status::unimplemented("volume health is not offered"))
    }

    async fn get_snapshot(
        &self,
        _: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        Err(Status::unimplemented(
            "GetSnapshot is not offered; ListSnapshots is",
        ))
    }
}

/// Cuts (or finds, for a retry) the snapshot `name` of `source`.
fn cut_snapshot(
    store: &Store,
    name: &str,
    source: &str,
    group: Option<&str>,
) -> Result<SnapshotRecord, Status> {
    let id = store::id_for("snap", name);
    if let Some(existing) = store.snapshot(&id).map_err(internal)? {
        if existing.source_volume_id != source {
            return Err(Status::already_exists(format!(
                "snapshot {name} exists for another volume ({})",
                existing.source_volume_id
            )));
        }
        return Ok(existing);
    }
    let volume = store
        .volume(source)
        .map_err(internal)?
        .ok_or_else(|| Status::not_found(format!("volume {source} does not exist")))?;
    let record = SnapshotRecord {
        id,
        name: name.to_owned(),
        source_volume_id: source.to_owned(),
        size_bytes: volume.capacity_bytes,
        created_nanos: now(),
        group: group.map(str::to_owned),
    };
    store.create_snapshot(&record).map_err(internal)?;
    tracing::info!(snapshot = %record.id, volume = %source, "cut snapshot");
    Ok(record)
}

#[tonic::async_trait]
impl group_controller_server::GroupController for Driver {
    async fn group_controller_get_capabilities(
        &self,
        _: Request<GroupControllerGetCapabilitiesRequest>,
    ) -> Result<Response<GroupControllerGetCapabilitiesResponse>, Status> {
        use group_controller_service_capability::rpc::Type;
        Ok(Response::new(GroupControllerGetCapabilitiesResponse {
            capabilities: vec![GroupControllerServiceCapability {
                r#type: Some(group_controller_service_capability::Type::Rpc(
                    group_controller_service_capability::Rpc {
                        r#type: Type::CreateDeleteGetVolumeGroupSnapshot as i32,
                    },
                )),
            }],
        }))
    }

    async fn create_volume_group_snapshot(
        &self,
        request: Request<CreateVolumeGroupSnapshotRequest>,
    ) -> Result<Response<CreateVolumeGroupSnapshotResponse>, Status> {
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("a group snapshot needs a name"));
        }
        if req.source_volume_ids.is_empty() {
            return Err(Status::invalid_argument(
                "a group snapshot needs source volumes",
            ));
        }
        let id = store::id_for("group", &req.name);
        let store = self.store.lock().await;
        if let Some(existing) = store.group(&id).map_err(internal)? {
            let sources: Vec<String> = existing
                .snapshot_ids
                .iter()
                .filter_map(|s| store.snapshot(s).ok().flatten())
                .map(|s| s.source_volume_id)
                .collect();
            let mut wanted = req.source_volume_ids.clone();
            wanted.sort();
            let mut had = sources;
            had.sort();
            if had != wanted {
                return Err(Status::already_exists(format!(
                    "group snapshot {} exists for other volumes",
                    req.name
                )));
            }
            return group_response(&store, &existing);
        }
        // Every volume is copied while the lock is held: nothing else writes through this driver
        // in between (pods may: quiescing them is the caller's part).
        let mut snapshot_ids = Vec::new();
        for source in &req.source_volume_ids {
            let snapshot =
                cut_snapshot(&store, &format!("{}/{source}", req.name), source, Some(&id))?;
            snapshot_ids.push(snapshot.id);
        }
        let record = GroupRecord {
            id,
            name: req.name,
            snapshot_ids,
            created_nanos: now(),
        };
        store.write_group(&record).map_err(internal)?;
        group_response(&store, &record)
    }

    async fn delete_volume_group_snapshot(
        &self,
        request: Request<DeleteVolumeGroupSnapshotRequest>,
    ) -> Result<Response<DeleteVolumeGroupSnapshotResponse>, Status> {
        let req = request.into_inner();
        if req.group_snapshot_id.is_empty() {
            return Err(Status::invalid_argument("a group snapshot id is required"));
        }
        let store = self.store.lock().await;
        if let Some(group) = store.group(&req.group_snapshot_id).map_err(internal)? {
            if !req.snapshot_ids.is_empty() {
                let mut given = req.snapshot_ids.clone();
                given.sort();
                let mut held = group.snapshot_ids.clone();
                held.sort();
                if given != held {
                    return Err(Status::invalid_argument(
                        "the snapshot ids are not those of the group snapshot",
                    ));
                }
            }
            store.delete_group(&group.id).map_err(internal)?;
            for snapshot in &group.snapshot_ids {
                store.delete_snapshot(snapshot).map_err(internal)?;
            }
        }
        Ok(Response::new(DeleteVolumeGroupSnapshotResponse {}))
    }

    async fn get_volume_group_snapshot(
        &self,
        request: Request<GetVolumeGroupSnapshotRequest>,
    ) -> Result<Response<GetVolumeGroupSnapshotResponse>, Status> {
        let req = request.into_inner();
        if req.group_snapshot_id.is_empty() {
            return Err(Status::invalid_argument("a group snapshot id is required"));
        }
        let store = self.store.lock().await;
        let group = store
            .group(&req.group_snapshot_id)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "group snapshot {} does not exist",
                    req.group_snapshot_id
                ))
            })?;
        let created = group_response(&store, &group)?.into_inner();
        Ok(Response::new(GetVolumeGroupSnapshotResponse {
            group_snapshot: created.group_snapshot,
        }))
    }
}

fn group_response(
    store: &Store,
    group: &GroupRecord,
) -> Result<Response<CreateVolumeGroupSnapshotResponse>, Status> {
    let snapshots = group
        .snapshot_ids
        .iter()
        .map(|id| {
            store
                .snapshot(id)
                .map_err(internal)?
                .map(|s| snapshot_message(&s))
                .ok_or_else(|| Status::internal(format!("snapshot {id} of the group is missing")))
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(Response::new(CreateVolumeGroupSnapshotResponse {
        group_snapshot: Some(VolumeGroupSnapshot {
            group_snapshot_id: group.id.clone(),
            snapshots,
            creation_time: Some(timestamp(group.created_nanos)),
            ready_to_use: true,
        }),
    }))
}

#[tonic::async_trait]
impl node_server::Node for Driver {
    async fn node_stage_volume(
        &self,
        _: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("volumes are not staged"))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("volumes are not staged"))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(Status::invalid_argument("a volume id is required"));
        }
        if req.target_path.is_empty() {
            return Err(Status::invalid_argument("a target path is required"));
        }
        let capability = req
            .volume_capability
            .ok_or_else(|| Status::invalid_argument("a volume capability is required"))?;
        check_capabilities(std::slice::from_ref(&capability))?;
        let store = self.store.lock().await;
        if store.volume(&req.volume_id).map_err(internal)?.is_none() {
            return Err(Status::not_found(format!(
                "volume {} does not exist",
                req.volume_id
            )));
        }
        let target = Path::new(&req.target_path);
        if is_mount_point(target) {
            return Ok(Response::new(NodePublishVolumeResponse {}));
        }
        std::fs::create_dir_all(target).map_err(internal)?;
        bind_mount(&store.volume_dir(&req.volume_id), target, req.readonly)?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(Status::invalid_argument("a volume id is required"));
        }
        if req.target_path.is_empty() {
            return Err(Status::invalid_argument("a target path is required"));
        }
        let target = Path::new(&req.target_path);
        if is_mount_point(target) {
            nix::mount::umount2(target, nix::mount::MntFlags::empty())
                .map_err(|e| Status::internal(format!("unmounting {}: {e}", target.display())))?;
        }
        match std::fs::remove_dir(target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(internal(e)),
            _ => {}
        }
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() || req.volume_path.is_empty() {
            return Err(Status::invalid_argument(
                "a volume id and path are required",
            ));
        }
        let store = self.store.lock().await;
        let volume = store
            .volume(&req.volume_id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("volume {} does not exist", req.volume_id)))?;
        if !Path::new(&req.volume_path).exists() {
            return Err(Status::not_found(format!(
                "{} does not exist",
                req.volume_path
            )));
        }
        let used = store.used_bytes(&req.volume_id);
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage: vec![VolumeUsage {
                available: (volume.capacity_bytes - used).max(0),
                total: volume.capacity_bytes,
                used,
                unit: volume_usage::Unit::Bytes as i32,
            }],
        }))
    }

    async fn node_get_volume_health(
        &self,
        _: Request<NodeGetVolumeHealthRequest>,
    ) -> Result<Response<NodeGetVolumeHealthResponse>, Status> {
        Err(Status::unimplemented("volume health is not offered"))
    }

    async fn node_get_storage_health(
        &self,
        _: Request<NodeGetStorageHealthRequest>,
    ) -> Result<Response<NodeGetStorageHealthResponse>, Status> {
        Err(Status::unimplemented("storage health is not offered"))
    }

    async fn node_expand_volume(
        &self,
        _: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("expansion is not offered"))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(
                    node_service_capability::Rpc {
                        r#type: node_service_capability::rpc::Type::GetVolumeStats as i32,
                    },
                )),
            }],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: Some(self.topology()),
        }))
    }
}

/// Whether `path` is a mount point: listed in this process's mount table.
fn is_mount_point(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|point| Path::new(point) == path)
}

/// Bind-mounts the volume's directory at `target`, read-only when asked (a bind mount takes that
/// flag only on a remount).
fn bind_mount(source: &Path, target: &Path, readonly: bool) -> Result<(), Status> {
    use nix::mount::{MsFlags, mount};
    let fail = |e: nix::Error| Status::internal(format!("mounting {}: {e}", target.display()));
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(fail)?;
    if readonly {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times_keep_their_nanoseconds() {
        let t = timestamp(1_796_633_475_700_420_806);
        assert_eq!((t.seconds, t.nanos), (1_796_633_475, 700_420_806));
    }

    fn record(id: &str) -> SnapshotRecord {
        SnapshotRecord {
            id: id.into(),
            name: id.into(),
            source_volume_id: "v".into(),
            size_bytes: 1,
            created_nanos: 0,
            group: None,
        }
    }

    #[test]
    fn pages_follow_their_tokens_and_a_bad_token_aborts() {
        let all: Vec<SnapshotRecord> = ["a", "b", "c"].map(record).to_vec();
        let (first, next) = page(all.clone(), 2, "").unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(next, "2");
        let (second, next) = page(all.clone(), 2, &next).unwrap();
        assert_eq!(second[0].id, "c");
        assert_eq!(next, "");
        assert_eq!(page(all.clone(), 0, "").unwrap().0.len(), 3);
        assert_eq!(
            page(all.clone(), 1, "x").unwrap_err().code(),
            tonic::Code::Aborted
        );
        assert_eq!(
            page(all, -1, "").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn capacity_takes_the_required_bytes_and_refuses_impossible_ranges() {
        assert_eq!(capacity(None).unwrap(), DEFAULT_CAPACITY);
        let range = |required_bytes, limit_bytes| CapacityRange {
            required_bytes,
            limit_bytes,
        };
        assert_eq!(capacity(Some(&range(5, 0))).unwrap(), 5);
        assert_eq!(capacity(Some(&range(0, 7))).unwrap(), 7);
        assert_eq!(
            capacity(Some(&range(9, 7))).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
    }

    #[test]
    fn only_filesystem_volumes_with_an_access_mode_are_accepted() {
        let mount = VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(
                volume_capability::MountVolume::default(),
            )),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
            }),
        };
        assert!(check_capabilities(std::slice::from_ref(&mount)).is_ok());
        let block = VolumeCapability {
            access_type: Some(volume_capability::AccessType::Block(
                volume_capability::BlockVolume::default(),
            )),
            ..mount.clone()
        };
        assert!(check_capabilities(&[block]).is_err());
        assert!(check_capabilities(&[]).is_err());
    }
}
