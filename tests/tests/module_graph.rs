//! The workspace's modules import one another without cycles: within each crate, no
//! module reaches (through `crate::` or `super::` paths) a module that reaches it back.
//! A module may use its ancestors (a parent's shared helpers); only the paths outside
//! its unit tests count, which sit at the end of a file behind `#[cfg(test)]` here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The workspace's crates: every folder beside this one with a `Cargo.toml` and a `src`.
fn crates() -> Vec<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate sits in the workspace");
    let mut crates: Vec<PathBuf> = fs::read_dir(workspace)
        .expect("the workspace folder is readable")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join("Cargo.toml").is_file() && path.join("src").is_dir())
        .collect();
    crates.sort();
    crates
}

/// Every library module's file, by its path in the crate (`a::b`; the root is `""`).
/// Binary roots (`main.rs`) and files of unit tests (`*_tests.rs`) are left out.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut folders = vec![src.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).expect("a source folder is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|stem| stem.to_str()) else { continue };
            if path.extension().is_none_or(|extension| extension != "rs") || stem == "main" || stem.ends_with("_tests")
            {
                continue;
            }
            let relative = path.parent().and_then(|parent| parent.strip_prefix(src).ok()).expect("under src");
            let mut segments: Vec<String> =
                relative.components().map(|part| part.as_os_str().to_string_lossy().into_owned()).collect();
            if stem != "lib" && stem != "mod" {
                segments.push(stem.to_owned());
            }
            found.insert(segments.join("::"), path);
        }
    }
    found
}

/// The code of a file that counts: before its unit tests, without comment lines.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("a source file is readable");
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    before_tests.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The paths that follow each `prefix` in `code` (`crate::a::b` gives `a::b`), a
/// brace group giving each of its items (`crate::{a, b::c}` gives `a` and `b::c`).
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let preceded_by_ident = code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        if preceded_by_ident {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => paths.extend(group_items(group, "")),
            None => paths.push(path_head(rest)),
        }
    }
    paths
}

/// The items of a brace group up to its closing brace, each with `prefix` and nested
/// groups spelled out (`a, b::{c, d}}` gives `a`, `b::c` and `b::d`).
fn group_items(group: &str, prefix: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            ',' | '}' if depth == 0 => {
                let item = group[start..at].trim();
                match item.split_once("::{") {
                    Some((head, nested)) => items.extend(group_items(nested, &format!("{prefix}{head}::"))),
                    None if !item.is_empty() => items.push(format!("{prefix}{}", path_head(item))),
                    None => {}
                }
                if c == '}' {
                    break;
                }
                start = at + 1;
            }
            _ => {}
        }
    }
    items
}

/// The leading `a::b::c` of `text`.
fn path_head(text: &str) -> String {
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(text.len());
    text[..end].trim_end_matches(':').to_owned()
}

/// The module a path names, or the one its item lives in: its longest prefix that is a
/// module.
fn module_of(path: &str, modules: &BTreeMap<String, PathBuf>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").filter(|segment| !segment.is_empty()).collect();
    (1..=segments.len()).rev().map(|length| segments[..length].join("::")).find(|module| modules.contains_key(module))
}

fn parent(module: &str) -> String {
    module.rsplit_once("::").map_or_else(String::new, |(parent, _)| parent.to_owned())
}

fn is_ancestor(ancestor: &str, module: &str) -> bool {
    ancestor.is_empty() || module.starts_with(&format!("{ancestor}::"))
}

/// Which modules each module reaches, its ancestors left out.
fn imports(modules: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .map(|(module, path)| {
            let code = code(path);
            let from_crate = paths_after(&code, "crate::");
            let from_parent = paths_after(&code, "super::").into_iter().map(|path| {
                let parent = parent(module);
                if parent.is_empty() { path } else { format!("{parent}::{path}") }
            });
            (module.clone(), reached(module, from_crate.into_iter().chain(from_parent), modules))
        })
        .collect()
}

/// The modules `paths` (from the crate's root) lead `module` to, but itself and its
/// ancestors.
fn reached(
    module: &str,
    paths: impl IntoIterator<Item = String>,
    modules: &BTreeMap<String, PathBuf>,
) -> BTreeSet<String> {
    paths
        .into_iter()
        .filter_map(|path| module_of(&path, modules))
        .filter(|target| target != module && !is_ancestor(target, module))
        .collect()
}

/// The groups of two or more modules that reach one another (strongly connected
/// components, found by Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Search<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, module: &'a str) {
            let order = self.index.len();
            self.index.insert(module, order);
            self.low.insert(module, order);
            self.stack.push(module);
            for target in self.graph.get(module).into_iter().flatten() {
                let target = target.as_str();
                if !self.index.contains_key(target) {
                    self.visit(target);
                    let low = self.low[module].min(self.low[target]);
                    self.low.insert(module, low);
                } else if self.stack.contains(&target) {
                    let low = self.low[module].min(self.index[target]);
                    self.low.insert(module, low);
                }
            }
            if self.low[module] == self.index[module] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    component.push(member.to_owned());
                    if member == module {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search =
        Search { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for module in graph.keys() {
        if !search.index.contains_key(module.as_str()) {
            search.visit(module);
        }
    }
    search.found
}

#[test]
fn no_module_imports_a_module_that_imports_it() {
    let mut found = Vec::new();
    for krate in crates() {
        let modules = modules(&krate.join("src"));
        let name = krate.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        for cycle in cycles(&imports(&modules)) {
            found.push(format!("{name}: {}", cycle.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "modules that import each other:\n{}", found.join("\n"));
}

#[test]
fn a_cycle_between_two_modules_is_found_and_a_child_using_its_parent_is_not() {
    let modules: BTreeMap<String, PathBuf> =
        ["", "a", "b", "c", "c::d"].into_iter().map(|module| (module.to_owned(), PathBuf::new())).collect();
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", "b::Thing"), ("b", "a::helper"), ("c", "c::d::Item"), ("c::d", "c::shared")]
            .into_iter()
            .map(|(module, path)| (module.to_owned(), reached(module, [path.to_owned()], &modules)))
            .collect();
    assert!(graph["c::d"].is_empty(), "a child using its parent reaches nothing: {graph:?}");
    assert_eq!(cycles(&graph), vec![vec!["a".to_owned(), "b".to_owned()]]);
    assert_eq!(
        paths_after("use crate::{a::X, b::{c, d::{E, F}}, g};\nlet y = crate::c::d::f();", "crate::"),
        ["a::X", "b::c", "b::d::E", "b::d::F", "g", "c::d::f"]
    );
}
