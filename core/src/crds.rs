//! The CustomResourceDefinitions generated from the API types.
//!
//! `manifests/crds/` holds their YAML, regenerated with `cargo xtask gen-crds`; a unit test fails
//! when the checked-in files differ from what the types generate.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::*;

/// Every CRD of the `multicluster.dev` group, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        MemberCluster::crd(),
        Distribution::crd(),
        Intent::crd(),
        VipPool::crd(),
        VipClaim::crd(),
        TrafficPolicy::crd(),
        StorageLocation::crd(),
        NamespaceSnapshot::crd(),
        NamespaceRestore::crd(),
        SnapshotSchedule::crd(),
    ]
}

/// File name under `manifests/crds/` for a CRD, e.g. `memberclusters.multicluster.dev.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// The YAML document checked in for a CRD.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser::Error> {
    let body = serde_saphyr::to_string(crd)?;
    Ok(format!(
        "# Generated from the Rust types in core/src/api by `cargo xtask gen-crds`. Do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn checked_in_crds_match_the_types() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
        let mut expected_files = Vec::new();
        for crd in all() {
            let name = file_name(&crd);
            let path = dir.join(&name);
            let checked_in = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask gen-crds`", path.display()));
            assert!(
                checked_in == to_yaml(&crd).unwrap(),
                "{name} differs from what the types generate; run `cargo xtask gen-crds` and commit"
            );
            expected_files.push(name);
        }
        let mut present: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        present.sort();
        expected_files.sort();
        assert_eq!(present, expected_files, "stale files in manifests/crds");
    }

    #[test]
    fn every_kind_has_a_status_subresource_and_printer_columns() {
        for crd in all() {
            let version = &crd.spec.versions[0];
            let name = crd.metadata.name.clone().unwrap();
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{name} has no status subresource"
            );
            assert!(
                version
                    .additional_printer_columns
                    .as_ref()
                    .is_some_and(|c| c.len() >= 3),
                "{name} has too few printer columns"
            );
        }
    }
}
