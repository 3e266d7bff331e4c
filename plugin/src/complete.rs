//! `kubectl multicluster <TAB>` through kubectl itself. kubectl (1.26 and later) runs an executable
//! `kubectl_complete-multicluster` found on `PATH` with the words typed after `multicluster` (the
//! last one the word being completed) and reads cobra's `__complete` answer: one candidate per
//! line, then `:<directive>`. The `kubectl_complete-multicluster` script shipped beside the plugin
//! runs `kubectl-multicluster __complete WORDS…`, answered here: subcommands and flags from the
//! clap definition, and the names of members, snapshots, snapshot schedules, restores, storage
//! locations and traffic policies read from the hub.

use std::time::Duration;

use clap::CommandFactory;
use kube::api::{ListParams, PartialObjectMeta};
use kube::{Api, Client};
use multicluster_core::SYSTEM_NAMESPACE;
use multicluster_core::api::{
    MemberCluster, NamespaceRestore, NamespaceSnapshot, SnapshotSchedule, StorageLocation,
    TrafficPolicy,
};

/// The hidden first argument that asks for completions (cobra's name for it).
pub const COMMAND: &str = "__complete";

/// cobra's `ShellCompDirectiveNoFileComp`: the shell offers no file names instead.
const NO_FILE_COMPLETION: &str = ":4";

/// Names on the hub that a word can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Members,
    Snapshots,
    Restores,
    Locations,
    Schedules,
    TrafficPolicies,
}

/// What the word being completed can be: fixed words (subcommands, flags) and names to read.
#[derive(Debug, Default, PartialEq)]
pub struct Completion {
    pub words: Vec<String>,
    pub names: Option<Names>,
}

/// Decides what the last of `words` (the words after `multicluster`) can be, from the command
/// definition alone.
pub fn complete(root: &clap::Command, words: &[String]) -> Completion {
    let (partial, typed) = words
        .split_last()
        .map_or(("", &[][..]), |(last, rest)| (last.as_str(), rest));
    let mut command = root;
    let mut path: Vec<&str> = Vec::new();
    let mut positionals = 0;
    let mut i = 0;
    while i < typed.len() {
        let word = typed[i].as_str();
        if word.starts_with('-') {
            if !word.contains('=') && takes_value(command, word) {
                i += 1;
            }
        } else if let Some(sub) = command.find_subcommand(word) {
            command = sub;
            path.push(sub.get_name());
            positionals = 0;
        } else {
            positionals += 1;
        }
        i += 1;
    }
    // The value of a flag.
    if let Some(flag) = typed
        .last()
        .filter(|w| w.starts_with('-') && !w.contains('='))
        && takes_value(command, flag)
    {
        let names = match flag.as_str() {
            "--cluster" | "--to-cluster" => Some(Names::Members),
            "--location" => Some(Names::Locations),
            _ => None,
        };
        return Completion {
            words: Vec::new(),
            names,
        };
    }
    if partial.starts_with('-') {
        let mut flags: Vec<String> = command
            .get_arguments()
            .chain(root.get_arguments().filter(|a| a.is_global_set()))
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        flags.sort();
        flags.dedup();
        return Completion {
            words: flags,
            names: None,
        };
    }
    let words = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_owned())
        .collect();
    let names = match (path.as_slice(), positionals) {
        (["status"] | ["unjoin"], 0) => Some(Names::Members),
        (["snapshot", "show" | "delete"] | ["restore", "create"], 0) => Some(Names::Snapshots),
        (["restore", "show" | "delete"], 0) => Some(Names::Restores),
        (["snapshot", "location", "check" | "collect"], 0) => Some(Names::Locations),
        (
            [
                "snapshot",
                "schedule",
                "show" | "suspend" | "resume" | "delete",
            ],
            0,
        ) => Some(Names::Schedules),
        (["traffic", "show" | "set" | "drain" | "undrain"], 0) => Some(Names::TrafficPolicies),
        _ => None,
    };
    Completion { words, names }
}

fn takes_value(command: &clap::Command, flag: &str) -> bool {
    let long = flag.trim_start_matches('-');
    command
        .get_arguments()
        .find(|a| {
            a.get_long() == Some(long)
                || (flag.len() == 2 && a.get_short().map(String::from).as_deref() == Some(long))
        })
        .is_some_and(|a| a.get_action().takes_values())
}

