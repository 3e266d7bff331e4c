//! Waiting on a member's health as the hub reports it (`MemberCluster` status), for the tests that
//! play a member's nodes and those whose nodes are real.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, Client};
use multicluster_core::api::MemberCluster;

/// Waits until MemberCluster `name` satisfies `check`; returns how long that took.
pub async fn wait_for_member(
    hub: &Client,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&MemberCluster) -> bool,
) -> Duration {
    let started = Instant::now();
    let api: Api<MemberCluster> = Api::all(hub.clone());
    crate::eventually(&format!("{name} {what}"), timeout, async || {
        let mc = api.get(name).await.map_err(|e| e.to_string())?;
        if check(&mc) {
            Ok(())
        } else {
            Err(format!("{:?}", mc.status))
        }
    })
    .await;
    started.elapsed()
}

/// The member's condition of this type.
pub fn member_condition<'a>(mc: &'a MemberCluster, type_: &str) -> Option<&'a Condition> {
    mc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the hub reports the member Healthy (None before the first probe).
pub fn member_healthy(mc: &MemberCluster) -> Option<bool> {
    member_condition(mc, "Healthy").map(|c| c.status == "True")
}
