//! Following an object the hub server works on (a snapshot, a restore): every status it writes is
//! printed once, in order, from a watch on that one object (polling would miss quick steps).

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{anyhow, bail};
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// What a follower needs of an object's status.
#[derive(Debug)]
pub struct Step {
    pub phase: String,
    pub message: String,
    pub finished: bool,
}

/// Prints `Phase: message` on stderr for every change of the object named `name`, until `step`
/// says it finished; returns it then. After `timeout`, fails saying that the work goes on.
pub async fn follow<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    step: impl Fn(&K) -> Step,
) -> anyhow::Result<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api.clone(), config).applied_objects().boxed();
    let mut last: Option<(String, String)> = None;
    let mut seen: Option<Step> = None;
    let followed = tokio::time::timeout(timeout, async {
        while let Some(object) = events.next().await {
            let object = object.map_err(|e| anyhow!("watching {what} {name}: {e}"))?;
            let now = step(&object);
            let shown = (now.phase.clone(), now.message.clone());
            if last.as_ref() != Some(&shown) {
                eprintln!("{}: {}", now.phase, now.message);
                last = Some(shown);
            }
            if now.finished {
                return Ok(object);
            }
            seen = Some(now);
        }
        bail!("the watch on {what} {name} ended")
    })
    .await;
    match followed {
        Ok(result) => result,
        Err(_) => bail!(
            "{what} {name} is still {} after {}s; it goes on on the hub \
             (`kubectl multicluster {what} show {name}`)",
            seen.map_or_else(|| "Pending".to_owned(), |s| s.phase),
            timeout.as_secs()
        ),
    }
}
