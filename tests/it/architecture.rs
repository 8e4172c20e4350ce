//! The shape of `src/`: small modules, and dependencies that go one way.
//!
//! Reads the sources as text: every `crate::…` and `super::…` path outside test code
//! is an edge from the module that names it to the module it names. Between sibling
//! modules (children of one parent) those edges must form no cycle, at every level:
//! `engine` ↔ `hub` or `actors::download` ↔ `actors::supervisor` would fail here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// `src/actors/supervisor/commands.rs` → `["actors", "supervisor", "commands"]`;
/// `lib.rs` and `main.rs` are the crate root.
fn module_of(file: &Path) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = file.strip_prefix(&src).expect("inside src/");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.as_slice(), [only] if only == "lib" || only == "main") {
        parts.clear();
    }
    parts
}

/// The code of a file without its test module (`#[cfg(test)]` to the end) and
/// without comment lines (a doc link is no import).
fn production_code(text: &str) -> String {
    let code = text.find("#[cfg(test)]").map_or(text, |i| &text[..i]);
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path that a piece of code names with `crate::` or `super::`.
fn named_paths(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(here))] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            for tail in expand(rest) {
                let mut path = base.clone();
                path.extend(tail);
                out.push(path);
            }
        }
    }
    out
}

fn parent(m: &[String]) -> Vec<String> {
    m[..m.len().saturating_sub(1)].to_vec()
}

/// `a::b::C` → `[[a, b, C]]`; `{a::x, b}` → `[[a, x], [b]]` (one level of braces).
fn expand(rest: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|seg| {
                seg.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|seg| !seg.is_empty())
            .collect()
    };
    if let Some(group) = rest.strip_prefix('{') {
        let end = group.find('}').unwrap_or(group.len());
        return group[..end].split(',').map(|s| ident(s.trim())).collect();
    }
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    vec![ident(&rest[..end])]
}

/// The longest prefix of `path` that is a module of the crate.
fn resolve<'a>(path: &[String], modules: &'a BTreeSet<Vec<String>>) -> Option<&'a Vec<String>> {
    (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
}

/// Edges between siblings: for `from` → `to`, the children of their deepest common
/// ancestor on each side; none when one contains the other.
fn sibling_edge(from: &[String], to: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((from[..=common].to_vec(), to[..=common].to_vec()))
}

fn find_cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle: Vec<String> = stack[i..].iter().map(|m| m.join("::")).collect();
            cycle.push(node.join("::"));
            return Some(cycle);
        }
        if !done.insert(node.clone()) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn dependency_graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files: Vec<(Vec<String>, String)> = sources()
        .into_iter()
        .filter(|f| !f.to_string_lossy().ends_with("_tests.rs"))
        .map(|f| (module_of(&f), std::fs::read_to_string(&f).expect("read")))
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, text) in &files {
        for path in named_paths(&production_code(text), module) {
            let Some(target) = resolve(&path, &modules) else {
                continue;
            };
            if let Some((a, b)) = sibling_edge(module, target) {
                graph.entry(a).or_default().insert(b);
            }
        }
    }
    graph
}

#[test]
fn no_module_of_src_is_over_600_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(&f).expect("read").lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by job: {long:?}");
}

#[test]
fn modules_depend_on_each_other_one_way() {
    let graph = dependency_graph();
    assert!(
        graph.len() > 5,
        "the graph found too few modules to mean anything: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" → "));
    }
}

/// The checker itself: it sees a cycle when there is one, and only then.
#[test]
fn the_cycle_check_finds_a_planted_cycle() {
    let m = |s: &str| -> Vec<String> { s.split("::").map(str::to_owned).collect() };
    let modules: BTreeSet<Vec<String>> = [m("engine"), m("hub"), m("engine::segments")]
        .into_iter()
        .collect();
    let code_engine = "use crate::hub::HubClient;";
    let code_segments = "use super::Transfer; use crate::{files, engine::x};";
    let code_hub = "pub use crate::engine::parse_retry_after;";
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, code) in [
        (m("engine"), code_engine),
        (m("engine::segments"), code_segments),
        (m("hub"), code_hub),
    ] {
        for path in named_paths(code, &module) {
            if let Some(t) = resolve(&path, &modules) {
                if let Some((a, b)) = sibling_edge(&module, t) {
                    graph.entry(a).or_default().insert(b);
                }
            }
        }
    }
    let cycle = find_cycle(&graph).expect("engine ↔ hub is a cycle");
    assert!(
        cycle.contains(&"engine".to_owned()) && cycle.contains(&"hub".to_owned()),
        "the cycle found: {cycle:?}"
    );
    graph.remove(&m("hub"));
    assert_eq!(
        find_cycle(&graph),
        None,
        "a child naming its parent is no cycle"
    );
}

