//! Shared library of kubectl-multicluster and multicluster-webhook.
//!
//! It holds what both programs must agree on: the `multicluster.dev/v1alpha1` API types (and the
//! CRDs generated from them), the well-known annotation and label keys, the pinned versions of the
//! real components the playground runs, and the pure decision functions of every capability. Nothing in here performs I/O but `cluster`, two small helpers over a kube client that both
//! programs need: the programs carry data to the decision functions and back.

// One module per capability (the same names as the folders of the hub server and the plugin).
pub mod distribution;
pub mod fencing;
pub mod members;
pub mod services;
pub mod snapshot;
pub mod traffic;
pub mod vip;

// What every capability shares.
pub mod api;
pub mod cluster;
pub mod conditions;
pub mod crds;
pub mod duration;
pub mod errors;
pub mod install;
pub mod keys;
pub mod lease;
pub mod oci;
pub mod playground;
pub mod versions;
pub mod webhooks;

#[cfg(test)]
mod properties;

/// The namespace the hub keeps its own objects (credentials, distributions, intents) in.
pub const SYSTEM_NAMESPACE: &str = "multicluster-system";
