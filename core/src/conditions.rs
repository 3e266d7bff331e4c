//! Kubernetes conditions (`metav1.Condition`), written one way by every status the hub keeps:
//! `lastTransitionTime` is when the condition's status last changed (API conventions), so it is
//! kept from the previous condition of the same type while the status stays the same, and only a
//! change of status moves it. Reason and message may change without moving it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// `"True"` or `"False"`.
pub fn status_word(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// The condition `type_` as it reads now, given the conditions the object had before.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = status_word(status);
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time,
    }
}

/// The conditions in a status read as JSON (`status.conditions`); entries that are not conditions
/// are skipped (they are rewritten by the caller anyway).
pub fn from_json(status: &serde_json::Value) -> Vec<Condition> {
    status["conditions"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| serde_json::from_value(c.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    #[test]
    fn the_transition_time_stays_while_the_status_stays_and_moves_when_it_changes() {
        let first = condition(
            &[],
            "Ready",
            true,
            "Up",
            "all good",
            Some(1),
            at("2026-12-01T10:00:00Z"),
        );
        assert_eq!(first.last_transition_time, Time(at("2026-12-01T10:00:00Z")));
        // Same status, other reason, message and generation: the time stays.
        let later = condition(
            std::slice::from_ref(&first),
            "Ready",
            true,
            "StillUp",
            "still good",
            Some(2),
            at("2026-12-01T11:00:00Z"),
        );
        assert_eq!(later.last_transition_time, first.last_transition_time);
        assert_eq!(
            (later.reason.as_str(), later.observed_generation),
            ("StillUp", Some(2))
        );
        // Another status: the time moves.
        let down = condition(
            &[later],
            "Ready",
            false,
            "Down",
            "gone",
            Some(2),
            at("2026-12-01T12:00:00Z"),
        );
        assert_eq!(down.status, "False");
        assert_eq!(down.last_transition_time, Time(at("2026-12-01T12:00:00Z")));
    }

    #[test]
    fn a_condition_of_another_type_does_not_lend_its_time() {
        let other = condition(
            &[],
            "Synced",
            true,
            "Ok",
            "",
            None,
            at("2026-12-01T10:00:00Z"),
        );
        let ready = condition(
            &[other],
            "Ready",
            true,
            "Up",
            "",
            None,
            at("2026-12-01T11:00:00Z"),
        );
        assert_eq!(ready.last_transition_time, Time(at("2026-12-01T11:00:00Z")));
    }

    #[test]
    fn conditions_are_read_from_json_and_other_entries_skipped() {
        let status = serde_json::json!({"conditions": [
            {"type": "Synced", "status": "True", "reason": "Ok", "message": "",
             "lastTransitionTime": "2026-12-01T10:00:00Z"},
            {"type": "Broken"}
        ]});
        let read = from_json(&status);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].type_, "Synced");
        assert!(from_json(&serde_json::json!({})).is_empty());
    }
}
