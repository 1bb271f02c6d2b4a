//! The README is a front page and `docs/` holds the rest: every relative
//! link in them leads to a file, every page is linked from the front page,
//! and its first screen holds the two commands and the four ways in. Needs
//! no test bed.

use std::path::{Path, PathBuf};

/// The checkout's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate is in the checkout").to_path_buf()
}

/// The README and every page in `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs")).unwrap().flatten().map(|entry| entry.path()).collect();
    pages.retain(|page| page.extension().is_some_and(|ext| ext == "md"));
    pages.sort();
    pages.insert(0, root().join("README.md"));
    pages
}

/// The targets of the Markdown links in `text`: `[words](target)`.
fn link_targets(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(at, _)| text[at + 2..].split_once(')').map(|(target, _)| target.to_string()))
        .filter(|target| !target.contains(char::is_whitespace))
        .collect()
}

/// Whether `target` leaves the checkout (a URL) or stays on the page.
fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with('#') || target.starts_with("mailto:")
}

#[test]
fn every_relative_link_in_the_readme_and_docs_leads_to_a_file() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in link_targets(&text).into_iter().filter(|target| !is_external(target)) {
            let file = target.split('#').next().unwrap_or_default();
            if !page.parent().unwrap().join(file).exists() {
                broken.push(format!("{}: {target}", page.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(broken.is_empty(), "links that lead nowhere: {broken:#?}");
}

#[test]
fn every_page_of_docs_is_linked_from_the_front_page() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let linked = link_targets(&readme);
    for page in pages().into_iter().skip(1) {
        let name = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        assert!(linked.contains(&name), "README.md does not link {name}");
    }
}

#[test]
fn the_first_screen_holds_the_two_commands_and_the_four_ways_in() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let first_screen: String = readme.lines().take(45).collect::<Vec<_>>().join("\n");
    for needed in ["tests/bed/demo", "tests/run", "**the hook**", "**the wrapper**", "**retry**", "**injection**"] {
        assert!(first_screen.contains(needed), "the README's first 45 lines lack {needed}");
    }
}

#[test]
fn a_link_is_read_with_its_target_and_urls_are_left_alone() {
    let targets = link_targets("see [a](docs/a.md) and [b](../SECURITY.md#x), [c](https://example.org) or (not a link)");
    assert_eq!(targets, ["docs/a.md", "../SECURITY.md#x", "https://example.org"]);
    assert!(is_external("https://example.org") && !is_external("../SECURITY.md#x"));
}
