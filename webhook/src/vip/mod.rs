//! VIPs in the hub server: the allocator the webhook takes addresses from ([`allocator`]), the
//! webhook itself ([`admission`]) and the loop that releases the addresses of Services that are
//! gone ([`claims`]). The decisions are `multicluster_core::vip`.

pub mod admission;
pub mod allocator;
pub mod claims;

pub use allocator::Vips;
