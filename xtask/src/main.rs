//! `cargo xtask <task>`: chores that keep generated files in the repository true, and the release.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use xtask::release::{
    self, REPOSITORY, VERSION, archive, checksum, image, krew,
    platform::{HUB_SERVER_BIN, PLATFORMS, PLUGIN_BIN, Platform},
};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Regenerate manifests/ from core/src/api and core/src/install.rs
    GenCrds,
    /// Regenerate webhook/src/csi/generated/ from webhook/proto/ (the CSI and kubelet plugin
    /// registration protocols)
    GenCsi,
    /// Build the release: archives per platform, SHA256SUMS, the krew manifest and the hub
    /// server's OCI image, into --out
    Release(ReleaseArgs),
}

#[derive(clap::Args, Debug)]
struct ReleaseArgs {
    /// Where the release's files go
    #[arg(long, default_value = "target/release-dist")]
    out: PathBuf,
    /// Only these platforms (os/arch, repeatable); all by default. A partial release does not
    /// rewrite krew/multicluster.yaml
    #[arg(long = "platform", value_name = "OS/ARCH")]
    platforms: Vec<String>,
    /// Package the binaries already built under target/<target>/dist instead of building them
    #[arg(long)]
    no_build: bool,
    /// Release a working tree with uncommitted changes (its commit stamp then says `-dirty`)
    #[arg(long)]
    allow_dirty: bool,
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is inside the workspace")
        .to_owned();
    match Cli::parse().task {
        Task::GenCrds => {
            gen_crds(&root.join("manifests/crds"))?;
            gen_install(&root.join("manifests"))
        }
        Task::GenCsi => xtask::protocols::generate(
            &root.join("webhook/proto"),
            &root.join("webhook/src/csi/generated"),
        ),
        Task::Release(args) => run_release(&root, args),
    }
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

fn run_release(root: &Path, args: ReleaseArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let platforms: Vec<&Platform> = if args.platforms.is_empty() {
        PLATFORMS.iter().collect()
    } else {
        args.platforms
            .iter()
            .map(|name| {
                Platform::find(name).with_context(|| {
                    let known: Vec<String> = PLATFORMS.iter().map(Platform::name).collect();
                    format!(
                        "no platform {name:?} is released; choose from {}",
                        known.join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let dirty = !git(root, &["status", "--porcelain"])?.is_empty();
    if dirty && !args.allow_dirty {
        bail!(
            "the working tree has uncommitted changes: commit them (a release is stamped with its commit) or pass --allow-dirty"
        );
    }
    let commit =
        git(root, &["rev-parse", "--short=12", "HEAD"])? + if dirty { "-dirty" } else { "" };
    // Every file in the release is dated at the commit, so that rebuilding a commit gives the
    // same archives.
    let mtime: u64 = git(root, &["log", "-1", "--format=%ct"])?
        .parse()
        .context("reading the commit time")?;
    let out = root.join(&args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    eprintln!(
        "release v{VERSION} ({commit}) for {} platform(s) into {}",
        platforms.len(),
        out.display()
    );

    if !args.no_build {
        check_build_tools(&platforms)?;
        for platform in &platforms {
            build(root, platform, &commit, started)?;
        }
    }

    let read =
        |path: PathBuf| std::fs::read(&path).with_context(|| format!("reading {}", path.display()));
    let license = read(root.join("LICENSE"))?;
    let readme = read(root.join("README.md"))?;
    let helper = read(
        root.join("plugin")
            .join(release::platform::COMPLETION_HELPER),
    )?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut downloads = Vec::new();
    // The Linux hub servers, for the image as well as the archives.
    let mut hub_servers: Vec<(&Platform, Vec<u8>)> = Vec::new();
    for platform in &platforms {
        let plugin = read(binary_path(root, platform, PLUGIN_BIN))?;
        let hub_server = match platform.os {
            "linux" => Some(read(binary_path(root, platform, HUB_SERVER_BIN))?),
            _ => None,
        };
        let contents = archive::Contents {
            plugin: &plugin,
            hub_server: hub_server.as_deref(),
            license: &license,
            readme: &readme,
            completion_helper_script: &helper,
        };
        let (name, bytes) = archive::package(platform, VERSION, &contents, mtime)?;
        downloads.push(krew::Download {
            platform,
            uri: krew::download_uri(REPOSITORY, VERSION, &name),
            sha256: checksum::sha256_hex(&bytes),
        });
        files.push((name, bytes));
        if let Some(hub_server) = hub_server {
            hub_servers.push((platform, hub_server));
        }
    }

    if !hub_servers.is_empty() {
        let ca_certificates = read(PathBuf::from(image::CA_CERTIFICATES))
            .context("the image carries this machine's CA certificates (Debian: apt-get install ca-certificates)")?;
        let reference = multicluster_core::install::default_image();
        let inputs = image::ImageInputs {
            binaries: hub_servers
                .iter()
                .map(|(p, b)| (*p, b.as_slice()))
                .collect(),
            ca_certificates: &ca_certificates,
            version: VERSION,
            commit: &commit,
            reference: &reference,
            source: REPOSITORY,
        };
        let (layout, digest) = image::oci_layout(&inputs, mtime)?;
        eprintln!(
            "image {} ({}) digest {digest}",
            reference,
            hub_servers
                .iter()
                .map(|(p, _)| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        files.push((format!("{HUB_SERVER_BIN}_{VERSION}_oci.tar"), layout));
    }

    let sums = checksum::sha256sums(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    let manifest = krew::render(VERSION, REPOSITORY, &downloads);
    // The krew index would refuse a manifest breaking its rules: refuse to write one.
    let parsed: serde_json::Value =
        serde_saphyr::from_str(&manifest).context("reading back the rendered krew manifest")?;
    let broken = krew::index_rule_violations(&format!("{}.yaml", krew::PLUGIN_NAME), &parsed);
    if !broken.is_empty() {
        bail!(
            "the rendered krew manifest breaks the index's rules: {}",
            broken.join("; ")
        );
    }
    files.push(("SHA256SUMS".to_owned(), sums.into_bytes()));
    files.push((
        format!("{}.yaml", krew::PLUGIN_NAME),
        manifest.clone().into_bytes(),
    ));
    // A release directory holds one release: what an earlier one left and this one does not
    // write (another version, a platform not built now) would sit beside it unchecksummed.
    let existing: Vec<String> = std::fs::read_dir(&out)
        .with_context(|| format!("listing {}", out.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    let written: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
    for name in release::stale_outputs(&existing, &written) {
        let path = out.join(&name);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        eprintln!("  removed {name} (from an earlier release)");
    }
    for (name, bytes) in &files {
        let path = out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("  {name} ({:.1} MB)", bytes.len() as f64 / 1e6);
    }
    if platforms.len() == PLATFORMS.len() {
        let path = root
            .join("krew")
            .join(format!("{}.yaml", krew::PLUGIN_NAME));
        std::fs::write(&path, &manifest).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("updated {} (commit it with the release)", path.display());
    } else {
        eprintln!(
            "a partial release: krew/{}.yaml left as it is",
            krew::PLUGIN_NAME
        );
    }
    eprintln!("done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Says what to install when the cross-building tools are missing, before any build starts.
fn check_build_tools(platforms: &[&Platform]) -> anyhow::Result<()> {
    let zigbuild = Command::new("cargo").args(["zigbuild", "--help"]).output();
    match zigbuild {
        Ok(out) if out.status.success() => {}
        answer => {
            let said = match answer {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                Err(e) => e.to_string(),
            };
            bail!(
                "`cargo zigbuild` did not run ({said}): install it with `pip install cargo-zigbuild ziglang` (zig cross-compiles and links every target)"
            );
        }
    }
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = platforms
        .iter()
        .map(|p| p.rust_target)
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        bail!(
            "Rust targets missing: install them with `rustup target add {}`",
            missing.join(" ")
        );
    }
    Ok(())
}

fn build(root: &Path, platform: &Platform, commit: &str, started: Instant) -> anyhow::Result<()> {
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .args([
            "zigbuild",
            "--profile",
            "dist",
            "--locked",
            "--target",
            platform.rust_target,
        ])
        .args(["-p", "kubectl-multicluster"])
        .env("MULTICLUSTER_COMMIT", commit);
    if platform.os == "linux" {
        command.args(["-p", "multicluster-webhook"]);
    }
    eprintln!(
        "[{:>4.0}s] building {} ({})",
        started.elapsed().as_secs_f64(),
        platform.name(),
        platform.rust_target
    );
    let status = command.status().context("running cargo zigbuild")?;
    if !status.success() {
        bail!(
            "building {} failed ({status}); the output above says why",
            platform.name()
        );
    }
    Ok(())
}

fn binary_path(root: &Path, platform: &Platform, name: &str) -> PathBuf {
    root.join("target")
        .join(platform.rust_target)
        .join("dist")
        .join(platform.executable(name))
}

fn git(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(root)
        .args(args)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
