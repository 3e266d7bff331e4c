//! Snapshot schedules as pure functions: when a `SnapshotSchedule` takes its next snapshot (a cron
//! expression in UTC, missed runs folded into one, no run while the previous snapshot still
//! works), what that snapshot is called, and which of its snapshots retention deletes.

use std::collections::BTreeSet;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::api::{Retention, SnapshotPhase};

/// Parses a schedule: five fields as a CronJob's (minute first), or six with seconds first, or a
/// nickname such as `@daily`. The error says what is wrong, for the schedule's status and the CLI.
pub fn parse(expression: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expression)
        .map_err(|e| {
            format!(
                "{expression:?} is not a cron expression ({e}): write five fields \
                 (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\") or six with \
                 seconds first"
            )
        })
}

fn civil(t: Timestamp) -> DateTime {
    t.to_zoned(TimeZone::UTC).datetime()
}

fn instant(t: DateTime) -> Option<Timestamp> {
    t.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The first run of `cron` strictly after `after`; `None` when there is none (an expression that
/// names a date that never comes, such as 30 February).
pub fn next_run(cron: &Cron, after: Timestamp) -> Option<Timestamp> {
    cron.find_next_occurrence(&civil(after), false)
        .ok()
        .and_then(instant)
}

/// The last run of `cron` at or before `at`.
fn latest_run(cron: &Cron, at: Timestamp) -> Option<Timestamp> {
    cron.find_previous_occurrence(&civil(at), true)
        .ok()
        .and_then(instant)
}

/// What a schedule does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Take the snapshot of the run at `run` (the latest one due: runs missed while the hub server
    /// was down are folded into it, as a CronJob does).
    Take { run: Timestamp },
    /// The run at `run` is skipped: the schedule's snapshot `running` has not finished yet (two
    /// snapshots of one namespace at once would quiesce it twice).
    Skip { run: Timestamp, running: String },
    /// Nothing is due before `next`.
    Wait { next: Timestamp },
    /// The expression names no future time.
    Never,
}

/// What schedule `cron` does at `now`, its last run (or, before the first, its creation) having
/// been at `since`, and `running` being its snapshot still at work, if any. A suspended schedule
/// is not asked: it takes nothing, and the run due when it is resumed is taken then.
pub fn decide(cron: &Cron, since: Timestamp, now: Timestamp, running: Option<&str>) -> Decision {
    let Some(next) = next_run(cron, since) else {
        return Decision::Never;
    };
    if next > now {
        return Decision::Wait { next };
    }
    let run = latest_run(cron, now).unwrap_or(next).max(next);
    match running {
        Some(running) => Decision::Skip {
            run,
            running: running.to_owned(),
        },
        None => Decision::Take { run },
    }
}

/// The name of the snapshot schedule `schedule` takes for its run at `run`:
/// `<schedule>-<YYYYMMDDHHMMSS>` (UTC). The same run always gets the same name, so a hub server
/// that takes over half-way finds the snapshot its predecessor created instead of taking another.
pub fn snapshot_name(schedule: &str, run: Timestamp) -> String {
    format!("{schedule}-{}", run.strftime("%Y%m%d%H%M%S"))
}

/// One of a schedule's snapshots, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken<'a> {
    pub name: &'a str,
    /// When it was created.
    pub time: Timestamp,
    pub phase: SnapshotPhase,
}

/// Whether a snapshot in `phase` has finished, well or not.
pub fn finished(phase: SnapshotPhase) -> bool {
    matches!(phase, SnapshotPhase::Completed | SnapshotPhase::Failed)
}

