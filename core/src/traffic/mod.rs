//! Load sharing and backup: which members serve, with what weight, given a `TrafficPolicy` and the
//! members' health. Pure functions; the hub server carries health in and data-plane objects out.
//!
//! Rules:
//! - A member **serves** when it is healthy, not drained, and either never failed or has been
//!   healthy for `failbackAfterHealthyProbes` consecutive probes since it did (fail-back
//!   hysteresis, so a flapping member does not pull traffic back and forth).
//! - `MultiActive`: every serving member keeps its configured weight; the weight of a member that
//!   does not serve goes to the serving members of the best (lowest) priority, split by their
//!   weights.
//! - `ActiveStandby`: actives serve with their weights, standbys wait at 0. Each active that does
//!   not serve is replaced by the next serving standby in priority order, which takes its weight;
//!   shares left without a standby go to the serving actives by priority, then weight.
//! - `ActiveWithOneStandby`: as above, but only the best serving standby ever takes over (it takes
//!   the weight of every active that does not serve).
//! - No member serving at all is reported (`nobody_serves`), with every weight 0: never a division
//!   by zero, and never traffic sent to a member that failed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    MemberCluster, Role, TrafficMember, TrafficMemberState, TrafficMode, TrafficPolicySpec,
    TrafficPolicyStatus, TrafficTransition,
};

/// What the hub knows of one member for one policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberState {
    pub healthy: bool,
    /// Taken out on purpose (`traffic drain`): serves nothing, without being unhealthy.
    pub drained: bool,
    /// `Some(n)`: the member failed and has been healthy for `n` consecutive probes since;
    /// `None`: it never failed, or it is back.
    pub recovering: Option<u32>,
}

/// The weights in effect and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveWeights {
    /// Member → weight now (0 for a member that gets nothing), every policy member listed.
    pub weights: BTreeMap<String, u32>,
    pub healthy: Vec<String>,
    pub unhealthy: Vec<String>,
    /// Healthy but not serving yet (fail-back pending) or drained.
    pub waiting: Vec<String>,
    pub nobody_serves: bool,
}

/// The member's state after one more probe result (`previous` is `None` for the first one: a
/// member healthy from the start serves at once, one that starts unhealthy must earn its way in).
pub fn observe(
    previous: Option<MemberState>,
    healthy_now: bool,
    failback_after: u32,
) -> MemberState {
    let drained = previous.is_some_and(|p| p.drained);
    if !healthy_now {
        return MemberState {
            healthy: false,
            drained,
            recovering: Some(0),
        };
    }
    let recovering = match previous {
        None => None,
        Some(p) => p.recovering.map(|n| n + 1).filter(|n| *n < failback_after),
    };
    MemberState {
        healthy: true,
        drained,
        recovering,
    }
}

/// Whether a member may serve now.
pub fn serves(state: &MemberState, failback_after: u32) -> bool {
    state.healthy && !state.drained && state.recovering.is_none_or(|n| n >= failback_after)
}

