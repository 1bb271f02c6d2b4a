//! Writes a derivation back as a Nix expression: `derivation { … }` with
//! the same attributes, so that `nix-instantiate` makes its copy on any
//! Nix (2.8 has no `nix derivation add`).
//!
//! A string in a `.drv` file has lost its context, so each store path in
//! it is written back as an interpolation that carries one: an input as
//! `builtins.storePath` (valid in the store, since the failed build had
//! it), one of the derivation's own outputs as `builtins.placeholder`
//! (the copy's outputs are its own). Any other text, other store paths
//! included, is written as it is.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// The length of a store path's hash part.
const HASH_LENGTH: usize = 32;
/// The characters of Nix's base-32.
const BASE32: &str = "0123456789abcdfghijklmnpqrsvwxyz";

/// What a store path in the derivation's text stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reference {
    Input,
    Output(String),
}

/// The store paths that get context, by their hash part.
#[derive(Debug, Default)]
pub struct Paths {
    store_dir: String,
    known: HashMap<String, (String, Reference)>,
}

impl Paths {
    /// Paths in `store_dir` (`/nix/store`).
    pub fn new(store_dir: &str) -> Paths {
        Paths { store_dir: format!("{}/", store_dir.trim_end_matches('/')), known: HashMap::new() }
    }

    /// `path` is an input: it is referred to through `builtins.storePath`.
    pub fn input(&mut self, path: &str) {
        self.add(path, Reference::Input);
    }

    /// `path` is the derivation's output `name`: the copy's own output is
    /// referred to instead.
    pub fn output(&mut self, name: &str, path: &str) {
        self.add(path, Reference::Output(name.to_string()));
    }

    fn add(&mut self, path: &str, reference: Reference) {
        if let Some(hash) = path.strip_prefix(&self.store_dir).and_then(|rest| rest.get(..HASH_LENGTH)) {
            self.known.insert(hash.to_string(), (path.to_string(), reference));
        }
    }

    /// The known store path that `text` starts with, if any.
    fn at_start(&self, text: &str) -> Option<(&str, &Reference)> {
        let rest = text.strip_prefix(&self.store_dir)?;
        let hash = rest.get(..HASH_LENGTH)?;
        if !hash.chars().all(|c| BASE32.contains(c)) {
            return None;
        }
        let (path, reference) = self.known.get(hash)?;
        let after = text.get(path.len()..)?;
        let whole = text.starts_with(path.as_str()) && !after.starts_with(is_name_char);
        whole.then_some((path.as_str(), reference))
    }
}

/// Whether `c` may be part of a store path's name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+-._?=".contains(c)
}

/// A Nix string literal with the value `text`, its store paths carrying
/// their context.
pub fn string(text: &str, paths: &Paths) -> String {
    let mut out = String::from("\"");
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some((path, reference)) = paths.at_start(rest) {
            match reference {
                Reference::Input => write!(out, "${{builtins.storePath {}}}", plain(path)),
                Reference::Output(name) => write!(out, "${{builtins.placeholder {}}}", plain(name)),
            }
            .expect("writing to a String");
            rest = &rest[path.len()..];
            continue;
        }
        escape_into(&mut out, c);
        rest = &rest[c.len_utf8()..];
    }
    out.push('"');
    out
}

/// A Nix string literal without context.
fn plain(text: &str) -> String {
    let mut out = String::from("\"");
    text.chars().for_each(|c| escape_into(&mut out, c));
    out.push('"');
    out
}

fn escape_into(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '$' => out.push_str("\\$"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.push(c),
    }
}

/// The Nix value of a JSON value (structured attributes), its strings
/// carrying their context.
pub fn json(value: &serde_json::Value, paths: &Paths) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(yes) => yes.to_string(),
        Value::Number(number) => self::number(number),
        Value::String(text) => string(text, paths),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|item| json(item, paths)).collect();
            format!("[ {} ]", items.join(" "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields.iter().map(|(key, value)| format!("{} = {};", plain(key), json(value, paths))).collect();
            format!("{{ {} }}", fields.join(" "))
        }
    }
}

