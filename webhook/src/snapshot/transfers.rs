//! Runs the data mover on a member for a snapshot (exports) or a restore (imports). Per volume a
//! Secret with the location's keys, for an export a temporary claim made from the volume
//! snapshot, and the mover pod (all built by `multicluster_core::snapshot::mover`), a few volumes
//! at once. It follows the pods (their status, and the last progress line of their output) until
//! every one has succeeded or one has failed; a pod that does not start, or moves nothing, for the
//! stall timeout fails its job. Every object of the jobs is removed before [`run`] returns,
//! whatever happened.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use multicluster_core::api::{S3Location, VolumeDataStatus};
use multicluster_core::snapshot::data::Moved;
use multicluster_core::snapshot::mover::{self, Job, MoverImage, Outcome};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::snapshot::progress::{PhasedStatus, Progress};

/// How the hub server runs mover pods, from its flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub image: MoverImage,
    /// Volumes moved at once for one snapshot or restore.
    pub parallel: usize,
    /// A mover pod that has not started, or has moved no byte, for this long fails its job.
    pub stall_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image: MoverImage {
                image: multicluster_core::install::default_image(),
                host_binary: None,
            },
            parallel: 4,
            stall_timeout: Duration::from_secs(300),
        }
    }
}

/// An S3 location the jobs move data to or from, with its keys (read from its Secret on the hub).
pub struct Location<'a> {
    pub s3: &'a S3Location,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl<'a> Location<'a> {
    /// `s3` with its keys, read from its Secret on the hub.
    pub async fn read(hub: &Client, s3: &'a S3Location) -> anyhow::Result<Self> {
        let (access_key_id, secret_access_key) = crate::snapshot::storage::s3_keys(hub, s3).await?;
        Ok(Location {
            s3,
            access_key_id,
            secret_access_key,
        })
    }
}

impl Debug for Location<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Location")
            .field("bucket", &self.s3.bucket)
            .finish_non_exhaustive()
    }
}

/// One job and where it is.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub job: Job,
    pub data: VolumeDataStatus,
    state: State,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Queued,
    Started {
        since: Instant,
        /// When its progress last changed (or it started).
        moved: Instant,
    },
    Done,
}

/// How often the pods are read, and their output (for progress).
const POLL: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(3);
/// The status is written at most this often while data moves.
const WRITE_EVERY: Duration = Duration::from_secs(2);

/// Runs `jobs` (all in one namespace of `member`) to their end, calling `record` with every
/// transfer after each poll and writing `progress` from time to time; returns what each moved, in
/// `jobs` order. The first job that fails ends the run with an error naming its claim, and every
/// job's objects are removed before this returns.
pub async fn run<K, S>(
    member: &Client,
    location: &Location<'_>,
    settings: &Settings,
    jobs: Vec<Job>,
    progress: &mut Progress<K, S>,
    record: impl Fn(&mut S, &[Transfer]) + Send,
) -> anyhow::Result<Vec<Moved>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
    S: PhasedStatus,
{
    let Some(first) = jobs.first() else {
        return Ok(Vec::new());
    };
    let (ns, selector) = (first.namespace.clone(), first.selector());
    // What an earlier, interrupted run left would collide with this one's names: removed, and
    // gone (a pod takes its grace period, its claim waits for it) before anything is created.
    remove(member, &ns, &selector).await?;
    wait_removed(member, &ns, &selector).await?;
    let mut transfers: Vec<Transfer> = jobs
        .into_iter()
        .map(|job| Transfer {
            job,
            data: VolumeDataStatus::default(),
            state: State::Queued,
        })
        .collect();
    let result = drive(
        member,
        location,
        settings,
        (&ns, &selector),
        &mut transfers,
        progress,
        &record,
    )
    .await;
    record(&mut progress.status, &transfers);
    if let Err(e) = remove(member, &ns, &selector).await {
        tracing::warn!(namespace = %ns, %selector, error = %format!("{e:#}"),
            "removing the data mover's pods, Secrets and claims; delete them by that label");
    }
    result
}