/// What writes a `.part` outside `engine/part/`, in `(file under src/, code)` pairs: the
/// rule of "only `engine/part/` writes a `.part`", read as text, in three parts.
///
/// 1. The crate opens a `.part` only through `files::Place::open_part` (the `.part`'s
///    name is a private field of `Place`): that call appears only in `engine/part/`
///    (and its definition, in `files/place.rs`).
/// 2. Nobody forms a `.part`'s name to open it by path: a `.part` string literal beside
///    `join(`, `with_extension(`, `open(` or `OpenOptions`, or `with_extension("part")`,
///    appears only in `files/place.rs`.
/// 3. The engine holds the `.part`'s `File` (and hands clones of it to its own modules):
///    inside `engine`, the write primitives (`write_at`, `write_all_at`, `write_all`,
///    `pwrite`, `set_len`, `fallocate`, `ftruncate`, `sync_file_range`) appear only in
///    `engine/part/` (`part.rs` and `part/`). Modules outside the engine never get that
///    handle, and by 1 and 2 cannot open one of their own.
///
/// Test code and comments are left out (see [`production_code`]). Removing (by name)
/// and renaming into place are not writes of its bytes: `finish` does both.
fn part_writers(files: &[(String, String)]) -> Vec<String> {
    const WRITES: [&str; 8] = [
        "write_at(",
        "write_all_at(",
        "write_all(",
        "pwrite",
        "set_len(",
        "fallocate",
        "ftruncate",
        "sync_file_range",
    ];
    let in_part = |f: &str| f == "engine/part.rs" || f.starts_with("engine/part/");
    let mut found = Vec::new();
    for (file, text) in files {
        let file = file.as_str();
        if in_part(file) || file == "files/place.rs" {
            continue;
        }
        let in_engine = file == "engine.rs" || file.starts_with("engine/");
        for line in production_code(text).lines() {
            if line.contains("open_part(") {
                found.push(format!("{file}: opens a .part: {}", line.trim()));
            }
            let names_part = line.contains(".part\"") || line.contains("with_extension(\"part\")");
            let opens = ["join(", "with_extension(", "open(", "OpenOptions"]
                .iter()
                .any(|w| line.contains(w));
            if names_part && opens {
                found.push(format!("{file}: forms a .part's name: {}", line.trim()));
            }
            if in_engine {
                if let Some(w) = WRITES.iter().find(|w| line.contains(*w)) {
                    found.push(format!(
                        "{file}: writes ({w}) outside engine/part: {}",
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

/// `src/` as `(path under src/, text)`.
fn source_texts() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    sources()
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).expect("inside src/");
            let text = std::fs::read_to_string(&f).expect("read");
            (rel.to_string_lossy().into_owned(), text)
        })
        .collect()
}

#[test]
fn only_engine_part_writes_a_part() {
    let files = source_texts();
    assert!(
        files
            .iter()
            .any(|(f, t)| f == "engine/part.rs" && t.contains("open_part(")),
        "the rule's anchor moved: engine/part.rs no longer opens the .part"
    );
    let found = part_writers(&files);
    assert!(
        found.is_empty(),
        "only engine/part/ writes a .part: {found:#?}"
    );
}

/// The checker itself: a segment connection writing the `.part` directly, the end of a
/// run opening it again, or the library forming its name are each caught; the same
/// code in `engine/part/` (or in a test module) is not.
#[test]
fn the_part_writer_check_finds_planted_writers() {
    let file = |path: &str, code: &str| (path.to_owned(), code.to_owned());
    let planted = [
        file(
            "engine/segments.rs",
            "fn flush(s: &Shared) { s.file.write_all_at(&buf, pos)?; }",
        ),
        file("engine/finish.rs", "let f = place.open_part(false, 0)?;"),
        file(
            "library/scan.rs",
            "let f = OpenOptions::new().write(true).open(dir.join(name + \".part\"))?;",
        ),
    ];
    let found = part_writers(&planted);
    assert_eq!(found.len(), 3, "each planted writer is found: {found:#?}");
    assert!(found[0].starts_with("engine/segments.rs: writes (write_all_at("));
    let allowed = [
        file("engine/part/ranges.rs", "self.file.write_all_at(&bytes[..n], offset)?;"),
        file("engine/part.rs", "let f = place.open_part(true, 0)?;"),
        file("files/place.rs", "let part = cstr(OsStr::new(&format!(\"{name}.part\")))?;"),
        file(
            "engine/segments.rs",
            "fn f() {}\n#[cfg(test)]\nmod tests { fn t() { file.write_all_at(b\"x\", 0).unwrap(); } }",
        ),
        file("library/journal.rs", "self.file.set_len(self.size)?;"),
    ];
    assert_eq!(part_writers(&allowed), Vec::<String>::new());
}

/// The methods of the library's `Index` that take `&mut self`, each with how visible it
/// is (the text before `fn` on its line: `pub(super)`, `pub(in crate::library)`, …).
/// The whole file, test-only items too: a mutator is one whatever it is compiled for.
fn index_mutators(index_rs: &str) -> Vec<(String, String)> {
    let code: String = index_rs
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for line_start in code.lines().scan(0usize, |at, l| {
        let here = *at;
        *at += l.len() + 1;
        Some(here)
    }) {
        let line = &code[line_start..];
        let line_end = line.find('\n').unwrap_or(line.len());
        let Some(i) = line[..line_end].find("fn ") else {
            continue;
        };
        let visibility = line[..i].trim().to_owned();
        let rest = &line[i + 3..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let signature = &rest[..rest.find(['{', ';']).unwrap_or(rest.len())];
        if signature.contains("&mut self") {
            out.push((name, visibility));
        }
    }
    out
}

/// Where the rule "only the library's owner task mutates its index" is broken:
/// a mutator of `Index` visible beyond `library::owner`, or a file outside
/// `library/owner*` that calls one or takes the index's write lock. `files` are
/// (path relative to `src/`, text).
fn index_rule_breaks(index_rs: &str, files: &[(String, String)]) -> Vec<String> {
    let mutators = index_mutators(index_rs);
    let mut breaks: Vec<String> = mutators
        .iter()
        .filter(|(_, vis)| !(vis.is_empty() || vis == "pub(super)"))
        .map(|(name, vis)| format!("Index::{name} is `{vis}`: only the owner may mutate"))
        .collect();
    for (path, text) in files {
        if path == "library/owner.rs" || path.starts_with("library/owner/") {
            continue;
        }
        let code = production_code(text);
        for (name, _) in &mutators {
            if code.contains(&format!(".{name}(")) {
                breaks.push(format!("{path} calls Index::{name}"));
            }
        }
        if code.contains("index.write(") || code.contains("index\n            .write(") {
            breaks.push(format!("{path} takes the index's write lock"));
        }
    }
    breaks
}

#[test]
fn only_the_library_owner_task_mutates_its_index() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let index_rs = std::fs::read_to_string(src.join("library/owner/index.rs"))
        .expect("library/owner/index.rs");
    let mutators = index_mutators(&index_rs);
    assert!(
        mutators.len() >= 2,
        "the index's mutators were not found: {mutators:?}"
    );
    let files: Vec<(String, String)> = sources()
        .into_iter()
        .map(|f| {
            let rel = f
                .strip_prefix(&src)
                .expect("in src/")
                .to_string_lossy()
                .into_owned();
            (rel, std::fs::read_to_string(&f).expect("read"))
        })
        .collect();
    let breaks = index_rule_breaks(&index_rs, &files);
    assert!(
        breaks.is_empty(),
        "the library's index has another writer: {breaks:?}"
    );
}

/// The checker itself: a planted mutator call outside the owner, a mutator made
/// visible to the library, and a write lock taken elsewhere are found; the owner's own
/// calls are not.
#[test]
fn the_index_owner_check_finds_a_planted_writer() {
    let index_rs = "impl Index {\n    pub(in crate::library) fn get(&self, p: &str) -> Option<&Record> {\n        None\n    }\n    pub(super) fn put_record(&mut self, p: String, r: Record) {\n    }\n    fn helper(&mut self) {}\n}\n";
    let owner = (
        "library/owner.rs".to_owned(),
        "fn f(i: &mut Index) { i.put_record(p, r); let w = self.shared.index.write(); }".to_owned(),
    );
    let clean = (
        "library/scan.rs".to_owned(),
        "fn f(i: &Index) { i.get(\"a\"); }".to_owned(),
    );
    assert_eq!(
        index_rule_breaks(index_rs, &[owner.clone(), clean.clone()]),
        Vec::<String>::new()
    );
    let writer = (
        "library/hasher.rs".to_owned(),
        "fn f(i: &mut Index) { i.put_record(p, r); }".to_owned(),
    );
    let locker = (
        "library/publish.rs".to_owned(),
        "fn f(s: &Shared) { let w = s.index.write(); }".to_owned(),
    );
    let breaks = index_rule_breaks(index_rs, &[owner, clean, writer, locker]);
    assert_eq!(breaks.len(), 2, "{breaks:?}");
    assert!(breaks[0].contains("library/hasher.rs") && breaks[0].contains("put_record"));
    assert!(breaks[1].contains("library/publish.rs"));
    let widened = index_rs.replace(
        "pub(super) fn put_record",
        "pub(in crate::library) fn put_record",
    );
    let breaks = index_rule_breaks(&widened, &[]);
    assert_eq!(breaks.len(), 1, "{breaks:?}");
    assert!(breaks[0].contains("put_record"));
}

/// The doors: each turns its protocol into calls on the queue's handle and intake.
/// `doors::web` is the router that assembles them; `doors::{security, conn, error}`
/// are helpers every door may use.
const DOORS: [&str; 5] = ["api", "ws", "aria2", "mirror", "cli"];

/// The door a module belongs to, if any.
fn door_of(module: &[String]) -> Option<&str> {
    match module {
        [doors, door, ..] if doors == "doors" && DOORS.contains(&door.as_str()) => Some(door),
        _ => None,
    }
}

/// Like [`named_paths`], also through a group after a prefix: `crate::doors::{ws, error}`
/// names `doors::ws` and `doors::error`, not only `doors`.
fn named_paths_grouped(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = named_paths(code, here);
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(here))] {
        for (i, _) in code.match_indices(prefix) {
            let rest = &code[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let Some(head) = rest[..end].strip_suffix("::") else {
                continue;
            };
            if !rest[end..].starts_with('{') {
                continue;
            }
            for tail in expand(&rest[end..]) {
                let mut path = base.clone();
                path.extend(head.split("::").map(str::to_owned));
                path.extend(tail);
                out.push(path);
            }
        }
    }
    out
}

/// `from → to` edges that break the doors' rule: a door names the engine, or
/// another door.
fn door_violations(
    files: &[(Vec<String>, String)],
    modules: &BTreeSet<Vec<String>>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (module, code) in files {
        let Some(door) = door_of(module) else {
            continue;
        };
        for path in named_paths_grouped(code, module) {
            let Some(target) = resolve(&path, modules) else {
                continue;
            };
            let engine = target.first().is_some_and(|m| m == "engine");
            let other_door = door_of(target).is_some_and(|d| d != door);
            if engine || other_door {
                out.insert(format!("{} → {}", module.join("::"), target.join("::")));
            }
        }
    }
    out
}

#[test]
fn no_door_imports_the_engine_or_another_door() {
    let files: Vec<(Vec<String>, String)> = sources()
        .into_iter()
        .filter(|f| !f.to_string_lossy().ends_with("_tests.rs"))
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("read");
            (module_of(&f), production_code(&text))
        })
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let doors = modules.iter().filter(|m| door_of(m).is_some()).count();
    assert!(doors >= DOORS.len(), "too few door modules found: {doors}");
    let bad = door_violations(&files, &modules);
    assert!(
        bad.is_empty(),
        "a door reaches into the engine or another door (go through intake or the queue's handle): {bad:?}"
    );
}

