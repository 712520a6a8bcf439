//! `--format` of `ps` and `inspect`, as podman and docker users write it: `json`, `table`, or a
//! Go template. Of Go's templates, the part people put on a command line is implemented:
//! field paths (`{{.State}}`, `{{.Limits.MemoryBytes}}`), matched without regard to case and
//! underscores so that podman's spelling finds our snake_case fields (`.ExitCode` is
//! `exit_code`, `.ID` is `id`); `{{json .Field}}` and `{{json .}}`; a leading `table`, which
//! adds a header and aligns the columns `\t` separates; and the escapes `\t` and `\n`, as
//! podman expands them. A field that does not exist is an error naming it and the fields
//! there are; anything else between `{{ }}` (conditions, pipes, other functions) is refused,
//! not ignored. A null renders as nothing, an object or array as JSON.

use std::str::FromStr;

use serde_json::Value;

/// How `ps` and `inspect` print what they show.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Columns for people (`table`, or `text` as the other commands say).
    #[default]
    Table,
    /// The daemon's JSON.
    Json,
    /// A Go template, applied to each row.
    Template(Template),
}

impl FromStr for OutputFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<OutputFormat, String> {
        match text {
            "table" | "text" => Ok(OutputFormat::Table),
            "json" => Ok(OutputFormat::Json),
            template if template.contains("{{") => template.parse().map(OutputFormat::Template),
            other => Err(format!(
                "format {other:?}: expected json, table, or a Go template such as \
                 '{{{{.State}}}}' or 'table {{{{.ID}}}}\\t{{{{.Name}}}}'"
            )),
        }
    }
}

/// A parsed Go template (see the module doc for the subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// `table ...`: a header line first, columns aligned.
    table: bool,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `{{.A.B}}` (an empty path: `{{.}}`), `{{json ...}}` when `json`.
    Field {
        path: Vec<String>,
        json: bool,
    },
}

impl FromStr for Template {
    type Err = String;

    fn from_str(text: &str) -> Result<Template, String> {
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start())
            }
            _ => (false, text),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("format {text:?}: a {{{{ without its }}}}"))?;
            parts.push(action(after[..close].trim())?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { table, parts })
    }
}

/// One `{{ ... }}`.
fn action(inside: &str) -> Result<Part, String> {
    let (json, argument) = match inside.strip_prefix("json") {
        Some(rest) if rest.starts_with(char::is_whitespace) => (true, rest.trim()),
        _ => (false, inside),
    };
    let unsupported = || {
        format!(
            "template action {{{{{inside}}}}} is not supported: expected {{{{.Field}}}}, \
             {{{{.Field.Subfield}}}}, {{{{json .Field}}}} or {{{{json .}}}}"
        )
    };
    let path = argument.strip_prefix('.').ok_or_else(unsupported)?;
    if path.is_empty() {
        return Ok(Part::Field {
            path: Vec::new(),
            json,
        });
    }
    let path: Vec<String> = path.split('.').map(str::to_string).collect();
    let valid = |name: &String| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !path.iter().all(valid) {
        return Err(unsupported());
    }
    Ok(Part::Field { path, json })
}

impl Template {
    /// The template applied to `value`.
    pub fn render(&self, value: &Value) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field { path, json } => {
                    let field = lookup(value, path)?;
                    match (field, json) {
                        (field, true) => out.push_str(&field.to_string()),
                        (Value::Null, false) => {}
                        (Value::String(text), false) => out.push_str(text),
                        (other, false) => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        Ok(out)
    }

    /// The header line of a `table` template: each field's name in capitals, words apart
    /// (`.ExitCode`: `EXIT CODE`).
    pub fn header(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.clone(),
                Part::Field { path, .. } => path.last().map_or("JSON".into(), |name| header(name)),
            })
            .collect()
    }

    /// The lines for `rows`: the header first for a `table` template, and columns separated by
    /// tabs aligned (as Go's tabwriter does for docker and podman); other lines as rendered.
    pub fn lines(&self, rows: &[Value]) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        if self.table {
            lines.push(self.header());
        }
        for row in rows {
            lines.extend(
                self.render(row)?
                    .trim_end_matches('\n')
                    .split('\n')
                    .map(String::from),
            );
        }
        if self.table || lines.iter().any(|line| line.contains('\t')) {
            return Ok(align(&lines));
        }
        Ok(lines)
    }
}

