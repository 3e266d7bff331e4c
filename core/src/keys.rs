//! Annotation and label keys users see. All live under the `multicluster.dev/` prefix.

/// Carried by a write (annotation) to prove the writer holds the current intent.
pub const INTENT_ID: &str = "multicluster.dev/intent-id";
/// Label on a managed resource naming the `Intent` that fences it.
pub const MANAGED_BY_INTENT: &str = "multicluster.dev/managed-by-intent";
/// Annotation holding the virtual IP handed out to a Service.
pub const VIP: &str = "multicluster.dev/vip";
/// Annotation holding the domain name that goes with the virtual IP.
pub const HOSTNAME: &str = "multicluster.dev/hostname";
/// Label on an object a `Distribution` copied to a member, naming that Distribution.
pub const DISTRIBUTION: &str = "multicluster.dev/distribution";
