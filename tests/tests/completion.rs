//! Shell completion as users load it: the scripts `kubectl multicluster completion SHELL` prints
//! are parsed by the real shells without running them (`bash -n`, `zsh -n`, `fish --no-execute`;
//! zsh and fish come from tests/install-deps.sh), and the helper kubectl runs for
//! `kubectl multicluster <TAB>` by `sh -n`. PowerShell is not installed here: its script is only
//! checked to be printed. Completion through kubectl with names from a hub is exercised end to
//! end in restore.rs.

#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use multicluster_tests::plugin_bin;

fn script(shell: &str) -> String {
    let out = Command::new(plugin_bin())
        .args(["completion", shell])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "completion {shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `shell args…` with `text` on stdin; panics with the shell's complaint when it refuses it.
fn parses(shell: &str, args: &[&str], text: &str) {
    let mut child = Command::new(shell)
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{shell}: {e} (tests/install-deps.sh installs it)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{shell} refused the script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_completion_scripts_are_accepted_by_bash_zsh_and_fish() {
    let bash = script("bash");
    assert!(bash.contains("kubectl-multicluster"), "{bash}");
    parses("bash", &["-n"], &bash);
    parses("zsh", &["-n"], &script("zsh"));
    parses("fish", &["--no-execute"], &script("fish"));
    assert!(script("powershell").contains("Register-ArgumentCompleter"));

    // The checker can fail: a broken script is refused.
    let mut command = Command::new("bash");
    command
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"if then fi (")
        .unwrap();
    assert!(!child.wait().unwrap().success());
}

#[test]
fn the_kubectl_completion_helper_is_an_executable_posix_script() {
    use std::os::unix::fs::PermissionsExt;
    let helper =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin/kubectl_complete-multicluster");
    assert!(
        std::fs::metadata(&helper).unwrap().permissions().mode() & 0o111 != 0,
        "not executable"
    );
    let text = std::fs::read_to_string(&helper).unwrap();
    assert!(text.starts_with("#!/bin/sh\n"));
    parses("sh", &["-n"], &text);
    parses("bash", &["-n"], &text);
}
