//! Intent-ID fencing as pure functions.
//!
//! A resource labelled `multicluster.dev/managed-by-intent: NAME` may be written only by a request
//! that carries the current ID of the `Intent` NAME in the annotation `multicluster.dev/intent-id`.
//!
//! An annotation sent once would stay on the stored object and be inherited by every later write
//! (a merge patch, or a read-modify-write by someone else), so "carried by this request" needs two
//! steps, one per webhook:
//! 1. [`carry_intent_id`] (mutating webhook) moves the request's `intent-id` to
//!    `written-with-intent-id`, or removes `written-with-intent-id` when the request has none. The
//!    stored object therefore never holds `intent-id`, and `written-with-intent-id` always describes
//!    the request being admitted.
//! 2. [`check_write`] (validating webhook) compares `written-with-intent-id` with the Intent.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::SYSTEM_NAMESPACE;
use crate::api::{IntentSpec, IntentStatus};
use crate::keys::{
    DELETE_APPROVED_INTENT_ID, INTENT_ID, MANAGED_BY_INTENT, WRITTEN_WITH_INTENT_ID,
};

/// What the fence needs to know of an `Intent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentView {
    pub namespace: String,
    pub name: String,
    pub intent_id: String,
    pub holder: String,
    pub epoch: u64,
}

/// The Intent fencing an object: named by its label, in the object's namespace, or in
/// `multicluster-system` for a cluster-scoped object.
pub fn fencing_intent<'a>(
    object_namespace: Option<&'a str>,
    labels: Option<&'a BTreeMap<String, String>>,
) -> Option<(&'a str, &'a str)> {
    let name = labels?.get(MANAGED_BY_INTENT)?.as_str();
    Some((object_namespace.unwrap_or(SYSTEM_NAMESPACE), name))
}

/// An object's labels and annotations, as a request carries them.
pub type Metadata<'a> = (
    Option<&'a BTreeMap<String, String>>,
    Option<&'a BTreeMap<String, String>>,
);

/// Why a write to the `status` subresource of a fenced object is refused, if it is: one that changes
/// the object's labels or annotations. Several built-in kinds store the annotations a status write
/// sends (a Deployment does), so without this anyone who may write status could, for instance, set
/// `delete-approved-intent-id` to the current ID and then delete the object. Status writes carry no
/// intent ID (the mutating step does not run on them, so one carried would be stored, and then
/// carried again by every later read-modify-write), so the only way to change the metadata of a
/// fenced object is an update of the object itself with the current ID. Controllers' status
/// writes, which leave metadata alone, pass.
pub fn status_write_refusal(
    namespace: Option<&str>,
    name: &str,
    old: Metadata<'_>,
    new: Metadata<'_>,
) -> Option<String> {
    let (intent_ns, intent) = fencing_intent(namespace, old.0)?;
    let empty = BTreeMap::new();
    let same = |a: Option<&BTreeMap<String, String>>, b: Option<&BTreeMap<String, String>>| {
        a.unwrap_or(&empty) == b.unwrap_or(&empty)
    };
    if same(old.0, new.0) && same(old.1, new.1) {
        return None;
    }
    Some(format!(
        "{name} is managed by Intent {intent_ns}/{intent}: a write to its status may not change its \
         labels or annotations. Change them with an update of {name} itself carrying the current \
         intent ID (annotation {INTENT_ID})"
    ))
}

/// The JSON Patch operations (RFC 6902) that make `written-with-intent-id` describe this request:
/// step 1 of the fence. `annotations` are those of the object in the request.
pub fn carry_intent_id(annotations: Option<&BTreeMap<String, String>>) -> Vec<serde_json::Value> {
    let escaped = crate::keys::annotation_path;
    let carried = annotations.and_then(|a| a.get(INTENT_ID));
    let stored = annotations.and_then(|a| a.get(WRITTEN_WITH_INTENT_ID));
    match (carried, stored) {
        (Some(id), _) => vec![
            serde_json::json!({"op": "remove", "path": escaped(INTENT_ID)}),
            // `add` replaces an existing member, so this works whether or not it is there.
            serde_json::json!({"op": "add", "path": escaped(WRITTEN_WITH_INTENT_ID), "value": id}),
        ],
        (None, Some(_)) => {
            vec![serde_json::json!({"op": "remove", "path": escaped(WRITTEN_WITH_INTENT_ID)})]
        }
        (None, None) => Vec::new(),
    }
}

/// The verdict on a write of a managed resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceVerdict {
    /// Not labelled: the fence does not apply.
    NotManaged,
    Allowed,
    Denied(String),
}