/// The snapshots `retention` deletes, oldest first. A completed snapshot stays when any rule keeps
/// it: among the `keepLast` newest; the newest of its UTC day, for the `keepDaily` latest days that
/// have one; the newest of its ISO week, for the `keepWeekly` latest weeks that have one. The
/// newest failed snapshot stays while no completed one is newer; other failed ones go. Snapshots
/// still at work always stay. A retention that keeps nothing (every count 0, which the API refuses)
/// deletes nothing.
pub fn expired<'a>(taken: &[Taken<'a>], retention: &Retention) -> Vec<&'a str> {
    if retention.keep_last == 0 && retention.keep_daily == 0 && retention.keep_weekly == 0 {
        return Vec::new();
    }
    let mut completed: Vec<&Taken<'a>> = taken
        .iter()
        .filter(|t| t.phase == SnapshotPhase::Completed)
        .collect();
    completed.sort_by(|a, b| b.time.cmp(&a.time).then(b.name.cmp(a.name)));
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    keep.extend(
        completed
            .iter()
            .take(retention.keep_last as usize)
            .map(|t| t.name),
    );
    let day = |t: &Taken| civil(t.time).date();
    keep.extend(newest_per_period(&completed, retention.keep_daily, day));
    let week = |t: &Taken| {
        let week = civil(t.time).date().iso_week_date();
        (week.year(), week.week())
    };
    keep.extend(newest_per_period(&completed, retention.keep_weekly, week));
    let newest_completed = completed.first().map(|t| t.time);
    let newest_failed = taken
        .iter()
        .filter(|t| t.phase == SnapshotPhase::Failed)
        .max_by(|a, b| a.time.cmp(&b.time).then(a.name.cmp(b.name)));
    if let Some(failed) = newest_failed
        && newest_completed.is_none_or(|c| failed.time > c)
    {
        keep.insert(failed.name);
    }
    let mut gone: Vec<&Taken<'a>> = taken
        .iter()
        .filter(|t| finished(t.phase) && !keep.contains(t.name))
        .collect();
    gone.sort_by(|a, b| a.time.cmp(&b.time).then(a.name.cmp(b.name)));
    gone.into_iter().map(|t| t.name).collect()
}

