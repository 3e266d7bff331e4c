//! How the hub server runs its background loops: each under a name (its log lines and its failure
//! counter `multicluster_webhook_loop_failures_total{task=NAME}` carry it), and only while this
//! replica holds the Lease. Loops over one kind of hub object use [`run_controller`]: kube-runtime's
//! controller, a failed reconcile retried after [`RETRY_AFTER`].

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::Controller;
use kube::runtime::controller::{self, Action};
use kube::runtime::watcher;
use kube::{Api, Resource};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

/// When a reconcile that failed is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A running loop's name and failure counter, handed to the loop so that it can count what fails.
#[derive(Clone, Debug)]
pub struct Loop {
    pub name: &'static str,
    failures: Counter,
}

impl Loop {
    pub fn new(name: &'static str, metrics: &crate::metrics::Metrics) -> Self {
        Self {
            name,
            failures: metrics.loop_failures(name),
        }
    }

    /// Counts one failed pass (the caller logs what failed, with its own fields).
    pub fn failed(&self) {
        self.failures.inc();
    }
}

/// Reconciles every `K` that `api` lists, one object at a time, with kube-runtime's controller.
/// A reconcile error is counted and logged, and that object is tried again after [`RETRY_AFTER`].
pub async fn run_controller<K, Ctx, E, F, Fut>(api: Api<K>, reconcile: F, ctx: Arc<Ctx>, run: Loop)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    Ctx: Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, E>> + Send + 'static,
{
    Controller::new(api, watcher::Config::default())
        .run(reconcile, |_, _, _| Action::requeue(RETRY_AFTER), ctx)
        .for_each(|result| {
            match result {
                Ok(_) => {}
                Err(controller::Error::ReconcilerFailed(error, object)) => {
                    run.failed();
                    tracing::warn!(task = run.name, %object, %error, "reconcile failed; retrying");
                }
                // The object went before its turn, or the watch is restarting: nothing failed.
                Err(e) => tracing::debug!(task = run.name, error = %e, "controller"),
            }
            async {}
        })
        .await;
}

/// Runs the loop called `name` while this replica leads (`leading`, from `leader::elect`): `task`
/// makes it afresh each time the lead is won, and it is stopped when the lead is lost.
pub fn while_leading<F, Fut>(
    leading: &watch::Receiver<bool>,
    metrics: &crate::metrics::Metrics,
    name: &'static str,
    task: F,
) where
    F: Fn(Loop) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let run = Loop::new(name, metrics);
    crate::leader::while_leading(leading.clone(), name, move || task(run.clone()));
}