async fn drive<K, S>(
    member: &Client,
    location: &Location<'_>,
    settings: &Settings,
    (ns, selector): (&str, &str),
    transfers: &mut [Transfer],
    progress: &mut Progress<K, S>,
    record: &(impl Fn(&mut S, &[Transfer]) + Send),
) -> anyhow::Result<Vec<Moved>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
    S: PhasedStatus,
{
    let pods: Api<Pod> = Api::namespaced(member.clone(), ns);
    let mut results: Vec<Option<Moved>> = vec![None; transfers.len()];
    let mut logs_read = Instant::now();
    loop {
        let running = transfers
            .iter()
            .filter(|t| matches!(t.state, State::Started { .. }))
            .count();
        let free = settings.parallel.max(1).saturating_sub(running);
        for t in transfers
            .iter_mut()
            .filter(|t| t.state == State::Queued)
            .take(free)
        {
            start(member, location, settings, &t.job)
                .await
                .with_context(|| format!("starting the data mover for claim {}", t.job.claim))?;
            let now = Instant::now();
            t.state = State::Started {
                since: now,
                moved: now,
            };
        }
        let listed = pods
            .list(&ListParams::default().labels(selector))
            .await
            .context("reading the data mover's pods")?
            .items;
        let read_logs = logs_read.elapsed() >= LOG_EVERY;
        if read_logs {
            logs_read = Instant::now();
        }
        for (t, result) in transfers.iter_mut().zip(results.iter_mut()) {
            let State::Started { since, moved } = &mut t.state else {
                continue;
            };
            let (claim, name) = (&t.job.claim, &t.job.name);
            let pod = listed
                .iter()
                .find(|p| p.name_any() == *name)
                .ok_or_else(|| {
                    anyhow!(
                        "volume {claim}: the mover pod {ns}/{name} was deleted before it finished"
                    )
                })?;
            match mover::outcome(&serde_json::to_value(pod)?) {
                Outcome::Succeeded(done) => {
                    t.data = mover::data_status(&done);
                    *result = Some(done);
                    t.state = State::Done;
                }
                Outcome::Failed(why) => bail!("volume {claim}: {why} (mover pod {ns}/{name})"),
                Outcome::Waiting(why) => {
                    if since.elapsed() >= settings.stall_timeout {
                        bail!(
                            "volume {claim}: the mover pod {ns}/{name} did not start within {}s: {why}",
                            settings.stall_timeout.as_secs()
                        );
                    }
                }
                Outcome::Running => {
                    if read_logs && let Some(line) = last_progress(&pods, name).await {
                        if line.bytes_done != t.data.bytes_done || t.data.bytes_total == 0 {
                            *moved = Instant::now();
                        }
                        t.data.bytes_done = line.bytes_done;
                        t.data.bytes_total = line.bytes_total;
                    }
                    if moved.elapsed() >= settings.stall_timeout {
                        bail!(
                            "volume {claim}: the mover moved nothing for {}s (pod {ns}/{name}, \
                             {} of {} bytes done): the location or the volume hangs",
                            settings.stall_timeout.as_secs(),
                            t.data.bytes_done,
                            t.data.bytes_total
                        );
                    }
                }
            }
        }
        record(&mut progress.status, transfers);
        if transfers.iter().all(|t| t.state == State::Done) {
            return Ok(results.into_iter().flatten().collect());
        }
        if progress.since_write() >= WRITE_EVERY {
            progress.write().await?;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last progress line of the pod's output; `None` when there is none yet or it cannot be read.
async fn last_progress(pods: &Api<Pod>, name: &str) -> Option<mover::ProgressLine> {
    let params = LogParams {
        container: Some("mover".to_owned()),
        tail_lines: Some(4),
        ..LogParams::default()
    };
    match pods.logs(name, &params).await {
        Ok(log) => mover::last_progress(&log),
        Err(e) => {
            tracing::debug!(pod = %name, error = %e, "reading the mover's progress");
            None
        }
    }
}

/// Creates the job's Secret, temporary claim (export) and pod.
async fn start(
    member: &Client,
    location: &Location<'_>,
    settings: &Settings,
    job: &Job,
) -> anyhow::Result<()> {
    let ns = job.namespace.as_str();
    let secret: Secret = serde_json::from_value(mover::credentials_secret(
        job,
        &location.access_key_id,
        &location.secret_access_key,
        location.s3.ca_bundle.as_deref(),
    ))?;
    Api::<Secret>::namespaced(member.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .with_context(|| format!("creating Secret {ns}/{} for the mover", job.name))?;
    if let Some(claim) = mover::temporary_claim(job) {
        let claim: PersistentVolumeClaim = serde_json::from_value(claim)?;
        Api::<PersistentVolumeClaim>::namespaced(member.clone(), ns)
            .create(&PostParams::default(), &claim)
            .await
            .with_context(|| format!("creating the temporary claim {ns}/{}", job.name))?;
    }
    let pod: Pod = serde_json::from_value(mover::pod(job, location.s3, &settings.image))?;
    let pods = Api::<Pod>::namespaced(member.clone(), ns);
    // A namespace a restore just created has no `default` ServiceAccount until the member's
    // controller-manager makes it, and until then the API server admits no pod there.
    let deadline = Instant::now() + ACCOUNT_WAIT;
    loop {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s))
                if s.code == 403
                    && s.message.contains("serviceaccount")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating the mover pod {ns}/{}", job.name));
            }
        }
    }
}

/// How long a new namespace may take to get its `default` ServiceAccount.
const ACCOUNT_WAIT: Duration = Duration::from_secs(60);

/// Deletes every pod, Secret and claim in `ns` labelled with `selector` (one snapshot's or
/// restore's jobs); returns how many. Pods go first: a claim in use is only removed once its pod
/// is gone.
pub async fn remove(member: &Client, ns: &str, selector: &str) -> anyhow::Result<usize> {
    let params = ListParams::default().labels(selector);
    let mut removed = 0;
    removed += delete_all(&Api::<Pod>::namespaced(member.clone(), ns), &params).await?;
    removed += delete_all(&Api::<Secret>::namespaced(member.clone(), ns), &params).await?;
    removed += delete_all(
        &Api::<PersistentVolumeClaim>::namespaced(member.clone(), ns),
        &params,
    )
    .await?;
    Ok(removed)
}

/// Waits until no pod, Secret or claim in `ns` is labelled with `selector`.
async fn wait_removed(member: &Client, ns: &str, selector: &str) -> anyhow::Result<()> {
    let params = ListParams::default().labels(selector);
    let deadline = Instant::now() + ACCOUNT_WAIT;
    loop {
        let left = Api::<Pod>::namespaced(member.clone(), ns)
            .list_metadata(&params)
            .await?
            .items
            .len()
            + Api::<Secret>::namespaced(member.clone(), ns)
                .list_metadata(&params)
                .await?
                .items
                .len()
            + Api::<PersistentVolumeClaim>::namespaced(member.clone(), ns)
                .list_metadata(&params)
                .await?
                .items
                .len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{left} object(s) of an earlier run ({selector}) are still being deleted in {ns} \
                 after {}s; try again once they are gone",
                ACCOUNT_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn delete_all<K>(api: &Api<K>, params: &ListParams) -> anyhow::Result<usize>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let mut removed = 0;
    for object in api.list_metadata(params).await?.items {
        let name = object.name_any();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => removed += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting {name}")),
        }
    }
    Ok(removed)
}
