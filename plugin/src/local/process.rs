//! Starting the playground's processes detached from the terminal, and stopping exactly those.
//!
//! A pid alone is not proof: after a reboot or a long time the number may belong to someone else.
//! Every process the playground starts has the playground directory in its command line, so a pid
//! counts as ours only while `/proc/<pid>/cmdline` still mentions that directory.
//!
//! The playground runs on Linux only (its kube-apiserver and etcd are Linux binaries, and `up`
//! says so elsewhere); the Unix parts are gated so that the plugin still builds for Windows.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `program` in its own process group (so Ctrl-C in the terminal that ran `local up` does not
/// reach it) with stdout and stderr appended to `log`.
pub fn spawn(program: &Path, args: &[String], log: &Path) -> std::io::Result<Child> {
    spawn_with_env(program, args, &[], log)
}

/// [`spawn`], with these environment variables added.
pub fn spawn_with_env(
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
) -> std::io::Result<Child> {
    let out = File::options().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command.spawn()
}

/// Asks `pid` to stop (SIGTERM), or kills it (SIGKILL). The process may exit between the caller's
/// check and the signal: nothing to do then.
#[cfg(unix)]
fn signal(pid: u32, kill: bool) {
    use nix::sys::signal::Signal;
    let signal = if kill {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// No playground runs here (see the module's comment), so no process is ever ours to stop.
#[cfg(not(unix))]
fn signal(_pid: u32, _kill: bool) {}

/// The pids of every process, as `/proc` lists them.
pub fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// A process's state letter and parent pid, from `/proc/PID/stat` (`pid (comm) state ppid …`:
/// the command may hold spaces and parentheses, so the fields are read after the last `)`).
pub fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Whether `pid` runs: listed, and not a zombie waiting for its parent.
pub fn is_alive(pid: u32) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Whether `pid` is alive, not a zombie, and started with `marker` (the playground directory) in
/// its command line.
pub fn is_ours(pid: u32, marker: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // A zombie (exited, not yet reaped by its parent) has an empty command line; its state is
    // read to be sure.
    is_alive(pid) && String::from_utf8_lossy(&cmdline).contains(marker)
}

/// Sends SIGTERM to every pid that is still ours, waits up to `grace` for all of them to exit,
/// then SIGKILLs what is left. Returns the pids that had to be killed.
pub fn terminate_all(pids: &[u32], marker: &str, grace: Duration) -> Vec<u32> {
    let signal_all = |kill| {
        for &pid in pids {
            if is_ours(pid, marker) {
                signal(pid, kill);
            }
        }
    };
    signal_all(false);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if pids.iter().all(|&pid| !is_ours(pid, marker)) {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stubborn: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| is_ours(p, marker))
        .collect();
    signal_all(true);
    stubborn
}

/// SIGKILLs `pids` at once, without looking for a marker: for processes found by their parent
/// (the containers of the playground's shims), which carry none.
pub fn kill(pids: &[u32]) {
    for &pid in pids {
        signal(pid, true);
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_ours_only_while_it_runs_with_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().to_str().unwrap().to_owned();
        let log = dir.path().join("sleep.log");
        let mut child = spawn(
            Path::new("/bin/sh"),
            // `; true` keeps sh from exec-ing sleep, so the marker ($0) stays in the command line.
            &["-c".into(), "sleep 30; true".into(), marker.clone()],
            &log,
        )
        .unwrap();
        let pid = child.id();
        // Right after spawn the kernel may not show the new command line yet (the parent of a
        // vfork-style spawn resumes during exec): wait for it, as `down` never runs that early.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !is_ours(pid, &marker) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(is_ours(pid, &marker));
        assert!(!is_ours(pid, "/some/other/playground"));
        assert!(terminate_all(&[pid], &marker, Duration::from_secs(5)).is_empty());
        child.wait().unwrap();
        assert!(!is_ours(pid, &marker));
    }
}