/// The weights `spec` gives its members in the state `states` (a member without a state is taken
/// as unhealthy: the hub has not heard from it).
pub fn active_weights(
    spec: &TrafficPolicySpec,
    states: &BTreeMap<String, MemberState>,
) -> ActiveWeights {
    let state = |name: &str| states.get(name).copied().unwrap_or_default();
    let serving: BTreeSet<&str> = spec
        .members
        .iter()
        .filter(|m| serves(&state(&m.name), spec.failback_after_healthy_probes))
        .map(|m| m.name.as_str())
        .collect();
    let mut out = ActiveWeights::default();
    for m in &spec.members {
        let s = state(&m.name);
        out.weights.insert(m.name.clone(), 0);
        if !s.healthy {
            out.unhealthy.push(m.name.clone());
        } else {
            out.healthy.push(m.name.clone());
            if !serving.contains(m.name.as_str()) {
                out.waiting.push(m.name.clone());
            }
        }
    }
    if serving.is_empty() {
        out.nobody_serves = true;
        return out;
    }
    let is_active = |role: Role| spec.mode == TrafficMode::MultiActive || role == Role::Active;
    // Shares of members that should serve and do not, in priority order (then name).
    let mut orphaned: Vec<(u32, &str, u32)> = Vec::new();
    for m in &spec.members {
        if !is_active(m.role) {
            continue;
        }
        if serving.contains(m.name.as_str()) {
            *out.weights.entry(m.name.clone()).or_default() += m.weight;
        } else {
            orphaned.push((m.priority, &m.name, m.weight));
        }
    }
    orphaned.sort();
    // Standbys take over one failed active each, in priority order.
    let mut standbys: Vec<(u32, &str)> = spec
        .members
        .iter()
        .filter(|m| !is_active(m.role) && serving.contains(m.name.as_str()))
        .map(|m| (m.priority, m.name.as_str()))
        .collect();
    standbys.sort();
    if spec.mode == TrafficMode::ActiveWithOneStandby {
        standbys.truncate(1);
    }
    let mut leftover = 0u32;
    for (i, (_, _, weight)) in orphaned.iter().enumerate() {
        let taker = match spec.mode {
            TrafficMode::MultiActive => None,
            TrafficMode::ActiveStandby => standbys.get(i),
            TrafficMode::ActiveWithOneStandby => standbys.first(),
        };
        match taker {
            Some((_, name)) => *out.weights.entry((*name).to_owned()).or_default() += weight,
            None => leftover += weight,
        }
    }
    if leftover > 0 {
        // To the serving members of the best priority, split by their weights.
        let receivers: Vec<&crate::api::TrafficMember> = {
            let candidates: Vec<&crate::api::TrafficMember> = spec
                .members
                .iter()
                .filter(|m| serving.contains(m.name.as_str()) && out.weights[&m.name] > 0)
                .collect();
            let candidates = if candidates.is_empty() {
                spec.members
                    .iter()
                    .filter(|m| serving.contains(m.name.as_str()))
                    .collect()
            } else {
                candidates
            };
            let best = candidates.iter().map(|m| m.priority).min().unwrap_or(0);
            candidates
                .into_iter()
                .filter(|m| m.priority == best)
                .collect()
        };
        let shares = split(
            leftover,
            &receivers
                .iter()
                .map(|m| (m.name.as_str(), m.weight))
                .collect::<Vec<_>>(),
        );
        for (name, share) in shares {
            *out.weights.entry(name.to_owned()).or_default() += share;
        }
    }
    out
}

/// Splits `total` in proportion to `weights` (equally when they are all 0), largest remainders
/// first and ties by order, so the parts always add up to `total`.
pub fn split<'a>(total: u32, weights: &[(&'a str, u32)]) -> Vec<(&'a str, u32)> {
    if weights.is_empty() {
        return Vec::new();
    }
    let sum: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
    let weight = |w: u32| if sum == 0 { 1 } else { u64::from(w) };
    let denominator = if sum == 0 { weights.len() as u64 } else { sum };
    let mut parts: Vec<(&str, u64, u64)> = weights
        .iter()
        .map(|(name, w)| {
            let exact = u64::from(total) * weight(*w);
            (*name, exact / denominator, exact % denominator)
        })
        .collect();
    let given: u64 = parts.iter().map(|p| p.1).sum();
    let mut rest = u64::from(total) - given;
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|a, b| parts[*b].2.cmp(&parts[*a].2).then(a.cmp(b)));
    for i in order {
        if rest == 0 {
            break;
        }
        parts[i].1 += 1;
        rest -= 1;
    }
    parts
        .into_iter()
        .map(|(name, n, _)| (name, u32::try_from(n).unwrap_or(u32::MAX)))
        .collect()
}

/// A Deployment's `replicas` divided across members by their active weights, the remainder going
/// to the members of best priority first; members with weight 0 get none. Empty when nobody
/// serves (the caller keeps what runs: nothing is taken from a member that cannot be reached).
pub fn divide_replicas(
    replicas: u32,
    spec: &TrafficPolicySpec,
    weights: &ActiveWeights,
) -> BTreeMap<String, u32> {
    let mut serving: Vec<(u32, &str, u32)> = spec
        .members
        .iter()
        .filter_map(|m| {
            let w = weights.weights.get(&m.name).copied().unwrap_or(0);
            (w > 0).then_some((m.priority, m.name.as_str(), w))
        })
        .collect();
    serving.sort();
    let parts = split(
        replicas,
        &serving.iter().map(|(_, n, w)| (*n, *w)).collect::<Vec<_>>(),
    );
    let mut out: BTreeMap<String, u32> = spec.members.iter().map(|m| (m.name.clone(), 0)).collect();
    if serving.is_empty() {
        return BTreeMap::new();
    }
    for (name, n) in parts {
        out.insert(name.to_owned(), n);
    }
    out
}

