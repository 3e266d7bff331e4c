//! Waiting for the playground to converge: one polling loop for every test.
//!
//! A check says whether what the test waits for holds yet: `true`/`false`, `Some(value)`/`None`,
//! or `Ok(value)`/`Err(what it saw instead)`. When the time runs out the test fails with what it
//! waited for and, for a `Result`, the last thing it saw, so a failure reads as the story's step.
//!
//! ```no_run
//! # async fn example(hub: kube::Client) {
//! use std::time::Duration;
//! use k8s_openapi::api::core::v1::ConfigMap;
//! let api: kube::Api<ConfigMap> = kube::Api::namespaced(hub, "shop");
//! let copy = multicluster_tests::eventually("the copy on member-1", Duration::from_secs(10), async || {
//!     api.get_opt("settings").await.unwrap()
//! })
//! .await;
//! # }
//! ```

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a check runs: often enough that a measured convergence time is off by at most this,
/// seldom enough not to load two cores.
const EVERY: Duration = Duration::from_millis(100);

/// What a check returns: whether the awaited state holds, and its value when it does.
pub trait Verdict {
    type Value;
    /// `Ok(value)` when the state holds, `Err(what was seen)` when it does not yet.
    fn verdict(self) -> Result<Self::Value, String>;
}

impl Verdict for bool {
    type Value = ();
    fn verdict(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("not yet".into()) }
    }
}

impl<T> Verdict for Option<T> {
    type Value = T;
    fn verdict(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".into())
    }
}

impl<T, E: Display> Verdict for Result<T, E> {
    type Value = T;
    fn verdict(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Runs `check` every 100 ms until it holds and returns its value; fails the test after `timeout`
/// with `what` and the last thing the check saw.
pub async fn eventually<V: Verdict>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> V,
) -> V::Value {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await.verdict() {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "never within {timeout:?}: {what}; last seen: {last}"
            ),
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// [`eventually`] for code that is not async (process supervision, files, the data plane).
pub fn eventually_blocking<V: Verdict>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> V,
) -> V::Value {
    let deadline = Instant::now() + timeout;
    loop {
        match check().verdict() {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "never within {timeout:?}: {what}; last seen: {last}"
            ),
        }
        std::thread::sleep(EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_holds() {
        let mut calls = 0;
        let got = eventually("third call", Duration::from_secs(5), async || {
            calls += 1;
            if calls == 3 {
                Ok(calls)
            } else {
                Err(format!("call {calls}"))
            }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "never within 300ms: the impossible; last seen: still 7")]
    async fn fails_with_what_it_waited_for_and_the_last_thing_seen() {
        eventually("the impossible", Duration::from_millis(300), async || {
            Err::<(), _>("still 7")
        })
        .await;
    }

    #[test]
    fn blocking_checks_may_be_plain_booleans_or_options() {
        let mut n = 0;
        eventually_blocking("n reaches 2", Duration::from_secs(5), || {
            n += 1;
            n >= 2
        });
        assert_eq!(
            eventually_blocking("a value", Duration::from_secs(1), || Some(5)),
            5
        );
    }
}
