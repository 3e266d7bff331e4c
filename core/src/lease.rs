//! Leader election over a `coordination.k8s.io` Lease, as a pure decision: every replica serves
//! admission, but the hub's background loops (Intent epochs, and later health probing, continuous
//! distribution, VIP clean-up) run on the one replica holding the Lease.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// Name of the Lease in `multicluster-system`.
pub const LEASE_NAME: &str = "multicluster-hub";
/// How long a holder keeps the Lease without renewing it.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews (and others look again): a third of the duration, so two missed
/// renewals do not yet lose it.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// How long a holder keeps leading through failed renewals (less than [`LEASE_DURATION`], so that
/// it has stopped before another replica may take the Lease over).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it and it has not expired.
    Follow { holder: String },
}

/// What this replica (`me`) should do with the Lease as it stands.
pub fn decide(
    holder: Option<&str>,
    renewed: Option<Timestamp>,
    duration: Duration,
    me: &str,
    now: Timestamp,
) -> LeaseStep {
    match holder {
        Some(h) if h == me => LeaseStep::Renew,
        Some(h) if !h.is_empty() => {
            let expired = renewed.is_none_or(|renewed| {
                now.duration_since(renewed).as_secs_f64() > duration.as_secs_f64()
            });
            if expired {
                LeaseStep::Acquire
            } else {
                LeaseStep::Follow {
                    holder: h.to_owned(),
                }
            }
        }
        _ => LeaseStep::Acquire,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn free_expired_own_and_foreign_leases() {
        let now = t("2026-11-22T12:00:20Z");
        let d = LEASE_DURATION;
        assert_eq!(decide(None, None, d, "a", now), LeaseStep::Acquire);
        assert_eq!(decide(Some(""), None, d, "a", now), LeaseStep::Acquire);
        assert_eq!(
            decide(Some("a"), Some(t("2026-11-22T12:00:00Z")), d, "a", now),
            LeaseStep::Renew
        );
        assert_eq!(
            decide(Some("b"), Some(t("2026-11-22T12:00:10Z")), d, "a", now),
            LeaseStep::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some("b"), Some(t("2026-11-22T12:00:00Z")), d, "a", now),
            LeaseStep::Acquire,
            "renewed 20 s ago with a 15 s duration: expired"
        );
        assert_eq!(decide(Some("b"), None, d, "a", now), LeaseStep::Acquire);
    }
}
