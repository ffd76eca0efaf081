//! Printing results: aligned tables for people, JSON for scripts.

use std::io::Write;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Aligned columns.
    Text,
    /// One JSON document.
    Json,
}

/// Rows under a header, printed as aligned columns or as a JSON array of objects.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<serde_json::Value>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one value per column of the header).
    pub fn row(&mut self, values: Vec<serde_json::Value>) {
        debug_assert_eq!(values.len(), self.header.len());
        self.rows.push(values);
    }

    /// The rows as JSON objects keyed by the header's names.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.rows
                .iter()
                .map(|row| {
                    serde_json::Value::Object(
                        self.header
                            .iter()
                            .map(|h| h.to_lowercase().replace(' ', "_"))
                            .zip(row.iter().cloned())
                            .collect(),
                    )
                })
                .collect(),
        )
    }

    /// Prints the table in `format` to stdout.
    pub fn print(&self, format: Format) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match format {
            Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&self.to_json())?)?,
            Format::Text => write!(out, "{}", self.to_text())?,
        }
        Ok(())
    }

    /// Aligned columns, the header first.
    pub fn to_text(&self) -> String {
        let cells: Vec<Vec<String>> =
            std::iter::once(self.header.iter().map(|h| h.to_uppercase()).collect())
                .chain(self.rows.iter().map(|row| row.iter().map(text).collect()))
                .collect();
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in cells {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:width$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// A cell as text: strings without quotes, null as "-".
fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_columns_and_name_json_fields_after_the_header() {
        let mut table = Table::new(&["name", "partitions"]);
        table.row(vec![json!("orders"), json!(12)]);
        table.row(vec![json!("a"), json!(null)]);
        assert_eq!(
            table.to_text(),
            "NAME    PARTITIONS\norders  12\na       -\n"
        );
        assert_eq!(
            table.to_json(),
            json!([{"name": "orders", "partitions": 12}, {"name": "a", "partitions": null}])
        );
    }
}
