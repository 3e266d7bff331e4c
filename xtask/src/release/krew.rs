//! The krew `Plugin` manifest (`krew/multicluster.yaml`): rendered by the release with the real
//! checksums, and checked against the rules the krew index enforces (krew's
//! `internal/index/validation` and `cmd/validate-krew-manifest`, restated here so that the tests
//! run without krew).

use serde_json::Value;

use super::platform::{COMPLETION_HELPER, HUB_SERVER_BIN, PLUGIN_BIN, Platform};

/// The plugin's name in the krew index: `kubectl krew install multicluster`.
pub const PLUGIN_NAME: &str = "multicluster";
pub const API_VERSION: &str = "krew.googlecontainertools.github.com/v1alpha2";

/// An archive the manifest offers for one platform.
#[derive(Debug, Clone)]
pub struct Download<'a> {
    pub platform: &'a Platform,
    pub uri: String,
    pub sha256: String,
}

/// Where `archive` of `version` is downloaded from: the repository's release of tag `v<version>`.
pub fn download_uri(repository: &str, version: &str, archive: &str) -> String {
    format!("{repository}/releases/download/v{version}/{archive}")
}

/// The manifest for `version` offering `downloads` (Linux archives also carry the hub server). Written as text (not serialized) so that the
/// descriptions stay readable block scalars; every value put in is a token without YAML syntax.
pub fn render(version: &str, homepage: &str, downloads: &[Download<'_>]) -> String {
    let mut out = format!(
        "# Rendered by `cargo xtask release` with the checksums of the archives it built
# (xtask/src/release/krew.rs); edit the template there, not this file.
apiVersion: {API_VERSION}
kind: Plugin
metadata:
  name: {PLUGIN_NAME}
spec:
  version: v{version}
  homepage: {homepage}
  shortDescription: Distribute, fail over and snapshot across clusters
  description: |
    Manages a fleet of Kubernetes clusters from one hub cluster. Distributes
    objects to member clusters in dependency order (secrets first), transformed
    per member and kept in sync; gives synchronised Services virtual IPs and
    names; probes member health and shifts traffic and workloads by weight,
    priority and HA mode; fences managers by intent ID; snapshots a namespace
    (all volumes quiesced at once) and restores it elsewhere, refusing a
    restore into a namespace that holds a different application.
  caveats: |
    `kubectl multicluster init` installs the hub server into the current
    cluster, the hub. It needs cluster-admin there (CRDs, webhook
    configurations, RBAC) and pulls ghcr.io/multicluster-dev/multicluster-webhook
    at this version. Certificates are self-signed unless you pass
    --cert-manager (cert-manager must then be installed).
    Remove it with `kubectl multicluster init --uninstall`.

    `kubectl multicluster local up` (a playground of local API servers, Linux)
    also needs kube-apiserver and etcd, which tests/install-deps.sh from a
    checkout of the repository builds once; it says so when they are missing.

    To complete `kubectl multicluster <TAB>` through kubectl (1.26 or later),
    put the completion helper that comes with the plugin on your PATH:
      ln -s ~/.krew/store/{PLUGIN_NAME}/v{version}/{COMPLETION_HELPER} ~/.krew/bin/
    or load `kubectl multicluster completion bash|zsh|fish|powershell`.
  platforms:
"
    );
    for download in downloads {
        let platform = download.platform;
        out.push_str(&format!(
            "  - selector:
      matchLabels:
        os: {os}
        arch: {arch}
    uri: {uri}
    sha256: {sha256}
    bin: {bin}
    files:
    - from: {bin}
      to: .
    - from: {helper}
      to: .
{hub_server}    - from: LICENSE
      to: .
    - from: README.md
      to: .
",
            os = platform.os,
            arch = platform.arch,
            uri = download.uri,
            sha256 = download.sha256,
            bin = platform.executable(PLUGIN_BIN),
            helper = platform.completion_helper(),
            hub_server = if platform.os == "linux" {
                format!("    - from: {HUB_SERVER_BIN}\n      to: .\n")
            } else {
                String::new()
            },
        ));
    }
    out
}

/// Every platform krew knows (`validate-krew-manifest`'s list): a selector must pick at least one
/// and no two selectors the same.
pub const KREW_PLATFORMS: &[(&str, &str)] = &[
    ("windows", "386"),
    ("windows", "amd64"),
    ("windows", "arm64"),
    ("linux", "386"),
    ("linux", "amd64"),
    ("linux", "arm"),
    ("linux", "arm64"),
    ("linux", "ppc64le"),
    ("darwin", "386"),
    ("darwin", "amd64"),
    ("darwin", "arm64"),
];

const WINDOWS_RESERVED_NAMES: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// The rules the krew index holds `manifest` (parsed from the file `file_name`) to; each broken
/// rule is one message. Besides krew's own: a homepage, description and caveats, and `https`
/// downloads, which the index's reviewers ask for.
pub fn index_rule_violations(file_name: &str, manifest: &Value) -> Vec<String> {
    let mut broken = Vec::new();
    let str_at = |pointer: &str| {
        manifest
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };

    if str_at("/apiVersion") != API_VERSION {
        broken.push(format!(
            "apiVersion is {:?}, krew reads {API_VERSION}",
            str_at("/apiVersion")
        ));
    }
    if str_at("/kind") != "Plugin" {
        broken.push(format!("kind is {:?}, not Plugin", str_at("/kind")));
    }
    let name = str_at("/metadata/name");
    let safe = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !WINDOWS_RESERVED_NAMES
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name));
    if !safe {
        broken.push(format!(
            "metadata.name {name:?} is not a safe plugin name ([A-Za-z0-9_-]+)"
        ));
    }
    match file_name.strip_suffix(".yaml") {
        Some(stem) if stem == name => {}
        Some(stem) => broken.push(format!(
            "the file is {stem}.yaml but the plugin is named {name:?}"
        )),
        None => broken.push(format!("{file_name}: a manifest's file name ends in .yaml")),
    }
    let short = str_at("/spec/shortDescription");
    if short.is_empty() {
        broken.push("spec.shortDescription is missing".to_owned());
    } else if short.contains(['\r', '\n']) {
        broken.push("spec.shortDescription has a line break".to_owned());
    }
    for field in ["description", "caveats"] {
        if str_at(&format!("/spec/{field}")).trim().is_empty() {
            broken.push(format!("spec.{field} is missing"));
        }
    }
    if !str_at("/spec/homepage").starts_with("https://") {
        broken.push("spec.homepage is not an https address".to_owned());
    }
    let version = str_at("/spec/version");
    if !is_krew_semver(version) {
        broken.push(format!(
            "spec.version {version:?} is not a semantic version with a leading v"
        ));
    }

    let platforms = manifest
        .pointer("/spec/platforms")
        .and_then(Value::as_array);
    let platforms = match platforms {
        Some(p) if !p.is_empty() => p.as_slice(),
        _ => {
            broken.push("spec.platforms is empty".to_owned());
            &[]
        }
    };
    for (i, platform) in platforms.iter().enumerate() {
        for problem in platform_violations(platform) {
            broken.push(format!("spec.platforms[{i}]: {problem}"));
        }
    }
    for (os, arch) in KREW_PLATFORMS {
        let picked: Vec<usize> = (0..platforms.len())
            .filter(|&i| selector_matches(&platforms[i]["selector"], os, arch))
            .collect();
        if picked.len() > 1 {
            broken.push(format!(
                "spec.platforms {picked:?} have overlapping selectors that select {os}/{arch}"
            ));
        }
    }
    broken
}

