//! Namespace snapshots and restores in the hub server: the snapshot loop ([`take`]) with its
//! quiesce hooks ([`hooks`]), where archives are kept ([`storage`]), the restore loop
//! ([`restore`]), the webhook that refuses a restore into a conflicting namespace
//! ([`restore_admission`]), the reader of a restore's target namespace they share ([`target`]),
//! the volumes' data: the mover pods' work ([`mover`]) and how the hub server runs them on members
//! ([`transfers`]), progress written to status as the work goes ([`progress`]), snapshots taken on
//! a cron schedule with their retention ([`schedule`]), and the sweep of the volume data no
//! snapshot references any more ([`collect`]). The decisions are `multicluster_core::snapshot`.

pub mod collect;
pub mod hooks;
pub mod mover;
pub mod progress;
pub mod restore;
pub mod restore_admission;
pub mod schedule;
pub mod storage;
pub mod take;
pub mod target;
pub mod transfers;

#[cfg(test)]
mod tests;

/// `value` serialized for a JSON merge patch that replaces `fields`: each of them absent from the
/// serialization (an empty list, a `None`) is sent as `null`, which removes what was there.
pub(crate) fn replacing(value: &impl serde::Serialize, fields: &[&str]) -> serde_json::Value {
    let mut json = serde_json::to_value(value).unwrap_or_default();
    if let Some(object) = json.as_object_mut() {
        for field in fields {
            object.entry(*field).or_insert(serde_json::Value::Null);
        }
    }
    json
}