/// One write (CREATE or UPDATE) as the fence sees it, after step 1.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// e.g. `Distribution`
    pub kind: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    /// Labels of the object being written (for UPDATE also see `old_labels`).
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// Labels of the stored object (UPDATE): removing the label is itself a write the fence checks.
    pub old_labels: Option<&'a BTreeMap<String, String>>,
    /// `written-with-intent-id` of the object being written: what this request carried.
    pub carried_intent_id: Option<&'a str>,
}

/// Step 2 of the fence: the write is admitted only when it carries the current ID of every Intent
/// that fences the object before or after the write. `lookup(namespace, name)` finds an Intent.
pub fn check_write(
    write: &Write<'_>,
    lookup: impl Fn(&str, &str) -> Option<IntentView>,
) -> FenceVerdict {
    let mut fences = Vec::new();
    for labels in [write.labels, write.old_labels] {
        if let Some(fence) = fencing_intent(write.namespace, labels)
            && !fences.contains(&fence)
        {
            fences.push(fence);
        }
    }
    if fences.is_empty() {
        return FenceVerdict::NotManaged;
    }
    let object = match write.namespace {
        Some(ns) => format!("{} {ns}/{}", write.kind, write.name),
        None => format!("{} {}", write.kind, write.name),
    };
    for (namespace, name) in fences {
        let Some(intent) = lookup(namespace, name) else {
            return FenceVerdict::Denied(format!(
                "{object} is labelled {MANAGED_BY_INTENT}={name}, but there is no Intent {namespace}/{name}: \
                 register the intent first (an Intent named {name} in namespace {namespace}), or remove the label"
            ));
        };
        match write.carried_intent_id {
            None => {
                return FenceVerdict::Denied(format!(
                    "{object} is managed by Intent {namespace}/{name} (held by {:?}, epoch {}), and this request \
                     carries no intent ID: set the annotation {INTENT_ID} to the Intent's current ID on every write",
                    intent.holder, intent.epoch
                ));
            }
            Some(carried) if carried != intent.intent_id => {
                return FenceVerdict::Denied(format!(
                    "{object} is managed by Intent {namespace}/{name}, now held by {:?} (epoch {}); this request \
                     carries intent ID {carried:?}, which is not the Intent's current ID: a manager that held it \
                     before has been replaced and must stop",
                    intent.holder, intent.epoch
                ));
            }
            Some(_) => {}
        }
    }
    FenceVerdict::Allowed
}

/// A DELETE of a managed object: admitted only when the stored object carries a deletion approval
/// (`delete-approved-intent-id`) equal to the Intent's current ID, written by an admitted (so
/// fenced) update. A manager that lost its intent can therefore neither approve nor delete.
pub fn check_delete(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    old_labels: Option<&BTreeMap<String, String>>,
    old_annotations: Option<&BTreeMap<String, String>>,
    lookup: impl Fn(&str, &str) -> Option<IntentView>,
) -> FenceVerdict {
    let Some((intent_ns, intent_name)) = fencing_intent(namespace, old_labels) else {
        return FenceVerdict::NotManaged;
    };
    let object = match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let Some(intent) = lookup(intent_ns, intent_name) else {
        // The Intent is gone: nothing fences the object any more.
        return FenceVerdict::Allowed;
    };
    let approved = old_annotations.and_then(|a| a.get(DELETE_APPROVED_INTENT_ID));
    if approved == Some(&intent.intent_id) {
        return FenceVerdict::Allowed;
    }
    FenceVerdict::Denied(format!(
        "{object} is managed by Intent {intent_ns}/{intent_name} (held by {:?}, epoch {}): a delete carries no \
         intent ID, so the holder first approves it with an update that carries the current ID in {INTENT_ID} and \
         sets {DELETE_APPROVED_INTENT_ID} to that ID, then deletes",
        intent.holder, intent.epoch
    ))
}

/// The status an Intent should have: a new epoch when its ID differs from the one the status last
/// recorded, `None` when the status is current. `now` is when the change is recorded.
pub fn next_status(
    spec: &IntentSpec,
    status: Option<&IntentStatus>,
    now: Time,
) -> Option<IntentStatus> {
    let current = status.cloned().unwrap_or_default();
    if current.observed_intent_id.as_deref() == Some(spec.intent_id.as_str()) {
        if current.observed_holder.as_deref() == Some(spec.holder.as_str()) {
            return None;
        }
        // Same ID, new holder name: a correction, not a rotation.
        return Some(IntentStatus {
            observed_holder: Some(spec.holder.clone()),
            ..current
        });
    }
    Some(IntentStatus {
        epoch: current.epoch + 1,
        previous_intent_id: current
            .observed_intent_id
            .clone()
            .or(current.previous_intent_id.clone()),
        previous_holder: current
            .observed_holder
            .clone()
            .or(current.previous_holder.clone()),
        observed_intent_id: Some(spec.intent_id.clone()),
        observed_holder: Some(spec.holder.clone()),
        last_rotation_time: Some(now),
    })
}

