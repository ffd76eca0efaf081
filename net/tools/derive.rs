//! Derives our compact schema text (net/schema/*.schema) from one of Kafka's
//! JSON message definitions. Shared by the `derive_schema` tool and the
//! spec-conformance test, so the committed schema can be checked against the
//! JSON field by field.
//!
//! Helpers: `strip_comments`, `derive_schema`, `json_file_name`.

use serde_json::Value;

/// Kafka's JSON has `//` comments; remove them (outside string literals).
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_string = false;
        let mut escaped = false;
        let bytes = line.as_bytes();
        let mut cut = line.len();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    in_string = false;
                }
            } else if c == b'"' {
                in_string = true;
            } else if c == b'/' && i + 1 < bytes.len() && bytes[i + 1] == b'/' {
                cut = i;
                break;
            }
            i += 1;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

/// The JSON file that defines `message_name` (e.g. `ProduceRequest`).
pub fn json_file_name(message_name: &str) -> String {
    format!("{message_name}.json")
}

/// Derives the schema text of one message from its JSON definition.
pub fn derive_schema(json_text: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(&strip_comments(json_text)).map_err(|e| e.to_string())?;
    let name = str_of(&v, "name")?;
    let kind = str_of(&v, "type")?;
    let key = v
        .get("apiKey")
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("{name}: no apiKey"))?;
    let valid = str_of(&v, "validVersions")?;
    let flexible = str_of(&v, "flexibleVersions")?;
    let mut out = String::new();
    out.push_str(&format!(
        "# Derived from Kafka's {name}.json by net/tools/derive_schema.rs; do not edit.\n"
    ));
    out.push_str(&format!(
        "message {name} {kind} key={key} valid={valid} flexible={flexible}\n"
    ));
    let mut structs: Vec<(String, Vec<Value>)> = Vec::new();
    let fields = v
        .get("fields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    emit_fields(&fields, &mut out, &mut structs)?;
    if let Some(common) = v.get("commonStructs").and_then(Value::as_array) {
        for s in common {
            let sname = str_of(s, "name")?;
            let sfields = s
                .get("fields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            structs.push((sname.to_string(), sfields));
        }
    }
    // Emit struct blocks in discovery order (nested structs are appended as found).
    let mut i = 0;
    while i < structs.len() {
        let (sname, sfields) = structs[i].clone();
        out.push_str(&format!("struct {sname}\n"));
        let mut nested = Vec::new();
        emit_fields(&sfields, &mut out, &mut nested)?;
        for n in nested {
            if !structs.iter().any(|(s, _)| *s == n.0) {
                structs.insert(i + 1, n);
            }
        }
        i += 1;
    }
    Ok(out)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string {key:?} in {v}"))
}

fn emit_fields(
    fields: &[Value],
    out: &mut String,
    structs: &mut Vec<(String, Vec<Value>)>,
) -> Result<(), String> {
    for f in fields {
        let name = str_of(f, "name")?;
        let ty = str_of(f, "type")?;
        let versions = str_of(f, "versions")?;
        let mut line = format!("field {name} {ty} v={versions}");
        if let Some(n) = f.get("nullableVersions").and_then(Value::as_str) {
            line.push_str(&format!(" null={n}"));
        }
        if let Some(t) = f.get("tag") {
            line.push_str(&format!(" tag={t}"));
        }
        if let Some(t) = f.get("taggedVersions").and_then(Value::as_str) {
            line.push_str(&format!(" tagged={t}"));
        }
        if let Some(d) = f.get("default") {
            let d = match d {
                Value::String(s) if s.is_empty() => "\"\"".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            line.push_str(&format!(" default={d}"));
        }
        line.push('\n');
        out.push_str(&line);
        if let Some(sub) = f.get("fields").and_then(Value::as_array) {
            let sname = ty.trim_start_matches("[]").to_string();
            structs.push((sname, sub.clone()));
        }
    }
    Ok(())
}
