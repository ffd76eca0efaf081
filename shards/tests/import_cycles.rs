//! The layering of `shards/src` holds: no import cycle of more than three files, counting the
//! `crate::` and `super::` paths each file names (ARCHITECTURE.md has the layers). A cycle
//! is a set of files that all reach each other (a strongly connected component).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The largest set of files allowed to import each other.
const CYCLE_FILES_MAX: usize = 3;

#[test]
fn no_import_cycle_spans_more_than_three_files() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    assert!(
        graph.len() > 20,
        "only {} files found in {}",
        graph.len(),
        src.display()
    );
    let too_large: Vec<Vec<String>> = components(&graph)
        .into_iter()
        .filter(|c| c.len() > CYCLE_FILES_MAX)
        .collect();
    assert!(
        too_large.is_empty(),
        "files that import each other in a cycle of more than {CYCLE_FILES_MAX}: {too_large:?}"
    );
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a", "d"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let mut sizes: Vec<usize> = components(&graph).iter().map(Vec::len).collect();
    sizes.sort();
    assert_eq!(sizes, vec![1, 3]);
}

/// File (relative to `src`) → the files it imports.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect(src, src, &mut files);
    let modules: BTreeMap<Vec<String>, String> =
        files.iter().map(|f| (module_of(f), f.clone())).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(src.join(file)).expect("readable source");
        let me = module_of(file);
        let mut edges = BTreeSet::new();
        for path in imported_paths(&code_only(&text)) {
            let (head, rest) = path.split_first().expect("a path has a head");
            let mut base: Vec<String> = if head == "crate" {
                Vec::new()
            } else {
                me[..me.len().saturating_sub(1)].to_vec()
            };
            let mut rest = rest.to_vec();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest.remove(0);
            }
            base.extend(rest);
            // The longest prefix that is a module: `crate::a::b::Item` is in a/b.rs.
            let target = (1..=base.len())
                .rev()
                .find_map(|n| modules.get(&base[..n]))
                .filter(|t| *t != file && *t != "lib.rs");
            if let Some(target) = target {
                edges.insert(target.clone());
            }
        }
        graph.insert(file.clone(), edges);
    }
    graph
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// `a/b.rs` → [a, b]; `a/mod.rs` → [a]; `lib.rs` → [].
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The text before the file's test module, without line comments.
fn code_only(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i]);
    text.lines()
        .map(|line| line.find("//").map_or(line, |i| &line[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…` / `super::…` path, as segments; a `{a, b::c}` group gives one path per
/// item (its first segment is enough to find the module).
fn imported_paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let head = ["crate::", "super::"]
            .into_iter()
            .find(|h| code[i..].starts_with(h));
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let Some(head) = head.filter(|_| boundary) else {
            i += 1;
            continue;
        };
        let mut segments = vec![head.trim_end_matches("::").to_string()];
        let mut j = i + head.len();
        loop {
            let ident_len = code[j..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(code.len() - j);
            if ident_len > 0 {
                segments.push(code[j..j + ident_len].to_string());
                j += ident_len;
                if code[j..].starts_with("::") {
                    j += 2;
                    continue;
                }
                paths.push(segments);
                break;
            }
            if code[j..].starts_with('{') {
                let end = code[j..].find(';').map_or(code.len(), |e| j + e);
                let group = code[j..end].replace(['{', '}'], ",");
                for item in group.split(',') {
                    let first = item
                        .trim()
                        .split(" as ")
                        .next()
                        .and_then(|i| i.split("::").next())
                        .unwrap_or("")
                        .trim();
                    if !first.is_empty() && first != "self" {
                        let mut path = segments.clone();
                        path.push(first.to_string());
                        paths.push(path);
                    }
                }
                j = end;
            } else {
                paths.push(segments);
            }
            break;
        }
        i = j.max(i + 1);
    }
    paths
}

/// The strongly connected components of `graph` (Tarjan), as sorted file lists.
fn components(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.out
}
