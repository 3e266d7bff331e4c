//! Member health as pure functions: what one probe says, when the hub changes its mind about a
//! member (only after enough consecutive results, so one slow probe does not flip a cluster), and
//! the status the hub records from that.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{HealthCheck, MemberCluster, MemberClusterStatus};
use crate::conditions::condition;

/// Whether a node counts as ready: its `Ready` condition is `True` (what the kubelet, or the
/// controller-manager for a node that stopped reporting, last said). Member health counts these,
/// services send traffic only to them, and the playground waits for them.
pub fn node_is_ready(node: &k8s_openapi::api::core::v1::Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What one probe of a member found.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeResult {
    /// The API answered: its version and its nodes.
    Answered {
        version: String,
        ready_nodes: u32,
        total_nodes: u32,
    },
    /// The API did not answer (timeout, refused, TLS or credential failure), and why.
    Unreachable { reason: String },
}

/// The smallest number of ready nodes that keeps a member healthy: the fixed minimum when set,
/// else ⌈total × ratio⌉.
pub fn required_ready(check: &HealthCheck, total_nodes: u32) -> u32 {
    match check.min_ready_nodes {
        Some(min) => min,
        None => {
            let ratio = check.min_survival_ratio.clamp(0.0, 1.0);
            // Exact for the counts a cluster has; `ceil` of a product of a ratio like 0.5.
            (f64::from(total_nodes) * ratio - 1e-9).ceil().max(0.0) as u32
        }
    }
}

/// Whether one probe, on its own, says healthy, and a sentence saying why.
pub fn judge(check: &HealthCheck, probe: &ProbeResult) -> (bool, String) {
    match probe {
        ProbeResult::Unreachable { reason } => {
            (false, format!("the API server did not answer: {reason}"))
        }
        ProbeResult::Answered {
            ready_nodes,
            total_nodes,
            ..
        } => {
            let required = required_ready(check, *total_nodes);
            let rule = match check.min_ready_nodes {
                Some(min) => format!("at least {min} required"),
                None => format!(
                    "at least {required} (⌈{total_nodes} × {}⌉) required",
                    check.min_survival_ratio
                ),
            };
            let ok = *ready_nodes >= required;
            (
                ok,
                format!("{ready_nodes} of {total_nodes} nodes ready, {rule}"),
            )
        }
    }
}

/// The hub's running view of one member: what it currently believes and how many consecutive
/// probes have disagreed with that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streak {
    /// `None` until the first probe: the first result is believed at once.
    pub healthy: Option<bool>,
    pub disagreeing: u32,
}

/// Folds one probe verdict into the streak. Returns the new streak and whether the belief changed
/// (a transition, which gets an Event).
pub fn next(check: &HealthCheck, streak: Streak, probe_healthy: bool) -> (Streak, bool) {
    match streak.healthy {
        None => (
            Streak {
                healthy: Some(probe_healthy),
                disagreeing: 0,
            },
            true,
        ),
        Some(current) if current == probe_healthy => (
            Streak {
                healthy: Some(current),
                disagreeing: 0,
            },
            false,
        ),
        Some(current) => {
            let needed = if current {
                check.failure_threshold
            } else {
                check.success_threshold
            };
            let disagreeing = streak.disagreeing + 1;
            if disagreeing >= needed.max(1) {
                (
                    Streak {
                        healthy: Some(probe_healthy),
                        disagreeing: 0,
                    },
                    true,
                )
            } else {
                (
                    Streak {
                        healthy: Some(current),
                        disagreeing,
                    },
                    false,
                )
            }
        }
    }
}

/// One probe and what the hub made of it.
#[derive(Debug, Clone, Copy)]
pub struct Probed<'a> {
    pub probe: &'a ProbeResult,
    /// This probe's own verdict ([`judge`]) and its reason.
    pub healthy_now: bool,
    pub why: &'a str,
    /// The belief after this probe ([`next`]).
    pub streak: Streak,
    pub latency: Duration,
}

