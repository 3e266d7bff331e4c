//! TrafficPolicies, run by the Lease holder: every member probe and every policy change
//! recomputes the affected policies' active weights (`multicluster_core::traffic`), records them in
//! status and publishes an Event at every change.

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use multicluster_core::api::{MemberCluster, TrafficPolicy};
use multicluster_core::traffic;

enum Changed {
    Member(Box<MemberCluster>),
    Policy,
}

pub async fn run(client: Client, identity: String, run: crate::loops::Loop) {
    // Watches that stop with this loop.
    let (members, _members_watch): (Store<MemberCluster>, _) =
        crate::cache::watched_then(Api::all(client.clone()), "MemberClusters", || {});
    let (policies, _policies_watch): (Store<TrafficPolicy>, _) =
        crate::cache::watched_then(Api::all(client.clone()), "TrafficPolicies", || {});
    // Until the first lists arrive every member would look unknown, hence unhealthy.
    if members.wait_until_ready().await.is_err() || policies.wait_until_ready().await.is_err() {
        return;
    }
    let reporter = Reporter {
        controller: "multicluster-hub".into(),
        instance: Some(identity),
    };
    let member_events = watcher(
        Api::<MemberCluster>::all(client.clone()),
        Default::default(),
    )
    .default_backoff()
    .applied_objects()
    .map(|m| m.map(|m| Changed::Member(Box::new(m))));
    let policy_events = watcher(
        Api::<TrafficPolicy>::all(client.clone()),
        Default::default(),
    )
    .default_backoff()
    .applied_objects()
    .map(|p| p.map(|_| Changed::Policy));
    let mut events = futures::stream::select(member_events, policy_events).boxed();
    while let Some(event) = events.next().await {
        let mut clusters: std::collections::BTreeMap<String, MemberCluster> = members
            .state()
            .iter()
            .map(|m| (m.name_any(), (**m).clone()))
            .collect();
        let member = match event {
            Ok(Changed::Member(m)) => {
                // The store may trail the event by a moment: the event's own copy is the newest.
                let name = m.name_any();
                clusters.insert(name.clone(), *m);
                Some(name)
            }
            Ok(Changed::Policy) => None,
            Err(e) => {
                run.failed();
                tracing::warn!(error = %e, "watching members and traffic policies");
                continue;
            }
        };
        for policy in policies.state() {
            if let Some(m) = &member
                && !policy.spec.members.iter().any(|pm| pm.name == *m)
            {
                continue;
            }
            update(&client, &reporter, &policy, &clusters).await;
        }
    }
}

async fn update(
    client: &Client,
    reporter: &Reporter,
    policy: &TrafficPolicy,
    clusters: &std::collections::BTreeMap<String, MemberCluster>,
) {
    let previous = policy.status.clone().unwrap_or_default();
    let (next, transition) =
        traffic::next_status(&policy.spec, &previous, clusters, Time(Timestamp::now()));
    if next == previous {
        return;
    }
    let Some(namespace) = policy.namespace() else {
        return;
    };
    let name = policy.name_any();
    let api: Api<TrafficPolicy> = Api::namespaced(client.clone(), &namespace);
    // A full replace of the status carrying the resourceVersion we read: a compare-and-swap (a
    // policy changed meanwhile is recomputed from its next event), and fields that became empty
    // are removed, which a merge patch would leave behind.
    let mut updated = policy.clone();
    updated.status = Some(next.clone());
    match api
        .replace_status(&name, &Default::default(), &updated)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => return,
        Err(e) => {
            tracing::warn!(policy = %format!("{namespace}/{name}"), error = %e, "recording traffic status");
            return;
        }
    }
    let Some(transition) = transition else {
        return;
    };
    let nobody = next
        .conditions
        .iter()
        .any(|c| c.reason == "NoHealthyMember");
    tracing::info!(policy = %format!("{namespace}/{name}"), reason = %transition.reason, "traffic shifted");
    // One Event per change, each with its own note. (kube's Recorder folds Events that differ
    // only in their note into one series that keeps the first note.)
    let event = serde_json::json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}-"), "namespace": namespace},
        "eventTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now()),
        "reportingController": reporter.controller,
        "reportingInstance": reporter.instance.clone().unwrap_or_default(),
        "action": "Recompute",
        "type": if nobody { "Warning" } else { "Normal" },
        "reason": if nobody { "NoHealthyMember" } else { "TrafficShifted" },
        "note": transition.reason,
        "regarding": policy.object_ref(&()),
    });
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &namespace);
    let created = match serde_json::from_value(event) {
        Ok(event) => events.create(&Default::default(), &event).await.map(|_| ()),
        Err(e) => Err(kube::Error::SerdeError(e)),
    };
    if let Err(e) = created {
        tracing::warn!(error = %e, "publishing a traffic Event");
    }
}
