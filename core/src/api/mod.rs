//! The `multicluster.dev/v1alpha1` API: one module per capability.
//!
//! Every kind has a status subresource (so that controllers and users never overwrite each other),
//! printer columns for `kubectl get`, and schema validation (enums, ranges, required fields and
//! defaults) that the API server enforces before anything reaches the hub server.

mod common;
mod distribution;
mod intent;
mod member;
mod snapshot;
mod traffic;
mod vip;

pub use common::*;
pub use distribution::*;
pub use intent::*;
pub use member::*;
pub use snapshot::*;
pub use traffic::*;
pub use vip::*;

/// API group of every kind.
pub const GROUP: &str = "multicluster.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