fn platform_violations(platform: &Value) -> Vec<String> {
    let mut broken = Vec::new();
    let field = |name: &str| platform.get(name).and_then(Value::as_str).unwrap_or("");
    if !field("uri").starts_with("https://") {
        broken.push(format!("uri {:?} is not an https address", field("uri")));
    }
    let sha = field("sha256");
    if !(sha.len() == 64 && sha.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))) {
        broken.push(format!("sha256 {sha:?} is not 64 lowercase hex digits"));
    }
    if field("bin").is_empty() {
        broken.push("bin is missing".to_owned());
    }
    match platform.get("files") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ops)) if ops.is_empty() => {
            broken.push("files is empty (leave it out or list files)".to_owned())
        }
        Some(Value::Array(ops)) => {
            for op in ops {
                for key in ["from", "to"] {
                    if op.get(key).and_then(Value::as_str).unwrap_or("").is_empty() {
                        broken.push(format!("a files entry has no {key}"));
                    }
                }
            }
        }
        Some(_) => broken.push("files is not a list".to_owned()),
    }
    let selector = &platform["selector"];
    let labels = selector.get("matchLabels").and_then(Value::as_object);
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    if labels.is_none_or(|l| l.is_empty()) && expressions.is_none_or(|e| e.is_empty()) {
        broken.push("selector is missing or empty".to_owned());
    }
    let keys = labels
        .into_iter()
        .flat_map(|l| l.keys().map(String::as_str))
        .chain(
            expressions
                .into_iter()
                .flatten()
                .map(|e| e["key"].as_str().unwrap_or("")),
        );
    for key in keys {
        if key != "os" && key != "arch" {
            broken.push(format!("selector key {key:?} is not supported (os, arch)"));
        }
    }
    if !KREW_PLATFORMS
        .iter()
        .any(|(os, arch)| selector_matches(selector, os, arch))
    {
        broken.push("selector matches no platform krew supports".to_owned());
    }
    broken
}

