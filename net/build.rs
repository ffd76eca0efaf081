//! Generates the Kafka message types and their codecs from net/schema/*.schema.
//!
//! The schema format is described in net/README.md. Output: `$OUT_DIR/messages.rs`
//! (one module per message), `$OUT_DIR/apis.rs` (`ApiKey`, `Request`, `Response`,
//! `supported_apis`) and `$OUT_DIR/random.rs` (random value generators used only by
//! the tests).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let schema_dir = Path::new("schema");
    println!("cargo:rerun-if-changed=schema");
    println!("cargo:rerun-if-changed=build.rs");
    let mut names: Vec<_> = std::fs::read_dir(schema_dir)
        .expect("net/schema")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "schema"))
        .collect();
    names.sort();
    let mut msgs = Vec::new();
    for path in &names {
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(path).expect("read schema");
        msgs.push(parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    }
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    let mut messages = String::new();
    let mut random = String::new();
    for m in &msgs {
        gen_message(m, &mut messages);
        gen_random(m, &mut random);
    }
    std::fs::write(Path::new(&out_dir).join("messages.rs"), messages).expect("write");
    std::fs::write(Path::new(&out_dir).join("random.rs"), random).expect("write");
    std::fs::write(Path::new(&out_dir).join("apis.rs"), gen_apis(&msgs)).expect("write");
}

// ---------------------------------------------------------------- schema model

#[derive(Clone, Copy, Debug)]
struct Range {
    lo: i16,
    hi: i16,
}

impl Range {
    const NONE: Range = Range { lo: 1, hi: 0 };
    fn parse(s: &str) -> Result<Range, String> {
        if s == "none" {
            return Ok(Range::NONE);
        }
        if let Some(lo) = s.strip_suffix('+') {
            return Ok(Range {
                lo: lo.parse().map_err(|_| s.to_string())?,
                hi: i16::MAX,
            });
        }
        if let Some((lo, hi)) = s.split_once('-') {
            return Ok(Range {
                lo: lo.parse().map_err(|_| s.to_string())?,
                hi: hi.parse().map_err(|_| s.to_string())?,
            });
        }
        let v: i16 = s.parse().map_err(|_| s.to_string())?;
        Ok(Range { lo: v, hi: v })
    }
    fn is_empty(self) -> bool {
        self.lo > self.hi
    }
    fn intersect(self, o: Range) -> Range {
        Range {
            lo: self.lo.max(o.lo),
            hi: self.hi.min(o.hi),
        }
    }
    /// A Rust boolean expression: is `version` inside this range?
    fn test(self, var: &str) -> String {
        if self.is_empty() {
            "false".to_string()
        } else if self.hi == i16::MAX {
            format!("{var} >= {}", self.lo)
        } else if self.lo == self.hi {
            format!("{var} == {}", self.lo)
        } else {
            format!("({var} >= {} && {var} <= {})", self.lo, self.hi)
        }
    }
}

#[derive(Clone, Debug)]
struct Field {
    name: String,
    ty: String,
    versions: Range,
    nullable: Range,
    tag: Option<u32>,
    tagged: Range,
    default: Option<String>,
}

#[derive(Clone, Debug)]
struct Msg {
    name: String,
    kind: String,
    key: i16,
    valid: Range,
    flexible: Range,
    fields: Vec<Field>,
    structs: Vec<(String, Vec<Field>)>,
}

fn parse(text: &str) -> Result<Msg, String> {
    let mut msg: Option<Msg> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let toks: Vec<&str> = line.split_whitespace().collect();
        match toks[0] {
            "message" => {
                let kv = attrs(&toks[3..]);
                msg = Some(Msg {
                    name: toks[1].to_string(),
                    kind: toks[2].to_string(),
                    key: kv.get("key").ok_or("key")?.parse().map_err(|_| "key")?,
                    valid: Range::parse(kv.get("valid").ok_or("valid")?)?,
                    flexible: Range::parse(kv.get("flexible").ok_or("flexible")?)?,
                    fields: Vec::new(),
                    structs: Vec::new(),
                });
            }
            "struct" => {
                let m = msg.as_mut().ok_or("struct before message")?;
                m.structs.push((toks[1].to_string(), Vec::new()));
            }
            "field" => {
                let m = msg.as_mut().ok_or("field before message")?;
                let kv = attrs(&toks[3..]);
                let f = Field {
                    name: toks[1].to_string(),
                    ty: toks[2].to_string(),
                    versions: Range::parse(kv.get("v").ok_or("v")?)?,
                    nullable: kv
                        .get("null")
                        .map_or(Ok(Range::NONE), |s| Range::parse(s))?,
                    tag: kv.get("tag").map(|t| t.parse().expect("tag")),
                    tagged: kv
                        .get("tagged")
                        .map_or(Ok(Range::NONE), |s| Range::parse(s))?,
                    default: kv.get("default").map(|d| {
                        if *d == "\"\"" {
                            String::new()
                        } else {
                            d.to_string()
                        }
                    }),
                };
                match m.structs.last_mut() {
                    Some((_, fields)) => fields.push(f),
                    None => m.fields.push(f),
                }
            }
            other => return Err(format!("unknown line kind {other}")),
        }
    }
    msg.ok_or_else(|| "no message line".to_string())
}

