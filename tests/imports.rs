//! The house rule that imports run one way (STYLE.md, habit 1a): no file under `src/` may
//! reach, through a chain of `crate::…` paths, back to itself.
//!
//! The check reads the sources as text: every `use crate::…` tree and every `crate::a::b` path
//! in code (comments, doc links included, are skipped: a link is not a dependency) becomes an
//! edge to the deepest file the path names (`crate::authz::question::X` is
//! `src/authz/question.rs`, `crate::authz::X` is `src/authz.rs`); `super::` in a file is its
//! parent module; a crate-root macro (`crate::obj!`) is the file that defines it. `lib.rs` and
//! `main.rs` sit above everything and are left out. A cycle is printed as the files in it with
//! the edges between them, so the type in the wrong place can be found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Source files by module path (`authz`, `authz/question`), with their code lines.
fn sources(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel: PathBuf = path.strip_prefix(root).unwrap().with_extension("");
            let mut name = rel.to_string_lossy().replace('\\', "/");
            if let Some(parent) = name.strip_suffix("/mod") {
                name = parent.to_string();
            }
            if name == "lib" || name == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file is readable");
            out.insert(name, code_only(&text));
        }
    }
    out
}

/// The text with `//` comments removed (outside string literals) and `#[cfg(test)]` modules
/// kept: tests inside a file depend on what the file does anyway.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut cut = line.len();
        for (i, c) in line.char_indices() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            }
            if !in_str && c == '/' && prev == '/' {
                cut = i - 1;
                break;
            }
            prev = if prev == '\\' && c == '\\' { '\0' } else { c };
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

/// Every `crate::` path a file names, as lists of segments (use trees expanded).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(found) = code[at..].find("crate::") {
        let start = at + found;
        at = start + "crate::".len();
        // `$crate::` in a macro, or part of a longer identifier.
        let before = if start > 0 { bytes[start - 1] } else { b' ' };
        if before.is_ascii_alphanumeric() || before == b'_' || before == b'$' {
            continue;
        }
        tree(code, &mut at, Vec::new(), &mut out);
    }
    out
}

/// Parses a use tree (or a plain path) at `code[*at..]`, appending the paths it names.
fn tree(code: &str, at: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let bytes = code.as_bytes();
    let skip_ws = |at: &mut usize| {
        while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    let mut path = prefix;
    loop {
        skip_ws(at);
        if *at < bytes.len() && bytes[*at] == b'{' {
            *at += 1;
            loop {
                skip_ws(at);
                if *at >= bytes.len() {
                    return;
                }
                if bytes[*at] == b'}' {
                    *at += 1;
                    return;
                }
                if bytes[*at] == b',' {
                    *at += 1;
                    continue;
                }
                tree(code, at, path.clone(), out);
            }
        }
        let begin = *at;
        while *at < bytes.len() && (bytes[*at].is_ascii_alphanumeric() || bytes[*at] == b'_') {
            *at += 1;
        }
        if begin == *at {
            // `*`, or the end of the path.
            if *at < bytes.len() && bytes[*at] == b'*' {
                *at += 1;
            }
            break;
        }
        path.push(code[begin..*at].to_string());
        if code[*at..].starts_with("::") {
            *at += 2;
            continue;
        }
        break;
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// The file a path names: the deepest module of `files` that is a prefix of it, or the file
/// that defines a crate-root macro.
fn resolve(path: &[String], files: &BTreeMap<String, String>) -> Option<String> {
    let mut best = None;
    for n in 1..=path.len() {
        let name = path[..n].join("/");
        if files.contains_key(&name) {
            best = Some(name);
        }
    }
    if best.is_some() {
        return best;
    }
    let definition = format!("macro_rules! {}", path[0]);
    files
        .iter()
        .find(|(_, code)| code.contains(&definition))
        .map(|(name, _)| name.clone())
}

/// Strongly connected components with more than one file (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The import graph of `src/`: file → files it names.
fn graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(root);
    let mut graph = BTreeMap::new();
    for (name, code) in &files {
        let mut to = BTreeSet::new();
        for path in paths(code) {
            if let Some(target) = resolve(&path, &files) {
                to.insert(target);
            }
        }
        // `super::` in src/a/b.rs is src/a.rs.
        if code.contains("super::") {
            if let Some((parent, _)) = name.rsplit_once('/') {
                to.insert(parent.to_string());
            }
        }
        to.remove(name);
        graph.insert(name.clone(), to);
    }
    graph
}

#[test]
fn src_has_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&root);
    assert!(graph.len() > 10, "src/ was not read: {graph:?}");
    let found = cycles(&graph);
    let mut report = String::new();
    for scc in &found {
        report.push_str(&format!("cycle among {}:\n", scc.join(", ")));
        for from in scc {
            for to in &graph[from] {
                if scc.contains(to) {
                    report.push_str(&format!("  {from} -> {to}\n"));
                }
            }
        }
    }
    assert!(found.is_empty(), "imports run in a circle:\n{report}");
}

#[test]
fn the_check_sees_a_cycle_and_the_forms_of_a_path() {
    let code = code_only(
        "use crate::a::{self, b::C, d};\n\
         // use crate::z;\n\
         let s = \"// not a comment\"; crate::e::f(); $crate::g::h!();\n",
    );
    let named: Vec<String> = paths(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(named, ["a::self", "a::b::C", "a::d", "e::f"]);

    let edges = |pairs: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert!(cycles(&edges(&[("a", "b"), ("b", "c")])).is_empty());
    assert_eq!(
        cycles(&edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
        [vec!["a".to_string(), "b".into(), "c".into()]]
    );
}