/// `lines` with their tab-separated cells padded to a common width per column.
fn align(lines: &[String]) -> Vec<String> {
    let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .filter(|row| row.len() > c + 1)
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    cells
        .iter()
        .map(|row| {
            let last = row.len() - 1;
            row.iter()
                .enumerate()
                .map(|(c, cell)| {
                    if c == last {
                        cell.to_string()
                    } else {
                        format!("{cell:<width$}   ", width = widths[c])
                    }
                })
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect()
}

/// The field at `path` in `value`; an error names the missing field and the fields there are.
fn lookup<'a>(value: &'a Value, path: &[String]) -> Result<&'a Value, String> {
    let mut current = value;
    for (depth, name) in path.iter().enumerate() {
        let so_far = format!(".{}", path[..=depth].join("."));
        let Value::Object(fields) = current else {
            return Err(format!(
                "template field {so_far}: {} is not an object with fields",
                if depth == 0 {
                    ".".to_string()
                } else {
                    format!(".{}", path[..depth].join("."))
                }
            ));
        };
        current = fields
            .iter()
            .find(|(key, _)| normalized(key) == normalized(name))
            .map(|(_, field)| field)
            .ok_or_else(|| {
                let known: Vec<String> = fields
                    .keys()
                    .map(|key| format!(".{}", camel(key)))
                    .collect();
                format!(
                    "template field {so_far} does not exist; the fields there are {}",
                    known.join(" ")
                )
            })?;
    }
    Ok(current)
}

/// A field name without case and separators: `ExitCode`, `exit_code` and `exitcode` match.
fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// `exit_code` as podman would name it: `ExitCode`.
fn camel(key: &str) -> String {
    key.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect()
}

/// `ExitCode` or `exit_code` as a column header: `EXIT CODE`.
fn header(name: &str) -> String {
    let mut words = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if c == '_' {
            words.push(' ');
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower {
            words.push(' ');
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        words.extend(c.to_uppercase());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(text: &str) -> Template {
        text.parse().unwrap()
    }

    #[test]
    fn fields_are_found_in_podmans_spelling_and_ours() {
        let value = json!({"id": "abc", "exit_code": 3, "state": "exited", "pid": null,
                           "limits": {"memory_bytes": 1024}, "args": ["a", "b"]});
        let render = |text: &str| template(text).render(&value).unwrap();
        assert_eq!(render("{{.State}}"), "exited");
        assert_eq!(render("{{.ID}} {{ .ExitCode }}"), "abc 3");
        assert_eq!(render("{{.exit_code}}"), "3");
        assert_eq!(render("{{.Limits.MemoryBytes}}"), "1024");
        assert_eq!(render("[{{.Pid}}]"), "[]", "null renders as nothing");
        assert_eq!(render("{{json .Args}}"), r#"["a","b"]"#);
        assert_eq!(render("{{.Args}}"), r#"["a","b"]"#);
        assert_eq!(render(r"{{.ID}}\t{{.State}}"), "abc\texited");
        let whole: Value = serde_json::from_str(&render("{{json .}}")).unwrap();
        assert_eq!(whole, value);
    }

    #[test]
    fn an_unknown_field_is_named_with_the_fields_there_are() {
        let value = json!({"id": "abc", "exit_code": 3, "limits": {"memory_bytes": 1}});
        let error = template("{{.Status}}").render(&value).unwrap_err();
        assert!(
            error.contains(".Status does not exist") && error.contains(".ExitCode"),
            "{error}"
        );
        let error = template("{{.Limits.Cpu}}").render(&value).unwrap_err();
        assert!(
            error.contains(".Limits.Cpu") && error.contains(".MemoryBytes"),
            "{error}"
        );
        let error = template("{{.Id.X}}").render(&value).unwrap_err();
        assert!(error.contains("not an object"), "{error}");
    }

    #[test]
    fn what_is_not_implemented_is_refused() {
        for bad in [
            "{{if .State}}x{{end}}",
            "{{.State | upper}}",
            "{{State}}",
            "{{.State",
            "{{printf \"%s\" .State}}",
        ] {
            assert!(bad.parse::<Template>().is_err(), "{bad}");
        }
        let error = "yaml".parse::<OutputFormat>().unwrap_err();
        assert!(error.contains("expected json, table"), "{error}");
        assert_eq!("text".parse::<OutputFormat>(), Ok(OutputFormat::Table));
        assert_eq!("json".parse::<OutputFormat>(), Ok(OutputFormat::Json));
    }

    #[test]
    fn a_table_template_has_a_header_and_aligned_columns() {
        let rows = [
            json!({"id": "a", "exit_code": 0, "name": "first"}),
            json!({"id": "bbbbbb", "exit_code": 143, "name": "second"}),
        ];
        let lines = template(r"table {{.ID}}\t{{.ExitCode}}\t{{.Name}}")
            .lines(&rows)
            .unwrap();
        assert_eq!(
            lines,
            [
                "ID       EXIT CODE   NAME",
                "a        0           first",
                "bbbbbb   143         second"
            ]
        );
    }
}
