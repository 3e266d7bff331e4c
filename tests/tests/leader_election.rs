//! Two hub server processes and one Lease, on the real hub API server: the playground's hub server
//! (A) and a second one (B) whose every connection to the hub goes through a TCP relay this test
//! can pause, playing a network that stops carrying B's traffic without closing it. B is made
//! the leader (A is stopped with SIGSTOP until B takes the Lease), then B's relay is paused: B
//! must stop leading (its renewals get no answer) before A takes the Lease over, so that at no
//! moment both run the background loops (both would write every MemberCluster's status). Who leads
//! is read from each process's `multicluster_webhook_leading` gauge. Its own test binary: it stops
//! the playground's hub server for a while.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use multicluster_tests::{eventually, playground, run_ok};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay to `upstream` that stops carrying bytes (both ways, on every connection, new ones
/// included) while `paused` is set. Returns its address.
async fn relay(upstream: String, paused: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, paused.clone()));
            tokio::spawn(pump(sr, cw, paused.clone()));
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    paused: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while paused.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just before the pause are held too.
        while paused.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `multicluster_webhook_leading` of the hub server whose health port is `health`, or `None` when
/// it does not answer (stopped).
fn leading(health: &str) -> Option<bool> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "1",
            &format!("http://{health}/metrics"),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("multicluster_webhook_leading "))
        .map(|l| l.ends_with(" 1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_api_a_paused_relay_stalls_stops_leading_before_the_other_replica_takes_over()
 {
    let pg = playground();
    let a = pg.state.hub_server.as_ref().unwrap();
    let a_health = a.health.clone();
    let a_pid = Pid::from_raw(i32::try_from(a.process.pid).unwrap());
    let hub_server = pg.state.clusters[0].server.clone();
    let upstream = hub_server.trim_start_matches("https://").to_owned();

    // B: the hub server's own identity and certificate, its hub connections through the relay.
    let paused = Arc::new(AtomicBool::new(false));
    let relayed = relay(upstream, paused.clone()).await;
    let kubeconfig = std::fs::read_to_string(pg.dir().join("hub-server/kubeconfig"))
        .unwrap()
        .replace(&hub_server, &format!("https://{relayed}"));
    let scratch = tempfile::tempdir().unwrap();
    let b_kubeconfig = scratch.path().join("kubeconfig");
    std::fs::write(&b_kubeconfig, kubeconfig).unwrap();
    let b = pg.second_hub_server(&b_kubeconfig, &[], &[("POD_NAME", "replica-b")]);
    let b_health = b.health.clone();
    eventually("B is ready", Duration::from_secs(30), async || {
        leading(&b_health).is_some()
    })
    .await;
    assert_eq!(leading(&a_health), Some(true), "A leads at first");
    assert_eq!(leading(&b_health), Some(false));

    // B takes the Lease while A is stopped; A, back, follows.
    kill(a_pid, Signal::SIGSTOP).unwrap();
    let took = async {
        eventually("B takes the Lease", Duration::from_secs(40), async || {
            leading(&b_health) == Some(true)
        })
        .await;
    };
    tokio::time::timeout(Duration::from_secs(45), took)
        .await
        .ok();
    kill(a_pid, Signal::SIGCONT).unwrap();
    assert_eq!(leading(&b_health), Some(true), "B never took the Lease");
    eventually("A follows", Duration::from_secs(15), async || {
        leading(&a_health) == Some(false)
    })
    .await;
    let holder = run_ok(pg.kubectl().args([
        "--context",
        "hub",
        "-n",
        "multicluster-system",
        "get",
        "lease",
        "multicluster-hub",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]));
    assert_eq!(holder, "replica-b");

    // B's API stalls: B must let go before A takes over. Sampled every 100 ms.
    paused.store(true, Ordering::Release);
    let started = Instant::now();
    let mut b_stopped: Option<Duration> = None;
    let mut a_started: Option<Duration> = None;
    while started.elapsed() < Duration::from_secs(60) && a_started.is_none() {
        let (a_now, b_now) = (leading(&a_health), leading(&b_health));
        assert!(
            !(a_now == Some(true) && b_now == Some(true)),
            "both replicas led at {:?} after B's API stalled",
            started.elapsed()
        );
        if b_now == Some(false) && b_stopped.is_none() {
            b_stopped = Some(started.elapsed());
        }
        if a_now == Some(true) {
            a_started = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    paused.store(false, Ordering::Release);
    let (b_stopped, a_started) = (b_stopped.unwrap(), a_started.unwrap());
    eprintln!(
        "after B's API stalled: B stopped leading at {b_stopped:?}, A led from {a_started:?}"
    );
    assert!(b_stopped < a_started);
}