#[cfg(test)]
mod status_tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_status_write_may_not_change_the_metadata_of_a_fenced_object() {
        let labels = map(&[(MANAGED_BY_INTENT, "orders")]);
        let annotations = map(&[("note", "a")]);
        let approved = map(&[
            ("note", "a"),
            (crate::keys::DELETE_APPROVED_INTENT_ID, "id-2"),
        ]);
        let old = (Some(&labels), Some(&annotations));
        // A controller's status write leaves metadata alone.
        assert_eq!(status_write_refusal(Some("shop"), "api", old, old), None);
        let why = status_write_refusal(Some("shop"), "api", old, (Some(&labels), Some(&approved)))
            .unwrap();
        assert!(
            why.contains("Intent shop/orders") && why.contains(INTENT_ID),
            "{why}"
        );
        let unlabelled = map(&[]);
        assert!(
            status_write_refusal(
                Some("shop"),
                "api",
                old,
                (Some(&unlabelled), Some(&annotations))
            )
            .is_some()
        );
        // No annotations and an empty map are the same metadata.
        assert_eq!(
            status_write_refusal(
                Some("shop"),
                "api",
                (Some(&labels), None),
                (Some(&labels), Some(&unlabelled))
            ),
            None
        );
        // Not fenced: not ours to refuse.
        assert_eq!(
            status_write_refusal(
                Some("shop"),
                "api",
                (None, None),
                (Some(&labels), Some(&approved))
            ),
            None
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn intent(id: &str) -> IntentView {
        IntentView {
            namespace: "shop".into(),
            name: "orders".into(),
            intent_id: id.into(),
            holder: "pipeline-7".into(),
            epoch: 3,
        }
    }

    fn write<'a>(
        labels: Option<&'a BTreeMap<String, String>>,
        carried: Option<&'a str>,
    ) -> Write<'a> {
        Write {
            kind: "Distribution",
            namespace: Some("shop"),
            name: "web",
            labels,
            old_labels: None,
            carried_intent_id: carried,
        }
    }

    fn lookup_current(ns: &str, name: &str) -> Option<IntentView> {
        (ns == "shop" && name == "orders").then(|| intent("current"))
    }

    #[test]
    fn unlabelled_objects_are_not_fenced() {
        let l = labels(&[("app", "web")]);
        assert_eq!(
            check_write(&write(Some(&l), None), lookup_current),
            FenceVerdict::NotManaged
        );
        assert_eq!(
            check_write(&write(None, None), lookup_current),
            FenceVerdict::NotManaged
        );
    }

    #[test]
    fn the_current_id_is_admitted() {
        let l = labels(&[(MANAGED_BY_INTENT, "orders")]);
        assert_eq!(
            check_write(&write(Some(&l), Some("current")), lookup_current),
            FenceVerdict::Allowed
        );
    }

    #[test]
    fn a_missing_id_is_denied_naming_the_intent_and_what_to_do() {
        let l = labels(&[(MANAGED_BY_INTENT, "orders")]);
        let FenceVerdict::Denied(msg) = check_write(&write(Some(&l), None), lookup_current) else {
            panic!("expected a denial");
        };
        assert!(msg.contains("Intent shop/orders"), "{msg}");
        assert!(msg.contains("carries no intent ID"), "{msg}");
        assert!(msg.contains(INTENT_ID), "{msg}");
    }

    #[test]
    fn a_stale_id_is_denied_naming_the_current_holder_without_revealing_the_id() {
        let l = labels(&[(MANAGED_BY_INTENT, "orders")]);
        let FenceVerdict::Denied(msg) = check_write(&write(Some(&l), Some("old")), lookup_current)
        else {
            panic!("expected a denial");
        };
        assert!(
            msg.contains("pipeline-7") && msg.contains("epoch 3") && msg.contains("\"old\""),
            "{msg}"
        );
        assert!(
            !msg.contains("current\""),
            "the current ID is not echoed: {msg}"
        );
    }

    #[test]
    fn removing_the_label_is_a_write_the_old_intent_fences() {
        let old = labels(&[(MANAGED_BY_INTENT, "orders")]);
        let w = Write {
            old_labels: Some(&old),
            ..write(None, None)
        };
        assert!(matches!(
            check_write(&w, lookup_current),
            FenceVerdict::Denied(_)
        ));
        let w = Write {
            old_labels: Some(&old),
            ..write(None, Some("current"))
        };
        assert_eq!(check_write(&w, lookup_current), FenceVerdict::Allowed);
    }

    #[test]
    fn a_missing_intent_is_denied_with_what_to_do() {
        let l = labels(&[(MANAGED_BY_INTENT, "nope")]);
        let FenceVerdict::Denied(msg) = check_write(&write(Some(&l), Some("x")), lookup_current)
        else {
            panic!("expected a denial");
        };
        assert!(msg.contains("no Intent shop/nope"), "{msg}");
    }

    #[test]
    fn cluster_scoped_objects_are_fenced_by_intents_in_the_system_namespace() {
        let l = labels(&[(MANAGED_BY_INTENT, "pools")]);
        assert_eq!(
            fencing_intent(None, Some(&l)),
            Some((SYSTEM_NAMESPACE, "pools"))
        );
    }

    #[test]
    fn carrying_moves_the_request_id_and_clears_an_inherited_one() {
        let sent = labels(&[(INTENT_ID, "abc"), (WRITTEN_WITH_INTENT_ID, "old")]);
        let patch = carry_intent_id(Some(&sent));
        assert_eq!(patch[0]["op"], "remove");
        assert_eq!(
            patch[0]["path"],
            "/metadata/annotations/multicluster.dev~1intent-id"
        );
        assert_eq!(
            patch[1]["path"],
            "/metadata/annotations/multicluster.dev~1written-with-intent-id"
        );
        assert_eq!(patch[1]["value"], "abc");

        let inherited = labels(&[(WRITTEN_WITH_INTENT_ID, "abc")]);
        let patch = carry_intent_id(Some(&inherited));
        assert_eq!(patch.len(), 1);
        assert_eq!(patch[0]["op"], "remove");

        assert!(carry_intent_id(None).is_empty());
    }

    fn now() -> Time {
        Time("2026-11-22T12:00:00Z".parse().unwrap())
    }

    #[test]
    fn registration_starts_at_epoch_one_and_each_rotation_bumps_it() {
        let spec = IntentSpec {
            intent_id: "v1".into(),
            holder: "alice".into(),
        };
        let first = next_status(&spec, None, now()).unwrap();
        assert_eq!(first.epoch, 1);
        assert_eq!(first.previous_intent_id, None);
        assert_eq!(
            next_status(&spec, Some(&first), now()),
            None,
            "nothing to record twice"
        );

        let rotated = IntentSpec {
            intent_id: "v2".into(),
            holder: "bob".into(),
        };
        let second = next_status(&rotated, Some(&first), now()).unwrap();
        assert_eq!(second.epoch, 2);
        assert_eq!(second.previous_intent_id.as_deref(), Some("v1"));
        assert_eq!(second.previous_holder.as_deref(), Some("alice"));
        assert_eq!(second.observed_intent_id.as_deref(), Some("v2"));
    }

    #[test]
    fn a_new_holder_name_alone_is_not_a_rotation() {
        let spec = IntentSpec {
            intent_id: "v1".into(),
            holder: "alice".into(),
        };
        let first = next_status(&spec, None, now()).unwrap();
        let renamed = IntentSpec {
            intent_id: "v1".into(),
            holder: "alice@team".into(),
        };
        let status = next_status(&renamed, Some(&first), now()).unwrap();
        assert_eq!(status.epoch, 1);
        assert_eq!(status.observed_holder.as_deref(), Some("alice@team"));
    }

    #[test]
    fn a_delete_needs_an_approval_with_the_current_id() {
        let l = labels(&[(MANAGED_BY_INTENT, "orders")]);
        let approved = labels(&[(DELETE_APPROVED_INTENT_ID, "current")]);
        let stale = labels(&[(DELETE_APPROVED_INTENT_ID, "old")]);
        let del = |a: Option<&BTreeMap<String, String>>| {
            check_delete("ConfigMap", Some("shop"), "c", Some(&l), a, lookup_current)
        };
        assert_eq!(del(Some(&approved)), FenceVerdict::Allowed);
        let FenceVerdict::Denied(msg) = del(Some(&stale)) else {
            panic!("stale approval")
        };
        assert!(msg.contains(DELETE_APPROVED_INTENT_ID), "{msg}");
        assert!(matches!(del(None), FenceVerdict::Denied(_)));
        assert_eq!(
            check_delete("ConfigMap", Some("shop"), "c", None, None, lookup_current),
            FenceVerdict::NotManaged
        );
    }
}
