//! Results go to stdout as a table (kubectl's style) or as JSON or YAML; logs go to stderr.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;

#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Something that prints as a table as well as JSON or YAML.
pub trait Tabular: Serialize {
    fn headers(&self) -> Vec<&'static str>;
    fn rows(&self) -> Vec<Vec<String>>;
}

/// Writes `value` to stdout in `format`.
pub fn print<T: Tabular>(format: OutputFormat, value: &T) -> anyhow::Result<()> {
    let text = render(format, value)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    Ok(())
}

pub fn render<T: Tabular>(format: OutputFormat, value: &T) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Table => table(&value.headers(), &value.rows()),
        OutputFormat::Json => serde_json::to_string_pretty(value)? + "\n",
        OutputFormat::Yaml => serde_saphyr::to_string(value)?,
    })
}

/// Left-aligned columns separated by three spaces, upper-case headers: what `kubectl get` prints.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                s.push_str(&cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 3;
                s.push_str(&cell);
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// `bytes` in MiB with one decimal, e.g. `12.3 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_like_kubectl() {
        let t = table(
            &["name", "ready"],
            &[
                vec!["hub".into(), "true".into()],
                vec!["member-1".into(), "false".into()],
            ],
        );
        assert_eq!(t, "NAME       READY\nhub        true\nmember-1   false\n");
    }
}
