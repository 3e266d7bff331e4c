//! Member health as pure functions: what one probe says, and when the hub changes
//! its mind about a member (only after enough consecutive results, so one slow probe does not
//! flip a cluster).

use crate::api::HealthCheck;

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
}