fn attrs<'a>(toks: &[&'a str]) -> BTreeMap<&'a str, &'a str> {
    toks.iter().filter_map(|t| t.split_once('=')).collect()
}

// ---------------------------------------------------------------- naming

fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = i + 1 < chars.len() && chars[i + 1].is_ascii_lowercase();
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn field_ident(name: &str) -> String {
    let s = snake(name);
    match s.as_str() {
        "type" | "match" | "ref" | "mod" | "fn" | "struct" | "enum" | "use" | "self" | "crate"
        | "where" | "loop" | "move" | "impl" | "trait" | "in" | "for" | "if" | "else" | "let"
        | "return" | "static" | "const" | "pub" | "async" | "await" | "dyn" | "box" | "yield" => {
            format!("{s}_")
        }
        _ => s,
    }
}

// ---------------------------------------------------------------- types

#[derive(Clone, Debug)]
enum Ty {
    Prim(&'static str),
    Str,
    Bytes,
    Records,
    Uuid,
    Struct(String),
    Array(Box<Ty>),
}

fn ty_of(s: &str) -> Ty {
    if let Some(inner) = s.strip_prefix("[]") {
        return Ty::Array(Box::new(ty_of(inner)));
    }
    match s {
        "bool" => Ty::Prim("bool"),
        "int8" => Ty::Prim("i8"),
        "int16" => Ty::Prim("i16"),
        "uint16" => Ty::Prim("u16"),
        "int32" => Ty::Prim("i32"),
        "uint32" => Ty::Prim("u32"),
        "int64" => Ty::Prim("i64"),
        "float64" => Ty::Prim("f64"),
        "string" => Ty::Str,
        "bytes" => Ty::Bytes,
        "records" => Ty::Records,
        "uuid" => Ty::Uuid,
        other => Ty::Struct(other.to_string()),
    }
}

fn prim_size(p: &str) -> usize {
    match p {
        "bool" | "i8" => 1,
        "i16" | "u16" => 2,
        "i32" | "u32" => 4,
        _ => 8,
    }
}

/// Rust type of a value of `ty` (array elements are never nullable).
fn rust_ty(ty: &Ty, nullable: bool) -> String {
    let base = match ty {
        Ty::Prim(p) => return p.to_string(),
        Ty::Str => "::std::string::String".to_string(),
        Ty::Bytes => "::bytes::Bytes".to_string(),
        Ty::Records => return "::std::option::Option<::bytes::Bytes>".to_string(),
        Ty::Uuid => return "crate::Uuid".to_string(),
        Ty::Struct(s) => s.clone(),
        Ty::Array(e) => format!("::std::vec::Vec<{}>", rust_ty(e, false)),
    };
    if nullable {
        format!("::std::option::Option<{base}>")
    } else {
        base
    }
}

fn is_nullable(f: &Field) -> bool {
    !f.nullable.is_empty()
}

fn default_expr(f: &Field) -> String {
    let ty = ty_of(&f.ty);
    let nullable = is_nullable(f);
    let d = f.default.as_deref();
    match &ty {
        Ty::Prim(p) => match (*p, d) {
            ("bool", Some("true")) => "true".into(),
            ("bool", _) => "false".into(),
            ("f64", Some(v)) => format!("{v}_f64"),
            ("f64", None) => "0.0".into(),
            (p, Some(v)) if v.starts_with("0x") => {
                let n = i64::from_str_radix(&v[2..], 16).expect("hex default");
                format!("{n}_{p}")
            }
            (p, Some(v)) => format!("{v}_{p}"),
            (p, None) => format!("0_{p}"),
        },
        Ty::Records => "::std::option::Option::None".into(),
        Ty::Uuid => "crate::Uuid::ZERO".into(),
        _ if nullable && d == Some("null") => "::std::option::Option::None".into(),
        _ => {
            let inner = match (&ty, d) {
                (Ty::Str, Some(v)) if !v.is_empty() => {
                    format!("::std::string::String::from({v:?})")
                }
                (Ty::Str, _) => "::std::string::String::new()".into(),
                (Ty::Bytes, _) => "::bytes::Bytes::new()".into(),
                (Ty::Struct(s), _) => format!("{s}::default()"),
                (Ty::Array(_), _) => "::std::vec::Vec::new()".into(),
                _ => unreachable!(),
            };
            if nullable {
                format!("::std::option::Option::Some({inner})")
            } else {
                inner
            }
        }
    }
}

// ---------------------------------------------------------------- encode

/// Statements that encode `expr` (a reference or Copy value) of type `ty`.
fn enc(ty: &Ty, expr: &str, nullable_ty: bool, nullable_v: &str, name: &str, out: &mut String) {
    match ty {
        Ty::Prim("bool") => writeln!(out, "buf.put_u8(u8::from({expr}));").unwrap(),
        Ty::Prim("i8") => writeln!(out, "buf.put_i8({expr});").unwrap(),
        Ty::Prim("i16") => writeln!(out, "buf.put_i16({expr});").unwrap(),
        Ty::Prim("u16") => writeln!(out, "buf.put_u16({expr});").unwrap(),
        Ty::Prim("i32") => writeln!(out, "buf.put_i32({expr});").unwrap(),
        Ty::Prim("u32") => writeln!(out, "buf.put_u32({expr});").unwrap(),
        Ty::Prim("i64") => writeln!(out, "buf.put_i64({expr});").unwrap(),
        Ty::Prim("f64") => writeln!(out, "buf.put_f64({expr});").unwrap(),
        Ty::Prim(p) => panic!("prim {p}"),
        Ty::Uuid => writeln!(out, "buf.put_slice(&{expr}.0);").unwrap(),
        Ty::Str if nullable_ty => writeln!(
            out,
            "wire::put_nullable_string(buf, {expr}.as_deref(), flexible, {nullable_v}, {name:?})?;"
        )
        .unwrap(),
        Ty::Str => writeln!(out, "wire::put_string(buf, &{expr}, flexible)?;").unwrap(),
        Ty::Records => writeln!(
            out,
            "wire::put_records(buf, {expr}.as_ref(), flexible, {nullable_v}, {name:?})?;"
        )
        .unwrap(),
        Ty::Bytes if nullable_ty => writeln!(
            out,
            "wire::put_nullable_bytes(buf, {expr}.as_ref(), flexible, {nullable_v}, {name:?})?;"
        )
        .unwrap(),
        Ty::Bytes => writeln!(out, "wire::put_bytes(buf, &{expr}, flexible)?;").unwrap(),
        Ty::Struct(_) if nullable_ty => {
            writeln!(out, "match &{expr} {{").unwrap();
            writeln!(out, "None => {{ if !({nullable_v}) {{ return Err(EncodeError::NullNotAllowed({name:?})); }} buf.put_i8(-1); }}").unwrap();
            writeln!(
                out,
                "Some(v) => {{ if {nullable_v} {{ buf.put_i8(1); }} v.encode(buf, version)?; }}"
            )
            .unwrap();
            writeln!(out, "}}").unwrap();
        }
        Ty::Struct(_) => writeln!(out, "{expr}.encode(buf, version)?;").unwrap(),
        Ty::Array(e) => {
            if nullable_ty {
                writeln!(out, "match &{expr} {{").unwrap();
                writeln!(out, "None => {{ if !({nullable_v}) {{ return Err(EncodeError::NullNotAllowed({name:?})); }} wire::put_null_len(buf, flexible); }}").unwrap();
                writeln!(out, "Some(items) => {{").unwrap();
            } else {
                writeln!(out, "{{ let items = &{expr};").unwrap();
            }
            writeln!(out, "wire::put_array_len(buf, items.len(), flexible)?;").unwrap();
            writeln!(out, "for item in items.iter() {{").unwrap();
            enc(e, "(*item)", false, "false", name, out);
            writeln!(out, "}}").unwrap();
            if nullable_ty {
                writeln!(out, "}}\n}}").unwrap();
            } else {
                writeln!(out, "}}").unwrap();
            }
        }
    }
}

/// An expression: the encoded length of `expr` of type `ty`.
fn len(ty: &Ty, expr: &str, nullable_ty: bool) -> String {
    match ty {
        Ty::Prim(p) => prim_size(p).to_string(),
        Ty::Uuid => "16".into(),
        Ty::Str if nullable_ty => format!("wire::nullable_string_len({expr}.as_deref(), flexible)"),
        Ty::Str => format!("wire::string_len(&{expr}, flexible)"),
        Ty::Bytes | Ty::Records if nullable_ty || matches!(ty, Ty::Records) => {
            format!("wire::nullable_bytes_len({expr}.as_ref(), flexible)")
        }
        Ty::Bytes | Ty::Records => format!("wire::bytes_len(&{expr}, flexible)"),
        Ty::Struct(_) if nullable_ty => format!(
            "(match &{expr} {{ None => 1, Some(v) => v.encoded_len(version) + usize::from(nullable_v_marker) }})"
        ),
        Ty::Struct(_) => format!("{expr}.encoded_len(version)"),
        Ty::Array(e) => {
            let elen = len(e, "(*item)", false);
            let body = format!(
                "wire::array_len_len(items.len(), flexible) + items.iter().map(|item| {{ let _ = item; {elen} }}).sum::<usize>()"
            );
            if nullable_ty {
                format!(
                    "(match &{expr} {{ None => wire::null_len_len(flexible), Some(items) => {body} }})"
                )
            } else {
                format!("{{ let items = &{expr}; {body} }}")
            }
        }
    }
}

/// An expression: the least number of bytes one value of `ty` takes on the wire.
fn min_len(ty: &Ty, nullable_ty: bool) -> String {
    match ty {
        Ty::Prim(p) => prim_size(p).to_string(),
        Ty::Uuid => "16".into(),
        Ty::Str => "(if flexible { 1 } else { 2 })".into(),
        Ty::Bytes | Ty::Records | Ty::Array(_) => "(if flexible { 1 } else { 4 })".into(),
        Ty::Struct(_) if nullable_ty => "1".into(),
        Ty::Struct(s) => format!("{s}::min_len(version)"),
    }
}

// ---------------------------------------------------------------- decode

/// An expression decoding a value of `ty` from `buf`.
fn dec(ty: &Ty, nullable_ty: bool, nullable_v: &str, name: &str) -> String {
    match ty {
        Ty::Prim("bool") => "wire::get_bool(buf)?".into(),
        Ty::Prim(p) => format!("wire::get_{p}(buf)?"),
        Ty::Uuid => "wire::get_uuid(buf)?".into(),
        Ty::Str if nullable_ty => {
            format!("wire::get_nullable_string(buf, flexible, {nullable_v}, {name:?})?")
        }
        Ty::Str => format!("wire::get_string(buf, flexible, {name:?})?"),
        Ty::Bytes | Ty::Records if nullable_ty || matches!(ty, Ty::Records) => {
            format!("wire::get_nullable_bytes(buf, flexible, {nullable_v}, {name:?})?")
        }
        Ty::Bytes | Ty::Records => format!("wire::get_bytes(buf, flexible, {name:?})?"),
        Ty::Struct(s) if nullable_ty => format!(
            "(if {nullable_v} {{ if wire::get_i8(buf)? < 0 {{ None }} else {{ Some({s}::decode(buf, version)?) }} }} else {{ Some({s}::decode(buf, version)?) }})"
        ),
        Ty::Struct(s) => format!("{s}::decode(buf, version)?"),
        Ty::Array(e) => {
            let emin = min_len(e, false);
            let edec = dec(e, false, "false", name);
            let ety = rust_ty(e, false);
            let read = format!(
                "{{ let mut items = ::std::vec::Vec::<{ety}>::with_capacity(wire::prealloc_len::<{ety}>(n)); for _ in 0..n {{ items.push({edec}); }} items }}"
            );
            if nullable_ty {
                format!(
                    "(match wire::get_array_len(buf, flexible, ({emin}).max(1), {name:?})? {{ None if {nullable_v} => None, None => return Err(DecodeError::UnexpectedNull({name:?})), Some(n) => Some({read}) }})"
                )
            } else {
                format!(
                    "(match wire::get_array_len(buf, flexible, ({emin}).max(1), {name:?})? {{ None => return Err(DecodeError::UnexpectedNull({name:?})), Some(n) => {read} }})"
                )
            }
        }
    }
}

// ---------------------------------------------------------------- generation

fn gen_message(m: &Msg, out: &mut String) {
    let module = snake(&m.name);
    writeln!(
        out,
        "/// Kafka `{}` (API key {}, versions {}-{}).",
        m.name, m.key, m.valid.lo, m.valid.hi
    )
    .unwrap();
    writeln!(out, "pub mod {module} {{").unwrap();
    writeln!(
        out,
        "#[allow(unused_imports)] use ::bytes::{{Buf, BufMut, Bytes, BytesMut}};"
    )
    .unwrap();
    writeln!(
        out,
        "#[allow(unused_imports)] use crate::{{wire, Decode, DecodeError, Encode, EncodeError}};"
    )
    .unwrap();
    gen_struct(m, &m.name, &m.fields, true, out);
    for (s, fields) in &m.structs {
        gen_struct(m, s, fields, false, out);
    }
    writeln!(out, "}}").unwrap();
}

fn gen_struct(m: &Msg, name: &str, fields: &[Field], top: bool, out: &mut String) {
    // Type definition.
    if top {
        writeln!(
            out,
            "/// Kafka `{name}`, generated from net/schema/{name}.schema."
        )
        .unwrap();
    } else {
        writeln!(out, "/// `{name}`, part of Kafka `{}`.", m.name).unwrap();
    }
    writeln!(
        out,
        "#[derive(Debug, Clone, PartialEq)]\npub struct {name} {{"
    )
    .unwrap();
    for f in fields {
        writeln!(
            out,
            "/// `{}`: versions {}, {}.",
            f.name,
            range_doc(f.versions),
            f.ty
        )
        .unwrap();
        writeln!(
            out,
            "pub {}: {},",
            field_ident(&f.name),
            rust_ty(&ty_of(&f.ty), is_nullable(f))
        )
        .unwrap();
    }
    writeln!(out, "}}").unwrap();
    writeln!(
        out,
        "impl Default for {name} {{ fn default() -> Self {{ Self {{"
    )
    .unwrap();
    for f in fields {
        writeln!(out, "{}: {},", field_ident(&f.name), default_expr(f)).unwrap();
    }
    writeln!(out, "}} }} }}").unwrap();

    let flex = m.flexible.test("version");
    let untagged: Vec<&Field> = fields.iter().filter(|f| f.tag.is_none()).collect();
    let mut tagged: Vec<&Field> = fields.iter().filter(|f| f.tag.is_some()).collect();
    tagged.sort_by_key(|f| f.tag);

    // Constants and min_len.
    writeln!(out, "impl {name} {{").unwrap();
    if top {
        writeln!(
            out,
            "/// The Kafka API key of this message.\npub const API_KEY: i16 = {};",
            m.key
        )
        .unwrap();
        writeln!(
            out,
            "/// Lowest version supported.\npub const MIN_VERSION: i16 = {};",
            m.valid.lo
        )
        .unwrap();
        writeln!(
            out,
            "/// Highest version supported.\npub const MAX_VERSION: i16 = {};",
            m.valid.hi
        )
        .unwrap();
        writeln!(out, "/// Whether `version` uses the flexible (compact, tagged) encoding.\npub const fn is_flexible(version: i16) -> bool {{ {flex} }}").unwrap();
    }
    writeln!(
        out,
        "/// Least number of bytes one encoded value takes in `version`."
    )
    .unwrap();
    writeln!(out, "#[allow(unused_mut, unused_variables)] pub fn min_len(version: i16) -> usize {{ let flexible = {flex}; let mut n = usize::from(flexible);").unwrap();
    for f in &untagged {
        writeln!(
            out,
            "if {} {{ n += {}; }}",
            f.versions.test("version"),
            min_len(&ty_of(&f.ty), is_nullable(f))
        )
        .unwrap();
    }
    writeln!(out, "n }}\n}}").unwrap();

    // Encode.
    writeln!(out, "impl Encode for {name} {{").unwrap();
    writeln!(out, "#[allow(unused_variables)] fn encode(&self, buf: &mut dyn wire::WireBuf, version: i16) -> Result<(), EncodeError> {{").unwrap();
    if top {
        writeln!(out, "if version < Self::MIN_VERSION || version > Self::MAX_VERSION {{ return Err(EncodeError::UnsupportedVersion {{ api_key: Self::API_KEY, version }}); }}").unwrap();
    }
    writeln!(out, "let flexible = {flex};").unwrap();
    for f in &untagged {
        let ty = ty_of(&f.ty);
        writeln!(out, "if {} {{", f.versions.test("version")).unwrap();
        enc(
            &ty,
            &format!("self.{}", field_ident(&f.name)),
            is_nullable(f),
            &f.nullable.test("version"),
            &f.name,
            out,
        );
        writeln!(out, "}}").unwrap();
    }
    writeln!(out, "if flexible {{").unwrap();
    writeln!(out, "let mut n: usize = 0;").unwrap();
    for f in &tagged {
        writeln!(out, "if {} {{ n += 1; }}", tagged_present(f)).unwrap();
    }
    writeln!(out, "wire::put_uvarint(buf, n as u32);").unwrap();
    for f in &tagged {
        let ty = ty_of(&f.ty);
        let id = field_ident(&f.name);
        writeln!(out, "if {} {{", tagged_present(f)).unwrap();
        writeln!(out, "wire::put_uvarint(buf, {});", f.tag.unwrap_or(0)).unwrap();
        writeln!(
            out,
            "let nullable_v_marker = {}; let _ = nullable_v_marker;",
            f.nullable.test("version")
        )
        .unwrap();
        writeln!(
            out,
            "wire::put_uvarint(buf, wire::len_u32({})?);",
            len(&ty, &format!("self.{id}"), is_nullable(f))
        )
        .unwrap();
        enc(
            &ty,
            &format!("self.{id}"),
            is_nullable(f),
            &f.nullable.test("version"),
            &f.name,
            out,
        );
        writeln!(out, "}}").unwrap();
    }
    writeln!(out, "}}\nOk(())\n}}").unwrap();

    writeln!(
        out,
        "#[allow(unused_variables, unused_mut)] fn encoded_len(&self, version: i16) -> usize {{"
    )
    .unwrap();
    writeln!(out, "let flexible = {flex}; let mut n: usize = 0;").unwrap();
    for f in &untagged {
        let ty = ty_of(&f.ty);
        writeln!(
            out,
            "if {} {{ let nullable_v_marker = {}; let _ = nullable_v_marker; n += {}; }}",
            f.versions.test("version"),
            f.nullable.test("version"),
            len(
                &ty,
                &format!("self.{}", field_ident(&f.name)),
                is_nullable(f)
            )
        )
        .unwrap();
    }
    writeln!(out, "if flexible {{ let mut count: usize = 0;").unwrap();
    for f in &tagged {
        let ty = ty_of(&f.ty);
        let id = field_ident(&f.name);
        writeln!(out, "if {} {{ count += 1; let nullable_v_marker = {}; let _ = nullable_v_marker; let l = {}; n += wire::uvarint_len({}) + wire::uvarint_len(l as u32) + l; }}", tagged_present(f), f.nullable.test("version"), len(&ty, &format!("self.{id}"), is_nullable(f)), f.tag.unwrap_or(0)).unwrap();
    }
    writeln!(out, "n += wire::uvarint_len(count as u32); }}\nn\n}}\n}}").unwrap();

    // Decode.
    writeln!(out, "impl Decode for {name} {{").unwrap();
    writeln!(out, "#[allow(unused_variables, unused_mut, clippy::field_reassign_with_default)] fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError> {{").unwrap();
    if top {
        writeln!(out, "if version < Self::MIN_VERSION || version > Self::MAX_VERSION {{ return Err(DecodeError::UnsupportedVersion {{ api_key: Self::API_KEY, version }}); }}").unwrap();
    }
    writeln!(
        out,
        "let flexible = {flex}; let mut this = Self::default();"
    )
    .unwrap();
    for f in &untagged {
        let ty = ty_of(&f.ty);
        writeln!(
            out,
            "if {} {{ this.{} = {}; }}",
            f.versions.test("version"),
            field_ident(&f.name),
            dec(&ty, is_nullable(f), &f.nullable.test("version"), &f.name)
        )
        .unwrap();
    }
    writeln!(out, "if flexible {{ let count = wire::get_tag_count(buf)?;").unwrap();
    writeln!(
        out,
        "for _ in 0..count {{ let (tag, mut sub) = wire::get_tagged_field(buf)?;"
    )
    .unwrap();
    writeln!(out, "match tag {{").unwrap();
    for f in &tagged {
        let ty = ty_of(&f.ty);
        writeln!(
            out,
            "{} if {} => {{ let buf = &mut sub; this.{} = {}; if buf.has_remaining() {{ return Err(DecodeError::TaggedFieldLength({:?})); }} }}",
            f.tag.unwrap_or(0),
            f.tagged.intersect(f.versions).test("version"),
            field_ident(&f.name),
            dec(&ty, is_nullable(f), &f.nullable.test("version"), &f.name),
            f.name
        )
        .unwrap();
    }
    writeln!(out, "_ => {{ let _ = &mut sub; }} }} }} }}").unwrap();
    writeln!(out, "Ok(this)\n}}\n}}").unwrap();
}

fn tagged_present(f: &Field) -> String {
    format!(
        "{} && self.{} != {}",
        f.tagged.intersect(f.versions).test("version"),
        field_ident(&f.name),
        default_expr(f)
    )
}

fn range_doc(r: Range) -> String {
    if r.is_empty() {
        "none".into()
    } else if r.hi == i16::MAX {
        format!("{}+", r.lo)
    } else {
        format!("{}-{}", r.lo, r.hi)
    }
}

fn api_name(m: &Msg) -> String {
    m.name
        .trim_end_matches(if m.kind == "request" {
            "Request"
        } else {
            "Response"
        })
        .to_string()
}

fn gen_apis(msgs: &[Msg]) -> String {
    let mut reqs: Vec<&Msg> = msgs.iter().filter(|m| m.kind == "request").collect();
    reqs.sort_by_key(|m| m.key);
    let mut resps: Vec<&Msg> = msgs.iter().filter(|m| m.kind == "response").collect();
    resps.sort_by_key(|m| m.key);
    let mut o = String::new();
    writeln!(o, "/// Every Kafka API Sluice speaks, with its wire key.").unwrap();
    writeln!(o, "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n#[repr(i16)]\npub enum ApiKey {{").unwrap();
    for m in &reqs {
        writeln!(
            o,
            "/// Kafka `{}` (key {}).\n{} = {},",
            api_name(m),
            m.key,
            api_name(m),
            m.key
        )
        .unwrap();
    }
    writeln!(o, "}}").unwrap();
    writeln!(o, "impl ApiKey {{").unwrap();
    writeln!(
        o,
        "/// Every supported API, by key.\npub const ALL: &'static [ApiKey] = &[{}];",
        reqs.iter()
            .map(|m| format!("ApiKey::{}", api_name(m)))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    writeln!(o, "/// The API with wire key `key`, if Sluice supports it.\npub const fn from_i16(key: i16) -> Option<ApiKey> {{ match key {{").unwrap();
    for m in &reqs {
        writeln!(o, "{} => Some(ApiKey::{}),", m.key, api_name(m)).unwrap();
    }
    writeln!(o, "_ => None }} }}").unwrap();
    writeln!(
        o,
        "/// Kafka's name for this API.\npub const fn name(self) -> &'static str {{ match self {{"
    )
    .unwrap();
    for m in &reqs {
        writeln!(o, "ApiKey::{0} => {0:?},", api_name(m)).unwrap();
    }
    writeln!(o, "}} }}").unwrap();
    writeln!(
        o,
        "/// Lowest supported version.\npub const fn min_version(self) -> i16 {{ match self {{"
    )
    .unwrap();
    for m in &reqs {
        writeln!(o, "ApiKey::{} => {},", api_name(m), m.valid.lo).unwrap();
    }
    writeln!(o, "}} }}").unwrap();
    writeln!(
        o,
        "/// Highest supported version.\npub const fn max_version(self) -> i16 {{ match self {{"
    )
    .unwrap();
    for m in &reqs {
        writeln!(o, "ApiKey::{} => {},", api_name(m), m.valid.hi).unwrap();
    }
    writeln!(o, "}} }}").unwrap();
    writeln!(o, "/// Whether `version` of this API's request uses the flexible encoding.\npub const fn is_flexible(self, version: i16) -> bool {{ match self {{").unwrap();
    for m in &reqs {
        writeln!(
            o,
            "ApiKey::{} => {},",
            api_name(m),
            m.flexible.test("version")
        )
        .unwrap();
    }
    writeln!(o, "}} }}").unwrap();
    writeln!(o, "/// Whether `version` of this API's response uses the flexible encoding.\npub const fn is_response_flexible(self, version: i16) -> bool {{ match self {{").unwrap();
    for m in &resps {
        writeln!(
            o,
            "ApiKey::{} => {},",
            api_name(m),
            m.flexible.test("version")
        )
        .unwrap();
    }
    writeln!(o, "}} }}\n}}").unwrap();

    writeln!(
        o,
        "/// `(api key, min version, max version)` of every API Sluice advertises in ApiVersions."
    )
    .unwrap();
    writeln!(o, "pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[").unwrap();
    for m in &reqs {
        writeln!(
            o,
            "(ApiKey::{}, {}, {}),",
            api_name(m),
            m.valid.lo,
            m.valid.hi
        )
        .unwrap();
    }
    writeln!(o, "];").unwrap();

    for (enum_name, list) in [("Request", &reqs), ("Response", &resps)] {
        writeln!(
            o,
            "/// A decoded Kafka {}, one variant per supported API.",
            enum_name.to_lowercase()
        )
        .unwrap();
        writeln!(
            o,
            "#[derive(Debug, Clone, PartialEq)]\npub enum {enum_name} {{"
        )
        .unwrap();
        for m in list.iter() {
            writeln!(
                o,
                "/// Kafka `{}`.\n{}(crate::messages::{}::{}),",
                m.name,
                api_name(m),
                snake(&m.name),
                m.name
            )
            .unwrap();
        }
        writeln!(o, "}}").unwrap();
        writeln!(o, "impl {enum_name} {{").unwrap();
        writeln!(o, "/// The API this message belongs to.\npub const fn api_key(&self) -> ApiKey {{ match self {{").unwrap();
        for m in list.iter() {
            writeln!(o, "{enum_name}::{0}(_) => ApiKey::{0},", api_name(m)).unwrap();
        }
        writeln!(o, "}} }}").unwrap();
        writeln!(o, "/// Decodes the body of `api_key` at `version`.\npub fn decode_body(api_key: ApiKey, buf: &mut ::bytes::Bytes, version: i16) -> Result<Self, crate::DecodeError> {{ use crate::Decode; Ok(match api_key {{").unwrap();
        for m in list.iter() {
            writeln!(o, "ApiKey::{0} => {enum_name}::{0}(crate::messages::{1}::{2}::decode(buf, version)?),", api_name(m), snake(&m.name), m.name).unwrap();
        }
        writeln!(o, "}}) }}").unwrap();
        writeln!(o, "/// Encodes the body at `version`.\npub fn encode_body(&self, buf: &mut dyn crate::wire::WireBuf, version: i16) -> Result<(), crate::EncodeError> {{ use crate::Encode; match self {{").unwrap();
        for m in list.iter() {
            writeln!(
                o,
                "{enum_name}::{}(m) => m.encode(buf, version),",
                api_name(m)
            )
            .unwrap();
        }
        writeln!(o, "}} }}").unwrap();
        writeln!(o, "/// Encoded length of the body at `version`.\npub fn body_len(&self, version: i16) -> usize {{ use crate::Encode; match self {{").unwrap();
        for m in list.iter() {
            writeln!(
                o,
                "{enum_name}::{}(m) => m.encoded_len(version),",
                api_name(m)
            )
            .unwrap();
        }
        writeln!(o, "}} }}\n}}").unwrap();
    }
    o
}

// ---------------------------------------------------------------- random values (tests)

fn gen_random(m: &Msg, out: &mut String) {
    let module = snake(&m.name);
    writeln!(out, "#[allow(unused_variables, unused_mut, unused_parens, unused_braces, clippy::all)] pub mod {module} {{").unwrap();
    writeln!(
        out,
        "use super::Rng; use sluice_net::messages::{module}::*;"
    )
    .unwrap();
    writeln!(
        out,
        "pub fn random(rng: &mut Rng, version: i16) -> {} {{ random_{}(rng, version, 0) }}",
        m.name,
        snake(&m.name)
    )
    .unwrap();
    let mut all = vec![(m.name.clone(), m.fields.clone())];
    all.extend(m.structs.iter().cloned());
    for (name, fields) in &all {
        writeln!(
            out,
            "pub fn random_{}(rng: &mut Rng, version: i16, depth: u32) -> {name} {{",
            snake(name)
        )
        .unwrap();
        writeln!(out, "let mut v = {name}::default();").unwrap();
        for f in fields {
            let present = if f.tag.is_some() {
                f.tagged.intersect(f.versions)
            } else {
                f.versions
            };
            let ty = ty_of(&f.ty);
            writeln!(
                out,
                "if {} {{ v.{} = {}; }}",
                present.test("version"),
                field_ident(&f.name),
                rand_expr(&ty, is_nullable(f), &f.nullable.test("version"))
            )
            .unwrap();
        }
        writeln!(out, "v }}").unwrap();
    }
    writeln!(out, "}}").unwrap();
}

fn rand_expr(ty: &Ty, nullable_ty: bool, nullable_v: &str) -> String {
    let base = match ty {
        Ty::Prim(p) => return format!("rng.{p}()"),
        Ty::Uuid => return "sluice_net::Uuid(rng.uuid())".into(),
        Ty::Records => {
            return format!(
                "(if {nullable_v} && rng.one_in(4) {{ None }} else {{ Some(rng.bytes()) }})"
            );
        }
        Ty::Str => "rng.string()".to_string(),
        Ty::Bytes => "rng.bytes()".to_string(),
        Ty::Struct(s) => format!("random_{}(rng, version, depth + 1)", snake(s)),
        Ty::Array(e) => {
            let inner = rand_expr(e, false, "false");
            format!("{{ let n = rng.len(depth); (0..n).map(|_| {inner}).collect::<Vec<_>>() }}")
        }
    };
    if nullable_ty {
        format!("(if {nullable_v} && rng.one_in(4) {{ None }} else {{ Some({base}) }})")
    } else {
        base
    }
}
