//! How an error reads to a person: the error and each of its causes, once.

/// `error` and its chain of causes joined with `: `, as anyhow's `{:#}` does, except that a cause
/// whose text the message before it already ends with is not repeated: many libraries (kube's
/// kubeconfig errors among them) put their source's text into their own message *and* return it
/// as `source()`, which reads "… (os error 2): No such file or directory (os error 2)".
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !next.is_empty() && !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug)]
    struct Wrapped(&'static str, Option<Box<Wrapped>>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once_and_others_are_joined() {
        let repeated = Wrapped(
            "loading the kubeconfig",
            Some(Box::new(Wrapped(
                "failed to read '/x': No such file or directory (os error 2)",
                Some(Box::new(Wrapped(
                    "No such file or directory (os error 2)",
                    None,
                ))),
            ))),
        );
        assert_eq!(
            describe(&repeated),
            "loading the kubeconfig: failed to read '/x': No such file or directory (os error 2)"
        );
        let distinct = Wrapped(
            "connecting to member-1",
            Some(Box::new(Wrapped("connection refused", None))),
        );
        assert_eq!(
            describe(&distinct),
            "connecting to member-1: connection refused"
        );
    }
}