/// The status a probe leads to: `Reachable` and `Healthy` with reasons a person understands (the
/// transition times kept while a condition's status stays), nodes, version, latency, time. Nodes
/// and version are left out when the member did not answer, so a merge patch keeps the last ones
/// seen.
pub fn status(member: &MemberCluster, probed: &Probed<'_>, now: Timestamp) -> MemberClusterStatus {
    let previous = member
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = member.metadata.generation;
    let healthy_now = probed.healthy_now;
    let believed = probed.streak.healthy.unwrap_or(healthy_now);
    let (reachable, healthy_reason) = match probed.probe {
        ProbeResult::Answered { .. } => (
            condition(
                previous,
                "Reachable",
                true,
                "APIAnswered",
                "the API server answered",
                generation,
                now,
            ),
            if believed {
                "EnoughReadyNodes"
            } else {
                "TooFewReadyNodes"
            },
        ),
        ProbeResult::Unreachable { reason } => (
            condition(
                previous,
                "Reachable",
                false,
                "Unreachable",
                format!("the API server did not answer: {reason}"),
                generation,
                now,
            ),
            if believed {
                "EnoughReadyNodes"
            } else {
                "Unreachable"
            },
        ),
    };
    let message = if believed == healthy_now {
        probed.why.to_owned()
    } else {
        let needed = if believed {
            member.spec.health.failure_threshold
        } else {
            member.spec.health.success_threshold
        };
        format!(
            "still as before (latest probe disagrees: {}; {} of {needed} probes needed to change)",
            probed.why, probed.streak.disagreeing
        )
    };
    let healthy = condition(
        previous,
        "Healthy",
        believed,
        healthy_reason,
        message,
        generation,
        now,
    );
    let mut status = MemberClusterStatus {
        conditions: vec![reachable, healthy],
        probe_latency_millis: Some(u64::try_from(probed.latency.as_millis()).unwrap_or(u64::MAX)),
        last_probe_time: Some(Time(now)),
        ..Default::default()
    };
    if let ProbeResult::Answered {
        version,
        ready_nodes,
        total_nodes,
    } = probed.probe
    {
        status.version = Some(version.clone());
        status.ready_nodes = Some(*ready_nodes);
        status.total_nodes = Some(*total_nodes);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ratio: f64, min: Option<u32>) -> HealthCheck {
        HealthCheck {
            min_survival_ratio: ratio,
            min_ready_nodes: min,
            failure_threshold: 3,
            success_threshold: 2,
            ..Default::default()
        }
    }

    #[test]
    fn required_ready_nodes_round_up() {
        assert_eq!(required_ready(&check(0.5, None), 4), 2);
        assert_eq!(required_ready(&check(0.5, None), 5), 3);
        assert_eq!(required_ready(&check(0.7, None), 10), 7);
        assert_eq!(required_ready(&check(1.0, None), 3), 3);
        assert_eq!(required_ready(&check(0.5, None), 0), 0);
        assert_eq!(
            required_ready(&check(0.5, Some(4)), 10),
            4,
            "a fixed minimum wins"
        );
    }

    #[test]
    fn judging_one_probe_explains_itself() {
        let answered = |ready, total| ProbeResult::Answered {
            version: "v1".into(),
            ready_nodes: ready,
            total_nodes: total,
        };
        let (ok, why) = judge(&check(0.5, None), &answered(1, 4));
        assert!(!ok);
        assert_eq!(why, "1 of 4 nodes ready, at least 2 (⌈4 × 0.5⌉) required");
        assert!(judge(&check(0.5, None), &answered(2, 4)).0);
        let (ok, why) = judge(
            &check(0.5, None),
            &ProbeResult::Unreachable {
                reason: "timed out after 5s".into(),
            },
        );
        assert!(!ok && why.contains("timed out"));
    }

    #[test]
    fn transitions_need_consecutive_results_either_way() {
        let c = check(0.5, None);
        let (s, changed) = next(&c, Streak::default(), true);
        assert!(
            changed && s.healthy == Some(true),
            "the first probe is believed at once"
        );
        // Two failures are not enough with a failure threshold of 3; a success resets the count.
        let (s, changed) = next(&c, s, false);
        assert!(!changed);
        let (s, _) = next(&c, s, false);
        let (s, changed) = next(&c, s, true);
        assert!(!changed && s.disagreeing == 0);
        let (s, _) = next(&c, s, false);
        let (s, _) = next(&c, s, false);
        let (s, changed) = next(&c, s, false);
        assert!(
            changed && s.healthy == Some(false),
            "the third consecutive failure flips it"
        );
        // Recovery needs the success threshold (2).
        let (s, changed) = next(&c, s, true);
        assert!(!changed);
        let (s, changed) = next(&c, s, true);
        assert!(changed && s.healthy == Some(true));
    }

    fn member_with(
        conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    ) -> MemberCluster {
        let spec: crate::api::MemberClusterSpec = serde_json::from_value(serde_json::json!({
            "endpoint": "https://127.0.0.1:6443",
            "credentialsSecret": {"name": "member-member-1"},
        }))
        .expect("spec");
        let mut member = MemberCluster::new("member-1", spec);
        member.spec.health = check(0.5, None);
        member.metadata.generation = Some(4);
        member.status = Some(MemberClusterStatus {
            conditions,
            ..Default::default()
        });
        member
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    #[test]
    fn an_answering_member_is_reachable_and_healthy_with_its_nodes_and_version() {
        let probe = ProbeResult::Answered {
            version: "v1.36.3".into(),
            ready_nodes: 3,
            total_nodes: 4,
        };
        let probed = Probed {
            probe: &probe,
            healthy_now: true,
            why: "3 of 4 nodes ready (2 needed)",
            streak: Streak {
                healthy: Some(true),
                disagreeing: 0,
            },
            latency: Duration::from_millis(12),
        };
        let status = status(
            &member_with(Vec::new()),
            &probed,
            at("2026-12-04T10:00:00Z"),
        );
        let read: Vec<(&str, &str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            read,
            [
                ("Reachable", "True", "APIAnswered"),
                ("Healthy", "True", "EnoughReadyNodes")
            ]
        );
        assert_eq!(
            status.conditions[1].message,
            "3 of 4 nodes ready (2 needed)"
        );
        assert_eq!(status.conditions[1].observed_generation, Some(4));
        assert_eq!((status.ready_nodes, status.total_nodes), (Some(3), Some(4)));
        assert_eq!(status.version.as_deref(), Some("v1.36.3"));
        assert_eq!(status.probe_latency_millis, Some(12));
    }

    #[test]
    fn a_first_failure_under_the_threshold_keeps_healthy_says_why_and_keeps_the_nodes() {
        // Healthy since 09:00; one unanswered probe of the three needed to change.
        let before = member_with(vec![
            condition(
                &[],
                "Reachable",
                true,
                "APIAnswered",
                "",
                None,
                at("2026-12-04T09:00:00Z"),
            ),
            condition(
                &[],
                "Healthy",
                true,
                "EnoughReadyNodes",
                "",
                None,
                at("2026-12-04T09:00:00Z"),
            ),
        ]);
        let probe = ProbeResult::Unreachable {
            reason: "no answer within 5s".into(),
        };
        let probed = Probed {
            probe: &probe,
            healthy_now: false,
            why: "the API server did not answer: no answer within 5s",
            streak: Streak {
                healthy: Some(true),
                disagreeing: 1,
            },
            latency: Duration::from_secs(5),
        };
        let status = status(&before, &probed, at("2026-12-04T10:00:00Z"));
        let (reachable, healthy) = (&status.conditions[0], &status.conditions[1]);
        assert_eq!(
            (reachable.status.as_str(), reachable.reason.as_str()),
            ("False", "Unreachable")
        );
        assert_eq!(
            reachable.last_transition_time,
            Time(at("2026-12-04T10:00:00Z"))
        );
        assert_eq!(
            (healthy.status.as_str(), healthy.reason.as_str()),
            ("True", "EnoughReadyNodes")
        );
        assert_eq!(
            healthy.last_transition_time,
            Time(at("2026-12-04T09:00:00Z")),
            "still healthy: time kept"
        );
        assert_eq!(
            healthy.message,
            "still as before (latest probe disagrees: the API server did not answer: no answer within 5s; 1 of 3 probes needed to change)"
        );
        // Not in the patch, so the last nodes and version seen stay in the status.
        assert_eq!(
            (status.ready_nodes, status.total_nodes, status.version),
            (None, None, None)
        );
    }

    #[test]
    fn an_unreachable_member_believed_unhealthy_says_unreachable() {
        let probe = ProbeResult::Unreachable {
            reason: "refused".into(),
        };
        let probed = Probed {
            probe: &probe,
            healthy_now: false,
            why: "the API server did not answer: refused",
            streak: Streak {
                healthy: Some(false),
                disagreeing: 0,
            },
            latency: Duration::from_millis(1),
        };
        let status = status(
            &member_with(Vec::new()),
            &probed,
            at("2026-12-04T10:00:00Z"),
        );
        assert_eq!(status.conditions[1].status, "False");
        assert_eq!(status.conditions[1].reason, "Unreachable");
    }
}