/// Whether a label selector picks the platform `os`/`arch` (the labels krew matches against).
pub fn selector_matches(selector: &Value, os: &str, arch: &str) -> bool {
    let label = |key: &str| match key {
        "os" => Some(os),
        "arch" => Some(arch),
        _ => None,
    };
    let labels_match = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|labels| labels.iter().all(|(k, v)| label(k) == v.as_str()));
    let expressions_match = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|expressions| {
            expressions.iter().all(|e| {
                let value = label(e["key"].as_str().unwrap_or(""));
                let listed = |v: &str| {
                    e["values"]
                        .as_array()
                        .is_some_and(|vs| vs.iter().any(|x| x.as_str() == Some(v)))
                };
                match e["operator"].as_str().unwrap_or("") {
                    "In" => value.is_some_and(listed),
                    "NotIn" => !value.is_some_and(listed),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
        });
    let has_any =
        selector.get("matchLabels").is_some() || selector.get("matchExpressions").is_some();
    has_any && labels_match && expressions_match
}

/// krew's version rule: `v` then MAJOR.MINOR.PATCH, with an optional `-pre` and `+build`.
fn is_krew_semver(version: &str) -> bool {
    let Some(rest) = version.strip_prefix('v') else {
        return false;
    };
    let core = rest.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_need_a_leading_v_and_three_numbers() {
        assert!(is_krew_semver("v0.1.0"));
        assert!(is_krew_semver("v1.2.3-rc.1+abc"));
        assert!(!is_krew_semver("0.1.0"));
        assert!(!is_krew_semver("v0.1"));
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let linux = json!({"matchLabels": {"os": "linux"}});
        assert!(selector_matches(&linux, "linux", "arm64"));
        assert!(!selector_matches(&linux, "darwin", "arm64"));
        let not_arm = json!({"matchExpressions": [{"key": "arch", "operator": "NotIn", "values": ["arm64"]}]});
        assert!(selector_matches(&not_arm, "linux", "amd64"));
        assert!(!selector_matches(&not_arm, "linux", "arm64"));
        assert!(!selector_matches(&json!({}), "linux", "amd64"));
    }
}
