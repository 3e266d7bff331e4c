//! Runs the `Hooks` quiesce's commands in the member's pods (`pods/exec` over a WebSocket), as
//! `multicluster_core::snapshot::hooks` planned them, all hooks of a phase at once: the pre hooks
//! are one barrier before the volume snapshots are cut, the post hooks one after.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, ListParams};
use kube::{Api, Client};
use multicluster_core::api::HookStatus;
use multicluster_core::snapshot::hooks::{Hook, OnError};
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// How much of a hook's output its status keeps (the end of it, where the errors are).
const OUTPUT_KEPT: usize = 512;

/// The pods of `ns`, as JSON for the hook planner.
pub(crate) async fn pods(member: &Client, ns: &str) -> anyhow::Result<Vec<Value>> {
    let pods = Api::<Pod>::namespaced(member.clone(), ns)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the pods of {ns} for their quiesce hooks"))?;
    pods.items
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .context("reading the pods")
}

/// Runs every hook at once and waits for all of them. Returns each outcome, and the failures
/// that fail the snapshot (`on-error: Fail`), each named with its pod and container.
pub(crate) async fn run_all(
    exec: &Client,
    ns: &str,
    hooks: &[Hook],
) -> (Vec<HookStatus>, Vec<String>) {
    let outcomes =
        futures::future::join_all(hooks.iter().map(|hook| run_one(exec, ns, hook))).await;
    let mut statuses = Vec::new();
    let mut failing = Vec::new();
    for (hook, outcome) in hooks.iter().zip(outcomes) {
        let (succeeded, message) = match outcome {
            Ok(output) => (true, (!output.is_empty()).then_some(output)),
            Err(why) => {
                if hook.on_error == OnError::Fail {
                    failing.push(format!(
                        "{} hook in pod {} (container {}) failed: {why}",
                        hook.when.as_str(),
                        hook.pod,
                        hook.container
                    ));
                }
                (false, Some(why))
            }
        };
        statuses.push(HookStatus {
            pod: hook.pod.clone(),
            container: hook.container.clone(),
            when: hook.when.as_str().to_owned(),
            succeeded,
            message,
        });
    }
    (statuses, failing)
}

/// Runs one hook within its timeout. `Ok` is the end of its output; `Err` says why it failed.
async fn run_one(exec: &Client, ns: &str, hook: &Hook) -> Result<String, String> {
    let pods = Api::<Pod>::namespaced(exec.clone(), ns);
    let run = async {
        let params = AttachParams::default()
            .container(hook.container.clone())
            .stdout(true)
            .stderr(true);
        let mut process = match pods.exec(&hook.pod, hook.command.clone(), &params).await {
            Ok(p) => p,
            Err(e) => return Err(why_exec_failed(&pods, &hook.pod, &e).await),
        };
        let status = process.take_status();
        let (stdout, stderr) = tokio::join!(drain(process.stdout()), drain(process.stderr()));
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        let joined = process.join().await;
        match status {
            Some(s) if s.status.as_deref() == Some("Success") => Ok(tail(&stdout)),
            Some(s) => {
                let output = if stderr.is_empty() { &stdout } else { &stderr };
                Err(format!(
                    "{}{}",
                    s.message.unwrap_or_else(|| "the command failed".to_owned()),
                    match tail(output) {
                        t if t.is_empty() => String::new(),
                        t => format!("; output: {t}"),
                    }
                ))
            }
            None => Err(match joined {
                Err(e) => format!("the exec stream broke: {e}"),
                Ok(()) => "the exec stream ended without the command's exit status".to_owned(),
            }),
        }
    };
    tokio::time::timeout(hook.timeout, run)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "did not finish within its timeout of {}s",
                hook.timeout.as_secs_f64()
            ))
        })
}

/// Reads a stream to its end (the command blocks when nobody reads), keeping the last
/// [`OUTPUT_KEPT`] bytes.
async fn drain(reader: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut reader) = reader else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > OUTPUT_KEPT {
            kept.drain(..kept.len() - OUTPUT_KEPT);
        }
    }
    kept
}

fn tail(output: &[u8]) -> String {
    String::from_utf8_lossy(output).trim().to_owned()
}

/// Why the API server would not start the command: its own message when it sent one; else (an
/// upgrade refused with a bare status code) what the pod says a person should check first.
async fn why_exec_failed(pods: &Api<Pod>, pod: &str, error: &kube::Error) -> String {
    if let kube::Error::Api(status) = error {
        return format!(
            "the API server did not start the command: {}",
            status.message
        );
    }
    let hint = match pods.get_opt(pod).await {
        Ok(None) => "; the pod no longer exists",
        Ok(Some(p)) if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() => {
            "; the pod is not scheduled to a node, so no kubelet can run the command"
        }
        _ => "",
    };
    format!("the API server did not start the command: {error}{hint}")
}
