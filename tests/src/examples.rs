//! Applications for end-to-end tests, built from the Kubernetes project's own example manifests
//! vendored in `tests/examples` (with their licence and source note).

/// `tests/examples`: the Kubernetes project's example apps (guestbook, cassandra), vendored.
pub fn dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The application under test in `ns` on `context`: guestbook (three Deployments, three Services)
/// and cassandra (a StatefulSet of 3 with a claim template, a Service) from `tests/examples`,
/// plus a suspended CronJob, a Deployment scaled to 0, a Secret and a ConfigMap; and what
/// controllers would have made (played): a Pod owned by a ReplicaSet and an Event.
pub fn build_application(pg: &crate::Playground, context: &str, ns: &str) {
    // One at a time: cassandra's manifest holds a cluster-scoped StorageClass that `kubectl apply`
    // in two tests at once would both try to create.
    static APPLYING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = APPLYING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let examples = dir();
    for dir in ["guestbook", "cassandra"] {
        crate::run_ok(
            pg.kubectl()
                .args(["--context", context, "apply", "-n", ns, "-f"])
                .arg(examples.join(dir)),
        );
    }
    let extra = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly-report}
spec:
  schedule: "0 3 * * *"
  suspend: true
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: report, image: "busybox:1.36", command: ["sh", "-c", "date"]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: maintenance, labels: {app.kubernetes.io/name: maintenance}}
spec:
  replicas: 0
  selector: {matchLabels: {app: maintenance}}
  template:
    metadata: {labels: {app: maintenance}}
    spec:
      containers: [{name: tools, image: "busybox:1.36"}]
---
apiVersion: v1
kind: Secret
metadata: {name: redis-password}
stringData: {password: "correct horse battery staple"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: frontend-config}
data: {GET_HOSTS_FROM: dns, greeting: "hello from the snapshot test"}
---
apiVersion: v1
kind: Pod
metadata:
  name: frontend-played-pod
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: frontend-6c6d8b7d4f, uid: 3a7c7e52-1d4c-4b35-9d7e-4f5b9c0d2a11, controller: true}
spec:
  containers: [{name: php-redis, image: "us-docker.pkg.dev/google-samples/containers/gke/gb-frontend:v5"}]
---
apiVersion: v1
kind: Event
metadata: {name: frontend.played}
involvedObject: {kind: Deployment, name: frontend, namespace: NS}
reason: Played
message: an event the test plays
type: Normal
"#
    .replace("NS", ns);
    let out = pg.apply(context, &extra, &["-n", ns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
