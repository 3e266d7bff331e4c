//! Leader election over a `coordination.k8s.io` Lease, as a pure decision: every replica serves
//! admission, but the hub's background loops (Intent epochs, and later health probing, continuous
//! distribution, VIP clean-up) run on the one replica holding the Lease.

use std::time::Duration;

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

/// What this replica (`me`) should do with the Lease as it stands. `unchanged_for` is how long
/// this replica has seen the record unchanged, by its own monotonic clock (as client-go's
/// leader election measures it): the holder's `renewTime` is written by the holder's clock, and
/// comparing it with ours would let a skewed clock take a Lease that is still held.
pub fn decide(
    holder: Option<&str>,
    unchanged_for: Duration,
    duration: Duration,
    me: &str,
) -> LeaseStep {
    match holder {
        Some(h) if h == me => LeaseStep::Renew,
        Some(h) if !h.is_empty() => {
            if unchanged_for > duration {
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

/// How long a replica has seen one Lease record unchanged: restarted whenever the record it
/// reads differs from the one it read before (any write changes its resourceVersion).
#[derive(Debug, Clone, Default)]
pub struct Observation {
    record: Option<String>,
    /// When it was first seen, on the caller's monotonic clock.
    since: Duration,
}

impl Observation {
    /// Records a read of the record with `resource_version` at `now` (a reading of a monotonic
    /// clock, such as the time since the process started); returns how long it has been seen
    /// unchanged.
    pub fn saw(&mut self, resource_version: &str, now: Duration) -> Duration {
        if self.record.as_deref() != Some(resource_version) {
            self.record = Some(resource_version.to_owned());
            self.since = now;
        }
        now.saturating_sub(self.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_expired_own_and_foreign_leases() {
        let d = LEASE_DURATION;
        let secs = Duration::from_secs;
        assert_eq!(decide(None, secs(0), d, "a"), LeaseStep::Acquire);
        assert_eq!(decide(Some(""), secs(0), d, "a"), LeaseStep::Acquire);
        assert_eq!(decide(Some("a"), secs(60), d, "a"), LeaseStep::Renew);
        assert_eq!(
            decide(Some("b"), secs(10), d, "a"),
            LeaseStep::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some("b"), secs(16), d, "a"),
            LeaseStep::Acquire,
            "unchanged for 16 s with a 15 s duration: expired"
        );
    }

    /// A holder whose clock runs an hour behind writes renewTimes an hour old: judged by those, its
    /// Lease would look expired at once. By this replica's own observation it is renewed (each
    /// renewal is a new record) and never expires while the holder renews.
    #[test]
    fn expiry_is_measured_from_when_this_replica_saw_the_record_change() {
        let at = Duration::from_secs;
        let mut seen = Observation::default();
        assert_eq!(seen.saw("100", at(0)), Duration::ZERO);
        assert_eq!(seen.saw("100", at(5)), Duration::from_secs(5));
        assert_eq!(seen.saw("101", at(10)), Duration::ZERO, "renewed");
        assert_eq!(seen.saw("101", at(26)), Duration::from_secs(16));
        assert_eq!(
            decide(Some("b"), seen.saw("101", at(26)), LEASE_DURATION, "a"),
            LeaseStep::Acquire
        );
    }
}
