//! Namespace snapshots and restores in the hub server: the snapshot loop ([`take`]) with its
//! quiesce hooks ([`hooks`]), where archives are kept ([`storage`]), the restore loop
//! ([`restore`]), the webhook that refuses a restore into a conflicting namespace
//! ([`restore_admission`]), the reader of a restore's target namespace they share ([`target`]),
//! the volumes' data: the mover pods' work ([`mover`]) and how the hub server runs them on members
//! ([`transfers`]), and progress written to status as the work goes ([`progress`]). The
//! decisions are `multicluster_core::snapshot`.

pub mod hooks;
pub mod mover;
pub mod progress;
pub mod restore;
pub mod restore_admission;
pub mod storage;
pub mod take;
pub mod target;
pub mod transfers;

#[cfg(test)]
mod tests;
