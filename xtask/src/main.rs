//! `cargo xtask <task>`: chores that keep generated files in the repository true.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "gen-crds" => {
            gen_crds(&workspace_root().join("manifests/crds"))?;
            gen_install(&workspace_root().join("manifests"))
        }
        _ => bail!(
            "usage: cargo xtask gen-crds   (regenerates manifests/ from core/src/api and core/src/install.rs)"
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes the hub server's install manifests (`core/src/install.rs`).
fn gen_install(dir: &Path) -> anyhow::Result<()> {
    use multicluster_core::install;
    for (file, objects) in install::manifest_files() {
        let path = dir.join(file);
        std::fs::write(&path, install::header() + &install::to_yaml(&objects)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Rewrites `dir` so that it holds exactly one YAML file per CRD the types generate.
fn gen_crds(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::remove_file(&path)?;
        }
    }
    for crd in multicluster_core::crds::all() {
        let path = dir.join(multicluster_core::crds::file_name(&crd));
        let yaml = multicluster_core::crds::to_yaml(&crd)?;
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
