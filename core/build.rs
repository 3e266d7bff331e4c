//! Stamps the build with the git commit it was built from (`MULTICLUSTER_COMMIT`), so that the
//! plugin and the hub server can say exactly what they are. A build outside a git checkout (a
//! source archive) says `unknown` unless `MULTICLUSTER_COMMIT` is set in its environment.

use std::process::Command;

fn main() {
    let commit = std::env::var("MULTICLUSTER_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=MULTICLUSTER_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=MULTICLUSTER_COMMIT");
    // A new commit changes HEAD (a detached checkout) or the branch's ref.
    for path in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
