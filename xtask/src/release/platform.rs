//! The platforms a release is built for, and the names of their archives.

/// A platform krew can select (`os`, `arch` as Go spells them) and the Rust target built for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    pub os: &'static str,
    pub arch: &'static str,
    pub rust_target: &'static str,
}

/// Every platform released. Linux binaries are static (musl), cross-built with `cargo zigbuild`
/// (zig as the C compiler and linker for ring's C and assembly).
///
/// Not released, and why:
/// - macOS: linking needs the macOS SDK's Security and CoreFoundation frameworks
///   (rustls-native-certs reads the keychain through them), which only Apple distributes; zig has
///   no stand-in ("unable to find system framework \"Security\"").
/// - Windows ([`WINDOWS_AMD64`]): the plugin builds for it (`cargo zigbuild --target
///   x86_64-pc-windows-gnu -p kubectl-multicluster`), but cannot be run here: Debian's wine 8.0
///   lacks `bcryptprimitives.dll`, which Rust's standard library imports on Windows ("Library
///   bcryptprimitives.dll ... not found"), and an archive nobody ran is not shipped. The
///   packaging for it (a `.zip`, a `.cmd` completion helper) is ready and tested.
pub const PLATFORMS: &[Platform] = &[
    Platform {
        os: "linux",
        arch: "amd64",
        rust_target: "x86_64-unknown-linux-musl",
    },
    Platform {
        os: "linux",
        arch: "arm64",
        rust_target: "aarch64-unknown-linux-musl",
    },
];

/// Windows, once the plugin builds there (see [`PLATFORMS`]).
pub const WINDOWS_AMD64: Platform = Platform {
    os: "windows",
    arch: "amd64",
    rust_target: "x86_64-pc-windows-gnu",
};

/// The plugin's executable (kubectl finds `kubectl-multicluster` on PATH as `kubectl multicluster`).
pub const PLUGIN_BIN: &str = "kubectl-multicluster";
/// The executable kubectl (1.26 and later) runs to complete `kubectl multicluster <TAB>`.
pub const COMPLETION_HELPER: &str = "kubectl_complete-multicluster";
/// The hub server's executable, shipped in the image (Linux only).
pub const HUB_SERVER_BIN: &str = "multicluster-webhook";

impl Platform {
    /// `os/arch`, as `--platform` takes it and as container tools print it.
    pub fn name(&self) -> String {
        format!("{}/{}", self.os, self.arch)
    }

    pub fn is_windows(&self) -> bool {
        self.os == "windows"
    }

    /// `name` as an executable file name on this platform.
    pub fn executable(&self, name: &str) -> String {
        if self.is_windows() {
            format!("{name}.exe")
        } else {
            name.to_owned()
        }
    }

    /// The completion helper's file name: a shell script, or a `.cmd` on Windows (kubectl finds it
    /// through `PATHEXT` there).
    pub fn completion_helper(&self) -> String {
        if self.is_windows() {
            format!("{COMPLETION_HELPER}.cmd")
        } else {
            COMPLETION_HELPER.to_owned()
        }
    }

    /// `kubectl-multicluster_<version>_<os>_<arch>.tar.gz`, `.zip` on Windows.
    pub fn archive_name(&self, version: &str) -> String {
        let extension = if self.is_windows() { "zip" } else { "tar.gz" };
        format!(
            "{PLUGIN_BIN}_{version}_{}_{}.{extension}",
            self.os, self.arch
        )
    }

    /// The released platform named `os/arch`.
    pub fn find(name: &str) -> Option<&'static Platform> {
        PLATFORMS.iter().find(|p| p.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_named_by_version_os_and_arch_with_zip_on_windows() {
        let linux = Platform::find("linux/arm64").unwrap();
        assert_eq!(
            linux.archive_name("0.1.0"),
            "kubectl-multicluster_0.1.0_linux_arm64.tar.gz"
        );
        let windows = WINDOWS_AMD64;
        assert_eq!(
            windows.archive_name("0.1.0"),
            "kubectl-multicluster_0.1.0_windows_amd64.zip"
        );
        assert_eq!(windows.executable(PLUGIN_BIN), "kubectl-multicluster.exe");
        assert!(Platform::find("plan9/amd64").is_none());
    }
}