/// The newest snapshot of each of the `count` latest periods (`period` of a snapshot) that have
/// one; `newest_first` is sorted newest first.
fn newest_per_period<'a, P: Ord>(
    newest_first: &[&Taken<'a>],
    count: u32,
    period: impl Fn(&Taken) -> P,
) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
    for t in newest_first {
        if seen.len() >= count as usize {
            break;
        }
        if seen.insert(period(t)) {
            kept.push(t.name);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn five_fields_run_on_the_minute_six_on_the_second_and_nonsense_is_named() {
        let daily = parse("0 2 * * *").unwrap();
        assert_eq!(
            next_run(&daily, at("2026-12-07T01:59:59Z")),
            Some(at("2026-12-07T02:00:00Z"))
        );
        assert_eq!(
            next_run(&daily, at("2026-12-07T02:00:00Z")),
            Some(at("2026-12-08T02:00:00Z")),
            "strictly after"
        );
        let every_20s = parse("*/20 * * * * *").unwrap();
        assert_eq!(
            next_run(&every_20s, at("2026-12-07T10:00:05Z")),
            Some(at("2026-12-07T10:00:20Z"))
        );
        assert_eq!(
            next_run(&parse("@hourly").unwrap(), at("2026-12-07T10:00:05Z")),
            Some(at("2026-12-07T11:00:00Z"))
        );
        let e = parse("every day at 2").unwrap_err();
        assert!(e.contains("five fields"), "{e}");
        assert!(parse("61 * * * *").is_err());
    }

    #[test]
    fn a_due_run_is_taken_missed_runs_fold_into_the_latest_and_a_running_snapshot_skips_it() {
        let hourly = parse("0 * * * *").unwrap();
        let created = at("2026-12-07T09:30:00Z");
        assert_eq!(
            decide(&hourly, created, at("2026-12-07T09:45:00Z"), None),
            Decision::Wait {
                next: at("2026-12-07T10:00:00Z")
            }
        );
        assert_eq!(
            decide(&hourly, created, at("2026-12-07T10:00:01Z"), None),
            Decision::Take {
                run: at("2026-12-07T10:00:00Z")
            }
        );
        // Down from 10:30 to 13:10: one run, the 13:00 one.
        assert_eq!(
            decide(
                &hourly,
                at("2026-12-07T10:00:00Z"),
                at("2026-12-07T13:10:00Z"),
                None
            ),
            Decision::Take {
                run: at("2026-12-07T13:00:00Z")
            }
        );
        assert_eq!(
            decide(
                &hourly,
                at("2026-12-07T10:00:00Z"),
                at("2026-12-07T11:00:00Z"),
                Some("s-20261207100000")
            ),
            Decision::Skip {
                run: at("2026-12-07T11:00:00Z"),
                running: "s-20261207100000".to_owned()
            }
        );
        assert_eq!(
            decide(
                &parse("0 0 30 2 *").unwrap(),
                created,
                at("2026-12-07T10:00:00Z"),
                None
            ),
            Decision::Never
        );
    }

    #[test]
    fn a_run_always_gets_the_same_name() {
        assert_eq!(
            snapshot_name("nightly", at("2026-12-07T02:00:00Z")),
            "nightly-20261207020000"
        );
    }

    fn taken(specs: &[(&'static str, &str, SnapshotPhase)]) -> Vec<Taken<'static>> {
        specs
            .iter()
            .map(|(name, time, phase)| Taken {
                name,
                time: at(time),
                phase: *phase,
            })
            .collect()
    }

    const OK: SnapshotPhase = SnapshotPhase::Completed;
    const FAILED: SnapshotPhase = SnapshotPhase::Failed;

    #[test]
    fn keep_last_keeps_exactly_the_newest_completed_and_never_a_running_one() {
        let snapshots = taken(&[
            ("a", "2026-12-07T10:00:00Z", OK),
            ("b", "2026-12-07T10:01:00Z", OK),
            ("c", "2026-12-07T10:02:00Z", OK),
            ("d", "2026-12-07T10:03:00Z", OK),
            ("e", "2026-12-07T10:04:00Z", SnapshotPhase::Exporting),
        ]);
        let keep_two = Retention {
            keep_last: 2,
            ..Default::default()
        };
        assert_eq!(expired(&snapshots, &keep_two), ["a", "b"]);
        assert!(expired(&snapshots, &Retention::default()).is_empty());
    }

    #[test]
    fn daily_and_weekly_keep_the_newest_of_each_period_and_rules_add_up() {
        let snapshots = taken(&[
            // Monday 30 Nov .. Monday 7 Dec 2026; ISO week 49 starts on 30 Nov.
            ("nov29", "2026-11-29T02:00:00Z", OK),
            ("nov30-a", "2026-11-30T02:00:00Z", OK),
            ("nov30-b", "2026-11-30T14:00:00Z", OK),
            ("dec05", "2026-12-05T02:00:00Z", OK),
            ("dec06-a", "2026-12-06T02:00:00Z", OK),
            ("dec06-b", "2026-12-06T14:00:00Z", OK),
            ("dec07", "2026-12-07T02:00:00Z", OK),
        ]);
        let daily = Retention {
            keep_daily: 2,
            ..Default::default()
        };
        assert_eq!(
            expired(&snapshots, &daily),
            ["nov29", "nov30-a", "nov30-b", "dec05", "dec06-a"]
        );
        let weekly = Retention {
            keep_weekly: 3,
            ..Default::default()
        };
        // Week 50 (7 Dec): dec07; week 49 (30 Nov – 6 Dec): dec06-b; week 48: nov29.
        assert_eq!(
            expired(&snapshots, &weekly),
            ["nov30-a", "nov30-b", "dec05", "dec06-a"]
        );
        let both = Retention {
            keep_last: 3,
            keep_weekly: 3,
            ..Default::default()
        };
        assert_eq!(expired(&snapshots, &both), ["nov30-a", "nov30-b", "dec05"]);
    }

    #[test]
    fn the_newest_failure_stays_until_a_completed_snapshot_is_newer() {
        let keep_one = Retention {
            keep_last: 1,
            ..Default::default()
        };
        let snapshots = taken(&[
            ("f1", "2026-12-07T09:00:00Z", FAILED),
            ("ok", "2026-12-07T10:00:00Z", OK),
            ("f2", "2026-12-07T11:00:00Z", FAILED),
            ("f3", "2026-12-07T12:00:00Z", FAILED),
        ]);
        assert_eq!(expired(&snapshots, &keep_one), ["f1", "f2"]);
        let later = taken(&[
            ("f3", "2026-12-07T12:00:00Z", FAILED),
            ("ok2", "2026-12-07T13:00:00Z", OK),
        ]);
        assert_eq!(expired(&later, &keep_one), ["f3"]);
    }
}