/// A JSON number as Nix reads it: in parentheses, as a negative number in
/// a list would be read as an operator, and a float's exponent after a
/// `.` (Nix reads `1e21` as `1` and a name).
fn number(number: &serde_json::Number) -> String {
    let text = number.to_string();
    match text.find(['e', 'E']) {
        Some(at) if !text[..at].contains('.') => format!("({}.0{})", &text[..at], &text[at..]),
        _ => format!("({text})"),
    }
}

/// `text` carrying the context of each of `inputs` too: every input
/// stays an input of the copy, also one that no attribute's text names
/// (its context came through an empty substring, or a `drvPath`).
pub fn with_inputs(text: String, inputs: &[String]) -> String {
    let carriers: Vec<String> =
        inputs.iter().map(|input| format!("builtins.substring 0 0 (builtins.storePath {})", plain(input))).collect();
    if carriers.is_empty() {
        return text;
    }
    format!("({} + {text})", carriers.join(" + "))
}

/// The attributes of a derivation, as Nix values already written.
pub type Attributes = BTreeMap<String, String>;

/// `derivation { … }` with `attributes`.
pub fn derivation(attributes: &Attributes) -> String {
    let mut out = String::from("derivation {\n");
    for (key, value) in attributes {
        writeln!(out, "  {} = {};", plain(key), value).expect("writing to a String");
    }
    out.push_str("}\n");
    out
}

/// A Nix list of strings.
pub fn list(items: &[String], paths: &Paths) -> String {
    let items: Vec<String> = items.iter().map(|item| string(item, paths)).collect();
    format!("[ {} ]", items.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = "/nix/store/0c7ll2ipdhhljd8f3jzbmq6h7hxks2iw-bash-5.2";
    const OUT: &str = "/nix/store/1n9bqfa5m3ajl07gp5fxpg1fb6yx4g0z-hello-2.12";

    fn paths() -> Paths {
        let mut paths = Paths::new("/nix/store");
        paths.input(INPUT);
        paths.output("out", OUT);
        paths
    }

    #[test]
    fn inputs_and_outputs_in_a_string_get_their_context_and_the_rest_stays_text() {
        let text = format!("PATH={INPUT}/bin:{OUT}/bin; echo \"$HOME\" \\ ${{x}}");
        assert_eq!(
            string(&text, &paths()),
            format!(
                "\"PATH=${{builtins.storePath \"{INPUT}\"}}/bin:${{builtins.placeholder \"out\"}}/bin; echo \\\"\\$HOME\\\" \\\\ \\${{x}}\""
            )
        );
    }

    #[test]
    fn an_unknown_store_path_or_a_longer_name_is_left_as_text() {
        let other = "/nix/store/2c7ll2ipdhhljd8f3jzbmq6h7hxks2iw-other";
        assert_eq!(string(other, &paths()), format!("\"{other}\""));
        let longer = format!("{INPUT}-doc");
        assert_eq!(string(&longer, &paths()), format!("\"{longer}\""));
    }

    #[test]
    fn numbers_are_written_as_nix_reads_them() {
        let value = serde_json::json!([-1, 1e21, 1.5e-7, 2.5]);
        assert_eq!(json(&value, &paths()), "[ (-1) (1.0e+21) (1.5e-7) (2.5) ]");
    }

    #[test]
    fn line_breaks_and_tabs_are_escaped() {
        assert_eq!(string("a\nb\tc\r", &paths()), "\"a\\nb\\tc\\r\"");
    }

    #[test]
    fn structured_attributes_keep_their_types() {
        let value = serde_json::json!({ "a b": [1, 2.5, true, null], "src": INPUT });
        assert_eq!(
            json(&value, &paths()),
            format!("{{ \"a b\" = [ (1) (2.5) true null ]; \"src\" = \"${{builtins.storePath \"{INPUT}\"}}\"; }}")
        );
    }
}
