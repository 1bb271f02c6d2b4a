//! The crate's layout as its code uses it: which top-level module uses
//! which, read from the source files (`crate::…` and `super::…` paths,
//! outside comments and test modules). A test keeps every arrow one way:
//! a circle of modules is one concern split in two, neither readable
//! alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level modules each top-level module uses.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The graph of the crate whose sources are under `src`.
pub fn graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in source_files(src) {
        let relative = file.strip_prefix(src).expect("under src");
        let Some(module) = module_path(relative) else { continue };
        let code = code_of(&std::fs::read_to_string(&file).expect("a readable source file"));
        let used = graph.entry(module[0].clone()).or_default();
        used.extend(top_modules_used(&code, &module).into_iter().filter(|top| *top != module[0]));
    }
    graph
}

/// A circle of modules in `graph`, as the path around it, if there is one.
pub fn circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(node: &str, graph: &Graph, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == node) {
            let mut around = path[start..].to_vec();
            around.push(node.to_string());
            return Some(around);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// Every `.rs` file under `src`, but the binary's.
fn source_files(src: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable source directory").flatten() {
            let path = entry.path();
            if path.is_dir() && path != src.join("bin") {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module a file is, as its path from the crate root (`host/mod.rs`
/// is `["host"]`); `None` for the crate root itself.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    match last.strip_suffix(".rs")? {
        "lib" if parts.is_empty() => None,
        "mod" => Some(parts),
        name => {
            parts.push(name.to_string());
            Some(parts)
        }
    }
}

/// The text of a source file without its comments and its test module.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    text.lines().map(|line| line.split_once("//").map_or(line, |(code, _)| code)).collect::<Vec<_>>().join("\n")
}

/// The top-level modules that `code`, in module `module`, names.
fn top_modules_used(code: &str, module: &[String]) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        used.extend(names_after(&code[at + "crate::".len()..]));
    }
    for (at, _) in code.match_indices("super::") {
        // Only the first `super::` of a chain, and not `xsuper::`.
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at..];
        let depth = leading_supers(rest);
        match module.len().checked_sub(depth) {
            Some(0) => used.extend(names_after(&rest[depth * "super::".len()..])),
            Some(_) => {
                used.insert(module[0].clone());
            }
            None => {}
        }
    }
    used
}

/// How many `super::` `text` starts with.
fn leading_supers(text: &str) -> usize {
    let mut count = 0;
    let mut rest = text;
    while let Some(after) = rest.strip_prefix("super::") {
        count += 1;
        rest = after;
    }
    count
}

/// The first path segment(s) of a path's remainder: one name, or each
/// name at the top of a `{…}` group.
fn names_after(rest: &str) -> Vec<String> {
    let identifier = |text: &str| text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let Some(group) = rest.strip_prefix('{') else {
        return vec![identifier(rest)].into_iter().filter(|name| !name.is_empty()).collect();
    };
    let (mut names, mut depth, mut start) = (Vec::new(), 0, true);
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                start = false;
                names.push(identifier(&group[at..]));
            }
            _ => {}
        }
    }
    names.into_iter().filter(|name| !name.is_empty() && name != "self").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_of(edges: &[(&str, &str)]) -> Graph {
        let mut graph = Graph::new();
        for (from, to) in edges {
            graph.entry(from.to_string()).or_default().insert(to.to_string());
        }
        graph
    }

    #[test]
    fn every_arrow_between_the_crates_modules_runs_one_way() {
        let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
        assert!(graph["host"].contains("broker") && graph["retry"].contains("derivation"), "the graph is read: {graph:?}");
        if let Some(around) = circle(&graph) {
            panic!("these modules use each other in a circle: {}", around.join(" -> "));
        }
    }

    #[test]
    fn a_circle_is_found_and_named_however_long() {
        assert_eq!(circle(&graph_of(&[("a", "b"), ("b", "c")])), None);
        assert_eq!(circle(&graph_of(&[("a", "b"), ("b", "c"), ("c", "a")])), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    }

    #[test]
    fn grouped_uses_and_super_paths_name_their_top_modules() {
        let code = "use crate::{host::{self, x}, wrapper};\nlet y = super::super::store::invalid(&p);\nuse super::files;";
        let used = top_modules_used(code, &["retry".to_string(), "copy".to_string()]);
        assert_eq!(used, ["host", "retry", "store", "wrapper"].map(String::from).into_iter().collect());
    }

    #[test]
    fn comments_and_test_modules_are_not_code() {
        let code = code_of("use crate::a; // crate::b\n/// see [`crate::c`]\n#[cfg(test)]\nmod tests {\n use crate::d;\n}");
        assert_eq!(top_modules_used(&code, &["m".to_string()]), ["a"].map(String::from).into_iter().collect());
    }
}