/// Whether `cluster` is healthy for this policy: judged on its last probe with the policy's own
/// survival ratio or minimum when the policy sets one, else the member's own verdict (its
/// `Healthy` condition). A member the hub does not know is not healthy.
pub fn healthy_for_policy(member: &TrafficMember, cluster: Option<&MemberCluster>) -> bool {
    let Some(status) = cluster.and_then(|c| c.status.as_ref()) else {
        return false;
    };
    let condition = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    if member.min_survival_ratio.is_none() && member.min_ready_nodes.is_none() {
        return condition("Healthy").is_some_and(|c| c.status == "True");
    }
    if condition("Reachable").is_some_and(|c| c.status != "True") {
        return false;
    }
    let (Some(ready), Some(total)) = (status.ready_nodes, status.total_nodes) else {
        return false;
    };
    let mut check = cluster.map(|c| c.spec.health.clone()).unwrap_or_default();
    if let Some(ratio) = member.min_survival_ratio {
        check.min_survival_ratio = ratio;
    }
    check.min_ready_nodes = member.min_ready_nodes.or(check.min_ready_nodes);
    ready >= crate::members::health::required_ready(&check, total)
}

/// How many transitions status keeps.
const TRANSITIONS_KEPT: usize = 10;

/// The policy's next status from the members' latest probes: each new probe (a new
/// `lastProbeTime`) counts once toward fail-back; weights recomputed; a transition recorded (and
/// returned, for an Event) when the active weights change.
pub fn next_status(
    spec: &TrafficPolicySpec,
    previous: &TrafficPolicyStatus,
    clusters: &BTreeMap<String, MemberCluster>,
    now: Time,
) -> (TrafficPolicyStatus, Option<TrafficTransition>) {
    let mut member_states = BTreeMap::new();
    let mut states = BTreeMap::new();
    for m in &spec.members {
        let cluster = clusters.get(&m.name);
        let probe = cluster
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.last_probe_time.clone());
        if probe.is_none() {
            // Not probed yet: it does not serve, but it has not failed either, so its first
            // healthy probe lets it serve at once.
            states.insert(
                m.name.clone(),
                MemberState {
                    healthy: false,
                    drained: m.drained,
                    recovering: None,
                },
            );
            continue;
        }
        let prev = previous.member_states.get(&m.name);
        let prev_state = prev.map(|p| MemberState {
            healthy: p.healthy,
            drained: m.drained,
            recovering: p.recovering,
        });
        let state = match prev {
            Some(p) if p.last_probe_time == probe => MemberState {
                drained: m.drained,
                ..prev_state.unwrap_or_default()
            },
            _ => {
                let mut s = observe(
                    prev_state,
                    healthy_for_policy(m, cluster),
                    spec.failback_after_healthy_probes,
                );
                s.drained = m.drained;
                s
            }
        };
        member_states.insert(
            m.name.clone(),
            TrafficMemberState {
                healthy: state.healthy,
                recovering: state.recovering,
                last_probe_time: probe,
            },
        );
        states.insert(m.name.clone(), state);
    }
    let weights = active_weights(spec, &states);
    let mut status = TrafficPolicyStatus {
        healthy: weights.healthy.clone(),
        unhealthy: weights.unhealthy.clone(),
        active_weights: weights.weights.clone(),
        last_transition_time: previous.last_transition_time.clone(),
        last_transition_reason: previous.last_transition_reason.clone(),
        conditions: Vec::new(),
        member_states,
        transitions: previous.transitions.clone(),
    };
    let (serving, reason, message) = if weights.nobody_serves {
        (
            false,
            "NoHealthyMember",
            "no member is healthy and serving: no traffic is sent anywhere".to_owned(),
        )
    } else {
        let serving: Vec<String> = weights
            .weights
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(n, w)| format!("{n}={w}"))
            .collect();
        (true, "Serving", format!("serving: {}", serving.join(", ")))
    };
    status.conditions.push(crate::conditions::condition(
        &previous.conditions,
        "Serving",
        serving,
        reason,
        message,
        None,
        now.0,
    ));
    if status.active_weights == previous.active_weights {
        return (status, None);
    }
    let reason = explain(spec, previous, &status, &weights);
    let transition = TrafficTransition {
        time: now.clone(),
        reason: reason.clone(),
        active_weights: status.active_weights.clone(),
    };
    status.transitions.insert(0, transition.clone());
    status.transitions.truncate(TRANSITIONS_KEPT);
    status.last_transition_time = Some(now);
    status.last_transition_reason = Some(reason);
    (status, Some(transition))
}

