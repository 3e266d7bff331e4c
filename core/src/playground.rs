//! Names the plugin's local playground and the hub server's binary share: the playground CSI
//! driver (`multicluster-webhook csi-driver`) serves under this name, and `local up` installs the
//! CSIDriver, StorageClass and snapshot classes that name it.

/// The playground CSI driver's name.
pub const CSI_DRIVER: &str = "playground.csi.multicluster.dev";
/// The topology segment that pins a playground volume to the node holding its directory.
pub const CSI_TOPOLOGY_KEY: &str = "topology.playground.csi.multicluster.dev/node";

use serde_json::{Value, json};

/// Where a pod that runs the hub server binary from the host finds it.
pub const HOST_BINARY_MOUNT: &str = "/usr/local/bin/multicluster-webhook";

/// The host's C library directories (Debian's multiarch layout: `/lib/<arch>-linux-gnu`, and
/// `/lib64` where the x86-64 loader lives). The playground's pods that run the hub server binary
/// (the clusterset DNS server, the data movers) run it from the busybox image, which has no C
/// library, and the binary is linked dynamically against glibc.
pub fn host_library_dirs() -> Vec<String> {
    let mut dirs = vec![format!("/lib/{}-linux-gnu", std::env::consts::ARCH)];
    if std::env::consts::ARCH == "x86_64" {
        dirs.push("/lib64".to_owned());
    }
    dirs
}

/// Makes the first container of `pod_spec` run the hub server binary at `binary` on the node
/// (the playground's nodes share the host's file system) instead of its image's entrypoint: the
/// binary and `libraries` are mounted read-only. The release image would have to be built (musl,
/// another full build) and imported into every node; this runs the very binary under test.
/// Mounts and volumes the pod already has are kept.
pub fn run_from_host(pod_spec: &mut Value, binary: &str, libraries: &[String]) {
    let container = &mut pod_spec["containers"][0];
    container["imagePullPolicy"] = "Never".into();
    container["command"] = json!([HOST_BINARY_MOUNT]);
    let mut mounts =
        vec![json!({"name": "host-binary", "mountPath": HOST_BINARY_MOUNT, "readOnly": true})];
    let mut volumes = vec![json!({"name": "host-binary",
        "hostPath": {"path": binary, "type": "File"}})];
    for (i, dir) in libraries.iter().enumerate() {
        mounts.push(
            json!({"name": format!("host-libraries-{i}"), "mountPath": dir, "readOnly": true}),
        );
        volumes.push(json!({"name": format!("host-libraries-{i}"),
                            "hostPath": {"path": dir, "type": "Directory"}}));
    }
    append(&mut container["volumeMounts"], mounts);
    append(&mut pod_spec["volumes"], volumes);
}

fn append(list: &mut Value, items: Vec<Value>) {
    match list.as_array_mut() {
        Some(existing) => existing.extend(items),
        None => *list = items.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_run_from_the_host_keeps_its_own_volumes_and_mounts_the_binary_and_libraries_read_only()
    {
        let mut spec = json!({"containers": [{"name": "mover", "image": "busybox",
            "volumeMounts": [{"name": "volume", "mountPath": "/volume"}]}],
            "volumes": [{"name": "volume", "persistentVolumeClaim": {"claimName": "c"}}]});
        run_from_host(
            &mut spec,
            "/opt/bin/multicluster-webhook",
            &["/lib/x86_64-linux-gnu".to_owned()],
        );
        let c = &spec["containers"][0];
        assert_eq!(c["command"], json!([HOST_BINARY_MOUNT]));
        assert_eq!(c["volumeMounts"].as_array().map(Vec::len), Some(3));
        assert!(
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .skip(1)
                .all(|m| m["readOnly"] == true)
        );
        assert_eq!(
            spec["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "c"
        );
        assert_eq!(
            spec["volumes"][1]["hostPath"]["path"],
            "/opt/bin/multicluster-webhook"
        );
        assert_eq!(spec["volumes"][2]["hostPath"]["type"], "Directory");
    }
}