/// The checker itself: it sees a door naming the engine or another door (also inside
/// a `{…}` group), and lets a door use its own parts, the shared helpers and intake,
/// and the router name every door.
#[test]
fn the_door_check_finds_planted_edges() {
    let m = |s: &str| -> Vec<String> { s.split("::").map(str::to_owned).collect() };
    let modules: BTreeSet<Vec<String>> = [
        "engine",
        "intake",
        "doors",
        "doors::api",
        "doors::api::downloads",
        "doors::ws",
        "doors::error",
        "doors::web",
        "doors::cli",
        "doors::cli::embedded",
        "doors::cli::spec",
        "doors::mirror",
    ]
    .into_iter()
    .map(m)
    .collect();
    let files: Vec<(Vec<String>, String)> = [
        ("doors::api", "use crate::doors::{error::ApiError, ws};"),
        (
            "doors::api::downloads",
            "use crate::intake::UrlPolicy; use super::Queue;",
        ),
        (
            "doors::cli::embedded",
            "use super::spec::Spec; use crate::doors::api::in_process;",
        ),
        (
            "doors::mirror",
            "use crate::engine::Job; use crate::doors::error::ApiError;",
        ),
        (
            "doors::web",
            "use super::{api, aria2, mirror, ws}; use crate::engine::x;",
        ),
        ("doors::ws", "use super::error::ApiError;"),
    ]
    .into_iter()
    .map(|(module, code)| (m(module), code.to_owned()))
    .collect();
    let found = door_violations(&files, &modules);
    let want: BTreeSet<String> = [
        "doors::api → doors::ws",
        "doors::cli::embedded → doors::api",
        "doors::mirror → engine",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(found, want);
}