/// Why the weights changed, member by member, in words.
fn explain(
    spec: &TrafficPolicySpec,
    previous: &TrafficPolicyStatus,
    next: &TrafficPolicyStatus,
    weights: &ActiveWeights,
) -> String {
    let mut parts = Vec::new();
    for m in &spec.members {
        let was = previous.active_weights.get(&m.name).copied().unwrap_or(0);
        let now = next.active_weights.get(&m.name).copied().unwrap_or(0);
        if was == now {
            continue;
        }
        let state = next.member_states.get(&m.name);
        let why = if m.drained {
            "drained"
        } else if !state.is_some_and(|s| s.healthy) {
            "unhealthy"
        } else if weights.waiting.contains(&m.name) {
            "healthy, waiting for fail-back"
        } else if previous.active_weights.is_empty() {
            "first computation"
        } else if was == 0 && (m.role == Role::Active || spec.mode == TrafficMode::MultiActive) {
            "back after fail-back"
        } else {
            "share moved"
        };
        parts.push(format!("{} {was}→{now} ({why})", m.name));
    }
    if weights.nobody_serves {
        parts.push("no member serves".into());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TrafficMember;

    fn member(name: &str, weight: u32, priority: u32, role: Role) -> TrafficMember {
        TrafficMember::new(name, weight, priority, role)
    }

    fn policy(mode: TrafficMode, members: Vec<TrafficMember>) -> TrafficPolicySpec {
        TrafficPolicySpec {
            mode,
            members,
            failback_after_healthy_probes: 3,
            services: Vec::new(),
            gateway: None,
        }
    }

    const UP: MemberState = MemberState {
        healthy: true,
        drained: false,
        recovering: None,
    };
    const DOWN: MemberState = MemberState {
        healthy: false,
        drained: false,
        recovering: None,
    };

    /// (member states, expected weights)
    type Case<'a> = (Vec<(&'a str, MemberState)>, Vec<(&'a str, u32)>);

    fn states(list: &[(&str, MemberState)]) -> BTreeMap<String, MemberState> {
        list.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect()
    }

    fn weights(w: &ActiveWeights) -> Vec<(&str, u32)> {
        w.weights.iter().map(|(n, w)| (n.as_str(), *w)).collect()
    }

    #[test]
    fn multi_active_moves_a_failed_members_share_to_the_best_priority() {
        use Role::Active;
        let spec = policy(
            TrafficMode::MultiActive,
            vec![
                member("a", 50, 0, Active),
                member("b", 30, 1, Active),
                member("c", 20, 1, Active),
            ],
        );
        // (states, expected weights)
        let cases: Vec<Case> = vec![
            (
                vec![("a", UP), ("b", UP), ("c", UP)],
                vec![("a", 50), ("b", 30), ("c", 20)],
            ),
            // c's 20 goes to a, the best priority.
            (
                vec![("a", UP), ("b", UP), ("c", DOWN)],
                vec![("a", 70), ("b", 30), ("c", 0)],
            ),
            // a's 50 goes to b and c (priority 1), 30:20.
            (
                vec![("a", DOWN), ("b", UP), ("c", UP)],
                vec![("a", 0), ("b", 60), ("c", 40)],
            ),
            (
                vec![("a", DOWN), ("b", DOWN), ("c", UP)],
                vec![("a", 0), ("b", 0), ("c", 100)],
            ),
            // No state at all is not healthy.
            (vec![("a", UP)], vec![("a", 100), ("b", 0), ("c", 0)]),
        ];
        for (i, (s, want)) in cases.into_iter().enumerate() {
            let got = active_weights(&spec, &states(&s));
            assert_eq!(weights(&got), want, "case {i}");
            assert_eq!(
                got.weights.values().sum::<u32>(),
                100,
                "case {i}: nothing lost"
            );
        }
    }

    #[test]
    fn active_standby_replaces_each_failed_active_with_the_next_standby() {
        use Role::{Active, Standby};
        let spec = policy(
            TrafficMode::ActiveStandby,
            vec![
                member("a1", 60, 0, Active),
                member("a2", 40, 0, Active),
                member("s1", 10, 1, Standby),
                member("s2", 10, 2, Standby),
            ],
        );
        let cases: Vec<Case> = vec![
            (
                vec![("a1", UP), ("a2", UP), ("s1", UP), ("s2", UP)],
                vec![("a1", 60), ("a2", 40), ("s1", 0), ("s2", 0)],
            ),
            // a2 fails: s1 (best standby) takes its 40.
            (
                vec![("a1", UP), ("a2", DOWN), ("s1", UP), ("s2", UP)],
                vec![("a1", 60), ("a2", 0), ("s1", 40), ("s2", 0)],
            ),
            // Both fail: s1 takes a1's (priority 0, then name), s2 a2's.
            (
                vec![("a1", DOWN), ("a2", DOWN), ("s1", UP), ("s2", UP)],
                vec![("a1", 0), ("a2", 0), ("s1", 60), ("s2", 40)],
            ),
            // s1 is down too: s2 takes the first failed active's share, the rest to... s2 as the
            // only serving member.
            (
                vec![("a1", DOWN), ("a2", DOWN), ("s1", DOWN), ("s2", UP)],
                vec![("a1", 0), ("a2", 0), ("s1", 0), ("s2", 100)],
            ),
            // No standby left: the surviving active takes the share.
            (
                vec![("a1", UP), ("a2", DOWN), ("s1", DOWN), ("s2", DOWN)],
                vec![("a1", 100), ("a2", 0), ("s1", 0), ("s2", 0)],
            ),
        ];
        for (i, (s, want)) in cases.into_iter().enumerate() {
            let got = active_weights(&spec, &states(&s));
            assert_eq!(weights(&got), want, "case {i}");
        }
    }

    #[test]
    fn active_with_one_standby_uses_only_the_best_standby() {
        use Role::{Active, Standby};
        let spec = policy(
            TrafficMode::ActiveWithOneStandby,
            vec![
                member("a1", 60, 0, Active),
                member("a2", 40, 0, Active),
                member("s1", 10, 1, Standby),
                member("s2", 10, 2, Standby),
            ],
        );
        let got = active_weights(
            &spec,
            &states(&[("a1", DOWN), ("a2", DOWN), ("s1", UP), ("s2", UP)]),
        );
        assert_eq!(
            weights(&got),
            vec![("a1", 0), ("a2", 0), ("s1", 100), ("s2", 0)]
        );
        // The best standby down: the next one is the one standby.
        let got = active_weights(
            &spec,
            &states(&[("a1", UP), ("a2", DOWN), ("s1", DOWN), ("s2", UP)]),
        );
        assert_eq!(
            weights(&got),
            vec![("a1", 60), ("a2", 0), ("s1", 0), ("s2", 40)]
        );
    }

    #[test]
    fn fail_back_waits_for_enough_healthy_probes_and_drain_moves_the_share() {
        use Role::Active;
        let spec = policy(
            TrafficMode::MultiActive,
            vec![member("a", 50, 0, Active), member("b", 50, 0, Active)],
        );
        let recovering = |n| MemberState {
            healthy: true,
            drained: false,
            recovering: Some(n),
        };
        let got = active_weights(&spec, &states(&[("a", UP), ("b", recovering(2))]));
        assert_eq!(weights(&got), vec![("a", 100), ("b", 0)]);
        assert_eq!(got.waiting, ["b"]);
        assert_eq!(
            got.healthy,
            ["a", "b"],
            "recovering is healthy, just not serving yet"
        );
        let got = active_weights(&spec, &states(&[("a", UP), ("b", recovering(3))]));
        assert_eq!(weights(&got), vec![("a", 50), ("b", 50)]);
        let drained = MemberState {
            drained: true,
            ..UP
        };
        let got = active_weights(&spec, &states(&[("a", drained), ("b", UP)]));
        assert_eq!(weights(&got), vec![("a", 0), ("b", 100)]);
        assert!(got.unhealthy.is_empty(), "drained is not unhealthy");
    }

    #[test]
    fn nobody_serving_is_reported_with_every_weight_zero() {
        use Role::Active;
        for mode in [
            TrafficMode::MultiActive,
            TrafficMode::ActiveStandby,
            TrafficMode::ActiveWithOneStandby,
        ] {
            let spec = policy(
                mode,
                vec![member("a", 0, 0, Active), member("b", 0, 0, Active)],
            );
            let got = active_weights(&spec, &states(&[("a", DOWN), ("b", DOWN)]));
            assert!(got.nobody_serves, "{mode:?}");
            assert_eq!(weights(&got), vec![("a", 0), ("b", 0)]);
            // Zero weights everywhere and one member up: it gets everything without dividing by 0.
            let got = active_weights(&spec, &states(&[("a", UP), ("b", DOWN)]));
            assert!(!got.nobody_serves);
            assert_eq!(weights(&got), vec![("a", 0), ("b", 0)]);
        }
    }

    #[test]
    fn a_failed_member_earns_its_way_back_probe_by_probe() {
        let mut s = observe(None, true, 3);
        assert!(serves(&s, 3), "healthy from the start serves at once");
        s = observe(Some(s), false, 3);
        assert!(!serves(&s, 3));
        for probe in 1..=2 {
            s = observe(Some(s), true, 3);
            assert!(!serves(&s, 3), "after {probe} healthy probes");
        }
        s = observe(Some(s), true, 3);
        assert!(serves(&s, 3), "after 3 healthy probes");
        assert_eq!(s.recovering, None, "back");
        // A relapse starts over.
        s = observe(
            Some(observe(Some(observe(Some(s), false, 3)), true, 3)),
            false,
            3,
        );
        assert_eq!(s.recovering, Some(0));
        assert!(!serves(&observe(None, false, 3), 3));
    }

    fn cluster(name: &str, healthy: bool, probe_second: i64) -> MemberCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.dev/v1alpha1", "kind": "MemberCluster",
            "metadata": {"name": name},
            "spec": {"endpoint": "https://127.0.0.1:1", "credentialsSecret": {"name": "s"}},
            "status": {"conditions": [
                {"type": "Reachable", "status": "True", "reason": "r", "message": "",
                 "lastTransitionTime": "2026-11-22T12:00:00Z"},
                {"type": "Healthy", "status": if healthy {"True"} else {"False"}, "reason": "r",
                 "message": "", "lastTransitionTime": "2026-11-22T12:00:00Z"}],
                "readyNodes": if healthy {4} else {1}, "totalNodes": 4,
                "lastProbeTime": format!("2026-11-22T12:00:{probe_second:02}Z")}
        }))
        .unwrap()
    }

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_795_000_000 + second).unwrap())
    }

    #[test]
    fn each_probe_counts_once_and_changes_are_recorded_with_reasons() {
        use Role::{Active, Standby};
        let mut spec = policy(
            TrafficMode::ActiveStandby,
            vec![member("m1", 100, 0, Active), member("m2", 100, 1, Standby)],
        );
        spec.failback_after_healthy_probes = 2;
        let clusters = |m1_healthy, second| {
            BTreeMap::from([
                ("m1".to_owned(), cluster("m1", m1_healthy, second)),
                ("m2".to_owned(), cluster("m2", true, second)),
            ])
        };
        let (s, t) = next_status(&spec, &Default::default(), &clusters(true, 0), at(0));
        assert_eq!(
            s.active_weights,
            BTreeMap::from([("m1".into(), 100), ("m2".into(), 0)])
        );
        assert!(t.unwrap().reason.contains("first computation"));
        let (s, t) = next_status(&spec, &s, &clusters(false, 1), at(1));
        assert_eq!(s.active_weights["m2"], 100);
        assert!(t.unwrap().reason.contains("m1 100→0 (unhealthy)"));
        // Healthy again: one probe is not enough (fail-back after 2)...
        let (s, t) = next_status(&spec, &s, &clusters(true, 2), at(2));
        assert!(t.is_none());
        assert_eq!(s.active_weights["m1"], 0);
        // ...and the same probe seen again does not count twice.
        let (s, t) = next_status(&spec, &s, &clusters(true, 2), at(3));
        assert!(t.is_none());
        let (s, t) = next_status(&spec, &s, &clusters(true, 4), at(4));
        assert_eq!(s.active_weights["m1"], 100);
        assert!(
            t.unwrap().reason.contains("back after fail-back"),
            "{:?}",
            s.transitions
        );
        assert_eq!(s.transitions.len(), 3);
        assert_eq!(s.conditions[0].status, "True");
        // A member not probed yet is not serving, and starts serving at its first healthy probe.
        let mut unprobed = cluster("m2", true, 0);
        unprobed.status.as_mut().unwrap().last_probe_time = None;
        let fresh = BTreeMap::from([
            ("m1".to_owned(), cluster("m1", false, 0)),
            ("m2".to_owned(), unprobed),
        ]);
        let (s0, _) = next_status(&spec, &Default::default(), &fresh, at(0));
        assert!(
            s0.conditions[0].reason == "NoHealthyMember" && !s0.member_states.contains_key("m2")
        );
        let (s1, _) = next_status(&spec, &s0, &clusters(false, 1), at(1));
        assert_eq!(
            s1.active_weights["m2"], 100,
            "no fail-back wait for a member that never failed"
        );
        // Nobody healthy: a condition, no division by zero.
        let none = BTreeMap::new();
        let (s, _) = next_status(&spec, &s, &none, at(5));
        assert_eq!(s.conditions[0].reason, "NoHealthyMember");
        assert!(s.active_weights.values().all(|w| *w == 0));
    }

    #[test]
    fn a_policys_own_survival_ratio_overrides_the_members() {
        let mut m = member("m1", 100, 0, Role::Active);
        let c = cluster("m1", false, 0); // 1 of 4 ready, the member itself says unhealthy
        assert!(!healthy_for_policy(&m, Some(&c)));
        m.min_survival_ratio = Some(0.25);
        assert!(healthy_for_policy(&m, Some(&c)), "1 of 4 meets ⌈4 × 0.25⌉");
        m.min_ready_nodes = Some(2);
        assert!(!healthy_for_policy(&m, Some(&c)));
        assert!(!healthy_for_policy(&m, None));
    }

    #[test]
    fn split_always_adds_up() {
        assert_eq!(
            split(10, &[("a", 1), ("b", 1), ("c", 1)]),
            vec![("a", 4), ("b", 3), ("c", 3)]
        );
        assert_eq!(split(7, &[("a", 0), ("b", 0)]), vec![("a", 4), ("b", 3)]);
        assert_eq!(
            split(100, &[("a", 30), ("b", 20)]),
            vec![("a", 60), ("b", 40)]
        );
        assert!(split(5, &[]).is_empty());
        for total in 0..50 {
            let parts = split(total, &[("a", 3), ("b", 7), ("c", 11)]);
            assert_eq!(parts.iter().map(|p| p.1).sum::<u32>(), total);
        }
    }

    #[test]
    fn replicas_follow_active_weights_with_the_remainder_by_priority() {
        use Role::Active;
        let spec = policy(
            TrafficMode::MultiActive,
            vec![
                member("a", 50, 1, Active),
                member("b", 50, 0, Active),
                member("c", 0, 0, Active),
            ],
        );
        let w = active_weights(&spec, &states(&[("a", UP), ("b", UP), ("c", UP)]));
        // 5 = 2.5 + 2.5: the extra one goes to b, the better priority.
        assert_eq!(
            divide_replicas(5, &spec, &w),
            BTreeMap::from([("a".into(), 2), ("b".into(), 3), ("c".into(), 0)])
        );
        let w = active_weights(&spec, &states(&[("a", UP), ("b", DOWN), ("c", UP)]));
        assert_eq!(
            divide_replicas(5, &spec, &w),
            BTreeMap::from([("a".into(), 5), ("b".into(), 0), ("c".into(), 0)])
        );
        let w = active_weights(&spec, &states(&[]));
        assert!(
            divide_replicas(5, &spec, &w).is_empty(),
            "nobody serves: keep what runs"
        );
    }
}
