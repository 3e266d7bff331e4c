//! Durations as users write them, one grammar everywhere (the plugin's `--timeout`/`--interval`
//! flags and the snapshot hook annotations): Go's and Velero's style, `500ms`, `30s`, `1m30s`,
//! `2h`, as `kubectl --timeout` takes them.

use std::time::Duration;

/// A duration such as `500ms`, `30s`, `1m30s` or `2h`; not negative, and with its unit (a bare
/// `30` is refused rather than guessed to be seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} has no unit: write {text}s, {text}m or {text}ms"
        ));
    }
    let parsed: jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 30s or 1m30s"))?;
    Duration::try_from(parsed).map_err(|_| format!("{text:?} is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_style_parse() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            (" 10s ", Duration::from_secs(10)),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn durations_without_unit_negative_or_not_durations_are_refused_with_the_reason() {
        assert_eq!(
            parse("30"),
            Err("\"30\" has no unit: write 30s, 30m or 30ms".to_owned())
        );
        assert_eq!(parse("-5s"), Err("\"-5s\" is negative".to_owned()));
        for text in ["", "soon", "5x"] {
            let error = parse(text).unwrap_err();
            assert!(error.contains("is not a duration"), "{text}: {error}");
        }
    }
}
