//! The `Hooks` quiesce: commands the application's own pods run before the volume snapshots are
//! cut (flush and freeze) and after (thaw), named in pod annotations. The keys follow Velero's
//! backup hooks, so a pod annotated for Velero needs no change:
//!
//! | ours (first)                          | Velero's (read when ours are absent)     |
//! |---------------------------------------|------------------------------------------|
//! | `multicluster.dev/pre-hook-command`   | `pre.hook.backup.velero.io/command`      |
//! | `multicluster.dev/pre-hook-container` | `pre.hook.backup.velero.io/container`    |
//! | `multicluster.dev/pre-hook-on-error`  | `pre.hook.backup.velero.io/on-error`     |
//! | `multicluster.dev/pre-hook-timeout`   | `pre.hook.backup.velero.io/timeout`      |
//!
//! and the same with `post`. A command is a JSON array (`["/sbin/fsfreeze", "--freeze", "/data"]`)
//! or a single word; the container defaults to the pod's first; `on-error` is `Fail` (default: the
//! snapshot fails) or `Continue` (recorded, the snapshot goes on); the timeout is a duration such
//! as `30s` or `1m30s` (default 30s).
//!
//! This module decides which hooks run where from the pods as JSON; the hub server runs them
//! (`pods/exec` on the member) and reports each outcome.

use std::time::Duration;

use serde_json::Value;

/// Before the volume snapshots are cut, or after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Pre,
    Post,
}

impl When {
    pub fn as_str(self) -> &'static str {
        match self {
            When::Pre => "pre",
            When::Post => "post",
        }
    }

    fn velero_prefix(self) -> &'static str {
        match self {
            When::Pre => "pre.hook.backup.velero.io/",
            When::Post => "post.hook.backup.velero.io/",
        }
    }
}

/// What a failed hook does to the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// The snapshot fails (after the post hooks have run).
    Fail,
    /// The failure is recorded and the snapshot goes on.
    Continue,
}

/// One command to run in one container of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub pod: String,
    pub container: String,
    pub when: When,
    pub command: Vec<String>,
    pub on_error: OnError,
    pub timeout: Duration,
}

