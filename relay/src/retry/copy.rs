//! A derivation's copy: its attributes read back from the `.drv` file,
//! changed only to carry the hook, and written as the Nix expression that
//! makes the copy.
//!
//! The attributes are the builder's environment, or, with
//! `__structuredAttrs`, the JSON object Nix keeps in `__json`. Either way
//! the output paths are left out: Nix computes the copy's own. Everything
//! else, `passAsFile` and a fixed output's hash included, is kept as it
//! is, so the copy builds the same way.
//!
//! What Nix's `derivation` (`derivationStrict`, the same in 2.8 and 2.34)
//! makes of each attribute, and so how the copy writes it back:
//! - [`BOOLEANS`] are read as Booleans. `__structuredAttrs` is stored as
//!   `""` when false (when true, the attributes become `__json`); the
//!   others are consumed and never stored. One found in an environment is
//!   written back as the Boolean it was stored from: `""` as `false`,
//!   `"1"` as `true`.
//! - `args` is consumed: it is the builder's arguments, written back from
//!   them.
//! - `outputs` is a list, stored joined by spaces: split again.
//! - `__json` holds the structured attributes, which keep their JSON types.
//! - Every other attribute, `builder`, `system` and `outputHash*` included,
//!   is a string as it is stored (a list joined by spaces, a number in
//!   decimal, `true` as `"1"`), and means the same written back so.

use super::expression::{self, Paths};
use crate::derivation::Derivation;
use std::collections::BTreeMap;

/// The attributes `derivation` reads as Booleans.
pub const BOOLEANS: [&str; 4] = ["__structuredAttrs", "__ignoreNulls", "__contentAddressed", "__impure"];

/// How `derivation` stores a Boolean: `true` as `"1"`, `false` as `""`.
fn stored_boolean(value: &str) -> Option<bool> {
    match value {
        "1" => Some(true),
        "" => Some(false),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("its attribute {key} is {value:?}, where `derivation` reads a Boolean (stored as \"\" or \"1\"); the .drv was not made by `derivation`")]
    NotABoolean { key: String, value: String },
    #[error("its output {0} is content-addressed with no path yet (ca-derivations), which retry does not copy")]
    Floating(String),
    #[error("its structured attributes (`__json`) are not a JSON object")]
    StructuredAttrs(#[source] serde_json::Error),
}

/// A derivation's attributes, without its output paths.
#[derive(Debug, Clone, PartialEq)]
pub enum Attributes {
    Environment(BTreeMap<String, String>),
    Structured(serde_json::Map<String, serde_json::Value>),
}

/// An attribute that is there but not a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAString;

impl Attributes {
    /// The attributes of `drv`.
    pub fn of(drv: &Derivation) -> Result<Attributes, CopyError> {
        if let Some((name, _)) = drv.outputs.iter().find(|(_, path)| path.is_empty()) {
            return Err(CopyError::Floating(name.clone()));
        }
        if let Some(json) = drv.env.get("__json") {
            return serde_json::from_str(json).map(Attributes::Structured).map_err(CopyError::StructuredAttrs);
        }
        let env: BTreeMap<String, String> =
            drv.env.iter().filter(|(key, _)| !drv.outputs.contains_key(*key)).map(|(key, value)| (key.clone(), value.clone())).collect();
        for key in BOOLEANS {
            if let Some(value) = env.get(key).filter(|value| stored_boolean(value).is_none()) {
                return Err(CopyError::NotABoolean { key: key.to_string(), value: value.clone() });
            }
        }
        Ok(Attributes::Environment(env))
    }

    /// The string attribute `key`, if there is one.
    pub fn get(&self, key: &str) -> Result<Option<String>, NotAString> {
        match self {
            Attributes::Environment(env) => Ok(env.get(key).cloned()),
            Attributes::Structured(fields) => match fields.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
                Some(_) => Err(NotAString),
            },
        }
    }

    /// Sets the string attribute `key`.
    pub fn set(&mut self, key: &str, value: String) {
        match self {
            Attributes::Environment(env) => {
                env.insert(key.to_string(), value);
            }
            Attributes::Structured(fields) => {
                fields.insert(key.to_string(), serde_json::Value::String(value));
            }
        }
    }
}