/// `kubectl-multicluster __complete WORDS…`: taken before clap parses anything, since the words
/// are a half-typed command line, not this program's arguments.
pub fn main(words: Vec<String>) -> std::process::ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        println!("{NO_FILE_COMPLETION}");
        return std::process::ExitCode::SUCCESS;
    };
    runtime.block_on(async {
        // The hub named by the words' own --kubeconfig/--context, as the command would use.
        let flag = |name: &str| {
            words.iter().enumerate().find_map(|(i, w)| {
                w.strip_prefix(&format!("{name}="))
                    .map(str::to_owned)
                    .or_else(|| (w == name).then(|| words.get(i + 1).cloned()).flatten())
            })
        };
        let kubeconfig = flag("--kubeconfig").map(std::path::PathBuf::from);
        let client = crate::hub::client(kubeconfig.as_deref(), flag("--context").as_deref())
            .await
            .ok();
        run(words, client).await;
    });
    std::process::ExitCode::SUCCESS
}

/// Answers `__complete WORDS…` on stdout. Reading names from the hub is best effort (3 s): a hub
/// that does not answer leaves just the fixed words.
pub async fn run(words: Vec<String>, client: Option<Client>) {
    let completion = complete(&crate::cli::Cli::command(), &words);
    let partial = words.last().map_or("", String::as_str);
    let mut candidates = completion.words;
    if let (Some(names), Some(client)) = (completion.names, client)
        && let Ok(Ok(found)) =
            tokio::time::timeout(Duration::from_secs(3), read_names(client, names)).await
    {
        candidates.extend(found);
    }
    for candidate in candidates.iter().filter(|c| c.starts_with(partial)) {
        println!("{candidate}");
    }
    println!("{NO_FILE_COMPLETION}");
}

async fn names_in<K>(api: Api<K>) -> Result<Vec<String>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list: Vec<PartialObjectMeta<K>> = api.list_metadata(&ListParams::default()).await?.items;
    Ok(list.into_iter().filter_map(|o| o.metadata.name).collect())
}

async fn read_names(client: Client, names: Names) -> Result<Vec<String>, kube::Error> {
    let ns = SYSTEM_NAMESPACE;
    match names {
        Names::Members => names_in(Api::<MemberCluster>::all(client)).await,
        Names::Snapshots => names_in(Api::<NamespaceSnapshot>::namespaced(client, ns)).await,
        Names::Restores => names_in(Api::<NamespaceRestore>::namespaced(client, ns)).await,
        Names::Locations => names_in(Api::<StorageLocation>::namespaced(client, ns)).await,
        Names::Schedules => names_in(Api::<SnapshotSchedule>::namespaced(client, ns)).await,
        Names::TrafficPolicies => {
            let ns = client.default_namespace().to_owned();
            names_in(Api::<TrafficPolicy>::namespaced(client, &ns)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        let mut w: Vec<String> = line.split(' ').map(str::to_owned).collect();
        if line.is_empty() {
            w = vec![String::new()];
        }
        w
    }

    #[test]
    fn subcommands_flags_and_names_are_offered_where_they_fit() {
        let root = crate::cli::Cli::command();
        let top = complete(&root, &words(""));
        assert!(
            top.words.contains(&"snapshot".to_owned()) && top.words.contains(&"restore".to_owned())
        );
        assert!(
            !top.words.iter().any(|w| w.starts_with("__")),
            "hidden commands are not offered"
        );
        assert_eq!(
            complete(&root, &words("snapshot show ")).names,
            Some(Names::Snapshots)
        );
        assert_eq!(
            complete(&root, &words("snapshot show s1 ")).names,
            None,
            "one name only"
        );
        assert_eq!(
            complete(&root, &words("restore create ")).names,
            Some(Names::Snapshots)
        );
        assert_eq!(
            complete(&root, &words("status ")).names,
            Some(Names::Members)
        );
        let value = complete(&root, &words("snapshot create shop --cluster "));
        assert_eq!(
            value,
            Completion {
                words: Vec::new(),
                names: Some(Names::Members)
            }
        );
        assert_eq!(
            complete(&root, &words("restore create s1 --to-cluster ")).names,
            Some(Names::Members)
        );
        // After a flag's value, positionals and subcommands again.
        let after = complete(&root, &words("--context hub snapshot "));
        assert!(after.words.contains(&"create".to_owned()), "{after:?}");
        let flags = complete(&root, &words("snapshot create --"));
        for flag in [
            "--cluster",
            "--location",
            "--quiesce",
            "--context",
            "--output",
        ] {
            assert!(
                flags.words.contains(&flag.to_owned()),
                "{flag} not in {:?}",
                flags.words
            );
        }
    }
}