/// The hooks of a namespace's pods: what runs before the cut, what after, and the annotated pods
/// that are not running (a command cannot run there; nothing in them writes either).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookPlan {
    pub pre: Vec<Hook>,
    pub post: Vec<Hook>,
    pub not_running: Vec<String>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The hooks `pods` (Pod objects as JSON) name, or every annotation that is wrong (pod, key and
/// why), so that a mistake is reported before anything is quiesced.
pub fn plan(pods: &[Value]) -> Result<HookPlan, String> {
    let mut out = HookPlan::default();
    let mut errors = Vec::new();
    for pod in pods {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let annotations = &pod["metadata"]["annotations"];
        let mut hooks = Vec::new();
        for when in [When::Pre, When::Post] {
            match hook_of(pod, annotations, when) {
                Ok(Some(hook)) => hooks.push(hook),
                Ok(None) => {}
                Err(e) => errors.push(format!("pod {name}: {e}")),
            }
        }
        if hooks.is_empty() {
            continue;
        }
        if pod["status"]["phase"].as_str() != Some("Running") {
            out.not_running.push(name.to_owned());
            continue;
        }
        for hook in hooks {
            match hook.when {
                When::Pre => out.pre.push(hook),
                When::Post => out.post.push(hook),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("; "))
    }
}

/// The annotation `field` of the `when` hook: ours, else Velero's. Returns the key it was read
/// from, for messages.
fn annotation(annotations: &Value, when: When, field: &str) -> Option<(String, String)> {
    [
        format!("multicluster.dev/{}-hook-{field}", when.as_str()),
        format!("{}{field}", when.velero_prefix()),
    ]
    .into_iter()
    .find_map(|key| {
        annotations[key.as_str()]
            .as_str()
            .map(|v| (key.clone(), v.to_owned()))
    })
}

fn hook_of(pod: &Value, annotations: &Value, when: When) -> Result<Option<Hook>, String> {
    let Some((key, command)) = annotation(annotations, when, "command") else {
        return Ok(None);
    };
    let command = parse_command(&command).map_err(|e| format!("{key}: {e}"))?;
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match annotation(annotations, when, "container") {
        Some((key, c)) if !containers.contains(&c.as_str()) => {
            return Err(format!(
                "{key}: no container {c:?} in the pod (it has {})",
                containers.join(", ")
            ));
        }
        Some((_, c)) => c,
        None => containers
            .first()
            .map(|c| (*c).to_owned())
            .ok_or("the pod has no containers")?,
    };
    let on_error = match annotation(annotations, when, "on-error") {
        None => OnError::Fail,
        Some((_, v)) if v == "Fail" => OnError::Fail,
        Some((_, v)) if v == "Continue" => OnError::Continue,
        Some((key, v)) => return Err(format!("{key}: {v:?} is neither Fail nor Continue")),
    };
    let timeout = match annotation(annotations, when, "timeout") {
        None => DEFAULT_TIMEOUT,
        Some((key, v)) => crate::duration::parse(&v).map_err(|e| format!("{key}: {e}"))?,
    };
    Ok(Some(Hook {
        pod: pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        container,
        when,
        command,
        on_error,
        timeout,
    }))
}

/// A JSON array of strings, or one word (Velero accepts both).
fn parse_command(text: &str) -> Result<Vec<String>, String> {
    let text = text.trim();
    let command: Vec<String> = if text.starts_with('[') {
        serde_json::from_str(text)
            .map_err(|e| format!("not a JSON array of strings ({e}): {text}"))?
    } else if text.is_empty() || text.contains(char::is_whitespace) {
        return Err(format!(
            "{text:?}: write a command with arguments as a JSON array, e.g. [\"/bin/sh\", \"-c\", \"sync\"]"
        ));
    } else {
        vec![text.to_owned()]
    };
    if command.first().is_none_or(String::is_empty) {
        return Err("the command is empty".to_owned());
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, phase: &str, annotations: Value) -> Value {
        json!({"metadata": {"name": name, "annotations": annotations},
               "spec": {"containers": [{"name": "db"}, {"name": "sidecar"}]},
               "status": {"phase": phase}})
    }

    #[test]
    fn ours_and_veleros_annotations_give_hooks_with_their_defaults() {
        let pods = [
            pod(
                "db-0",
                "Running",
                json!({"multicluster.dev/pre-hook-command": r#"["/sbin/fsfreeze", "--freeze", "/data"]"#,
                       "multicluster.dev/pre-hook-timeout": "1m30s",
                       "multicluster.dev/post-hook-command": r#"["/sbin/fsfreeze", "--unfreeze", "/data"]"#,
                       "multicluster.dev/post-hook-container": "sidecar",
                       "multicluster.dev/post-hook-on-error": "Continue"}),
            ),
            // Velero's keys, and ours winning where both are set.
            pod(
                "db-1",
                "Running",
                json!({"pre.hook.backup.velero.io/command": "sync",
                       "pre.hook.backup.velero.io/on-error": "Continue",
                       "multicluster.dev/pre-hook-on-error": "Fail"}),
            ),
            pod("web", "Running", json!({"app": "web"})),
        ];
        let plan = plan(&pods).unwrap();
        assert_eq!(
            plan.pre,
            vec![
                Hook {
                    pod: "db-0".into(),
                    container: "db".into(),
                    when: When::Pre,
                    command: vec!["/sbin/fsfreeze".into(), "--freeze".into(), "/data".into()],
                    on_error: OnError::Fail,
                    timeout: Duration::from_secs(90),
                },
                Hook {
                    pod: "db-1".into(),
                    container: "db".into(),
                    when: When::Pre,
                    command: vec!["sync".into()],
                    on_error: OnError::Fail,
                    timeout: DEFAULT_TIMEOUT,
                },
            ]
        );
        assert_eq!(plan.post.len(), 1);
        assert_eq!(
            (plan.post[0].container.as_str(), plan.post[0].on_error),
            ("sidecar", OnError::Continue)
        );
        assert!(plan.not_running.is_empty());
    }

    #[test]
    fn annotated_pods_that_are_not_running_are_listed_not_run() {
        let pods = [pod(
            "db-0",
            "Pending",
            json!({"multicluster.dev/pre-hook-command": "sync"}),
        )];
        let plan = plan(&pods).unwrap();
        assert!(plan.pre.is_empty());
        assert_eq!(plan.not_running, vec!["db-0".to_owned()]);
    }

    #[test]
    fn every_wrong_annotation_is_named_with_its_pod_and_key() {
        let pods = [
            pod(
                "a",
                "Running",
                json!({"multicluster.dev/pre-hook-command": "fsfreeze --freeze /data"}),
            ),
            pod(
                "b",
                "Running",
                json!({"pre.hook.backup.velero.io/command": "[\"sync\"",
                       "multicluster.dev/post-hook-command": "[]"}),
            ),
            pod(
                "c",
                "Running",
                json!({"multicluster.dev/pre-hook-command": "sync",
                       "multicluster.dev/pre-hook-container": "nginx"}),
            ),
            pod(
                "d",
                "Running",
                json!({"multicluster.dev/pre-hook-command": "sync",
                       "multicluster.dev/pre-hook-on-error": "Ignore"}),
            ),
            pod(
                "e",
                "Running",
                json!({"multicluster.dev/post-hook-command": "sync",
                       "multicluster.dev/post-hook-timeout": "soon"}),
            ),
        ];
        let error = plan(&pods).unwrap_err();
        for expected in [
            "pod a: multicluster.dev/pre-hook-command: \"fsfreeze --freeze /data\": write a command with arguments as a JSON array",
            "pod b: pre.hook.backup.velero.io/command: not a JSON array of strings",
            "pod b: multicluster.dev/post-hook-command: the command is empty",
            "pod c: multicluster.dev/pre-hook-container: no container \"nginx\" in the pod (it has db, sidecar)",
            "pod d: multicluster.dev/pre-hook-on-error: \"Ignore\" is neither Fail nor Continue",
            "pod e: multicluster.dev/post-hook-timeout: \"soon\" is not a duration",
        ] {
            assert!(error.contains(expected), "{expected:?} not in {error}");
        }
    }
}