/// The expression of `drv`'s copy with `attributes` (the builder and the
/// arguments are `drv`'s), whose `builder` carries the context of every
/// one of `inputs`.
pub fn expression(drv: &Derivation, attributes: &Attributes, paths: &Paths, inputs: &[String]) -> String {
    let mut written = expression::Attributes::new();
    match attributes {
        Attributes::Environment(env) => {
            for (key, value) in env {
                let boolean = BOOLEANS.contains(&key.as_str()).then(|| stored_boolean(value)).flatten();
                let value = boolean.map_or_else(|| expression::string(value, paths), |yes| yes.to_string());
                written.insert(key.clone(), value);
            }
            // `derivation` takes the output names as a list, in their
            // order; the environment has them joined.
            let joined = env.get("outputs").cloned().unwrap_or_else(|| "out".to_string());
            let outputs: Vec<String> = joined.split_whitespace().map(String::from).collect();
            written.insert("outputs".to_string(), expression::list(&outputs, paths));
        }
        Attributes::Structured(fields) => {
            written.insert("__structuredAttrs".to_string(), "true".to_string());
            for (key, value) in fields {
                written.insert(key.clone(), expression::json(value, paths));
            }
        }
    }
    written.insert("args".to_string(), expression::list(&drv.args, paths));
    if let Some(builder) = written.remove("builder") {
        written.insert("builder".to_string(), expression::with_inputs(builder, inputs));
    }
    expression::derivation(&written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drv(env: &[(&str, &str)]) -> Derivation {
        Derivation {
            outputs: [("out".to_string(), "/nix/store/1n9bqfa5m3ajl07gp5fxpg1fb6yx4g0z-x".to_string())].into(),
            builder: "/bin/bash".into(),
            args: vec!["-e".into(), "b.sh".into()],
            env: env.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
            ..Derivation::default()
        }
    }

    #[test]
    fn the_output_paths_are_left_for_nix_to_compute() {
        let drv = drv(&[("name", "x"), ("out", "/nix/store/1n9bqfa5m3ajl07gp5fxpg1fb6yx4g0z-x"), ("passAsFile", "text")]);
        let Attributes::Environment(env) = Attributes::of(&drv).unwrap() else { panic!("not an environment") };
        assert_eq!(env.keys().collect::<Vec<_>>(), ["name", "passAsFile"]);
    }

    #[test]
    fn structured_attributes_come_from_the_json_and_say_so() {
        let drv = drv(&[("__json", r#"{"name":"x","outputs":["out"],"n":3}"#), ("out", "/nix/store/1n9bqfa5m3ajl07gp5fxpg1fb6yx4g0z-x")]);
        let attributes = Attributes::of(&drv).unwrap();
        let text = expression(&drv, &attributes, &Paths::new("/nix/store"), &[]);
        assert!(text.contains("\"__structuredAttrs\" = true;"), "{text}");
        assert!(text.contains("\"outputs\" = [ \"out\" ];") && text.contains("\"n\" = (3);"), "{text}");
        assert!(text.contains("\"args\" = [ \"-e\" \"b.sh\" ];"), "{text}");
    }

    #[test]
    fn booleans_that_derivation_stored_as_strings_are_written_back_as_booleans() {
        let drv = drv(&[("__structuredAttrs", ""), ("__ignoreNulls", "1"), ("doCheck", ""), ("strictDeps", "1")]);
        let text = expression(&drv, &Attributes::of(&drv).unwrap(), &Paths::new("/nix/store"), &[]);
        assert!(text.contains("\"__structuredAttrs\" = false;") && text.contains("\"__ignoreNulls\" = true;"), "{text}");
        // Attributes the builder reads as strings stay strings.
        assert!(text.contains("\"doCheck\" = \"\";") && text.contains("\"strictDeps\" = \"1\";"), "{text}");
    }

    #[test]
    fn a_boolean_attribute_that_derivation_could_not_have_stored_is_refused() {
        let drv = drv(&[("__impure", "yes")]);
        assert!(matches!(Attributes::of(&drv), Err(CopyError::NotABoolean { key, .. }) if key == "__impure"));
    }

    #[test]
    fn a_floating_output_is_refused() {
        let mut drv = drv(&[]);
        drv.outputs.insert("out".into(), String::new());
        assert!(matches!(Attributes::of(&drv), Err(CopyError::Floating(_))));
    }
}
