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
