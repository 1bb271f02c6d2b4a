//! How the attach hook gets into a derivation's copy, by what runs the
//! build:
//! - nixpkgs' stdenv (a bash builder with a `stdenv` attribute): `preHook`
//!   sources the hook first, then does what it did. The stdenv runs it
//!   before any phase, so a failure pauses with everything restored.
//! - any other bash builder: `retry-builder.sh` is sourced first, in the
//!   same shell as the builder's own script.
//! - any other builder: a bash from the inputs runs it as a child, so a
//!   failure pauses with the environment and the build directory only.

use super::copy::Attributes;
use crate::derivation::{is_bash, Derivation};
use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CarrierError {
    #[error("its builder {0} is built into Nix; nothing can run before it")]
    Builtin(String),
    #[error("its builder {0} is not bash and none of its inputs holds a bash to run it from")]
    NoShell(String),
    #[error("its bash builder {0} is given no script (arguments {1:?})")]
    NoScript(String, Vec<String>),
    #[error("its `preHook` is not a string")]
    PreHook,
}

/// What runs the build, and so how the hook gets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carrier {
    Stdenv,
    Bash,
    /// Run as a child of this bash.
    Child(String),
}

impl Carrier {
    /// Chooses for `drv`, whose `inputs` are valid store paths.
    pub fn choose(drv: &Derivation, attributes: &Attributes, inputs: &[String]) -> Result<Carrier, CarrierError> {
        if drv.builder.starts_with("builtin:") {
            return Err(CarrierError::Builtin(drv.builder.clone()));
        }
        if drv.runs_bash() {
            return Ok(if attributes.get("stdenv").is_ok_and(|stdenv| stdenv.is_some()) { Carrier::Stdenv } else { Carrier::Bash });
        }
        let bash = inputs.iter().find_map(|input| bash_in(Path::new(input)));
        bash.map(Carrier::Child).ok_or_else(|| CarrierError::NoShell(drv.builder.clone()))
    }

    /// What a session in the paused copy has, in a few words.
    pub fn restores(&self) -> &'static str {
        match self {
            Carrier::Stdenv => "the shell as the stdenv left it, the failing phase's locals included",
            Carrier::Bash => {
                "the builder's shell: its variables, functions, options and working directory \
                 (a failing function's locals only where errexit ended it)"
            }
            Carrier::Child(_) => "the build's environment and directory only; the builder is not bash, so its own state is not restored",
        }
    }

    /// Puts the hook, from `assets` (a store path holding `attach-hook.sh`
    /// and `retry-builder.sh`), into the copy's builder, arguments or
    /// attributes.
    pub fn apply(&self, assets: &str, drv: &mut Derivation, attributes: &mut Attributes) -> Result<(), CarrierError> {
        let prelude = format!("source {assets}/retry-builder.sh");
        match self {
            Carrier::Stdenv => {
                let before = attributes.get("preHook").map_err(|_| CarrierError::PreHook)?.unwrap_or_default();
                attributes.set("preHook", format!("source {assets}/attach-hook.sh\n{before}"));
            }
            Carrier::Bash => drv.args = bash_args(&drv.builder, &drv.args, &prelude)?,
            Carrier::Child(bash) => {
                let mut args = vec!["-c".to_string(), format!("{prelude}\nnixAttachRunBuilder \"$0\" \"$@\""), drv.builder.clone()];
                args.append(&mut drv.args);
                drv.args = args;
                drv.builder = bash.clone();
                attributes.set("builder", bash.clone());
            }
        }
        Ok(())
    }
}

/// A bash in the input `input`: its `bin/bash`, or the input itself.
fn bash_in(input: &Path) -> Option<String> {
    let inside = input.join("bin/bash");
    if inside.is_file() {
        return Some(inside.to_string_lossy().into_owned());
    }
    (is_bash(&input.to_string_lossy()) && input.is_file()).then(|| input.to_string_lossy().into_owned())
}

/// Bash's long options that take the next argument as their value.
const LONG_WITH_VALUE: [&str; 2] = ["--rcfile", "--init-file"];

/// Bash's arguments with `prelude` run first, in the same shell: the
/// options stay, a `-c` script gets the prelude in front, and a script
/// file is sourced after it (with `$0` and the arguments it had).
fn bash_args(builder: &str, args: &[String], prelude: &str) -> Result<Vec<String>, CarrierError> {
    let mut options = Vec::new();
    let mut command = false;
    let mut rest = args.iter();
    let mut ended = false;
    while let Some(arg) = rest.next() {
        // After `--`, the next argument is the script whatever it reads.
        if arg == "--" && !ended {
            ended = true;
            continue;
        }
        let short = arg.len() > 1 && (arg.starts_with('-') || arg.starts_with('+')) && !arg.starts_with("--");
        if !ended && (arg.starts_with("--") || short) {
            options.push(arg.clone());
            command |= short && arg[1..].contains('c');
            // `-o NAME`, `-O NAME` and `--rcfile FILE` take the next argument.
            if (short && (arg.ends_with('o') || arg.ends_with('O'))) || LONG_WITH_VALUE.contains(&arg.as_str()) {
                options.extend(rest.next().cloned());
            }
            continue;
        }
        let mut out = options;
        if command {
            out.push(format!("{prelude}\n{arg}"));
        } else {
            out.push("-c".to_string());
            out.push(format!("{prelude}\nsource \"$0\" \"$@\""));
            out.push(arg.clone());
        }
        out.extend(rest.cloned());
        return Ok(out);
    }
    Err(CarrierError::NoScript(builder.to_string(), args.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn a_script_file_is_sourced_after_the_prelude_with_its_options_and_arguments() {
        let args = bash_args("bash", &strings(&["-e", "-o", "pipefail", "/b.sh", "x"]), "P").unwrap();
        assert_eq!(args, strings(&["-e", "-o", "pipefail", "-c", "P\nsource \"$0\" \"$@\"", "/b.sh", "x"]));
    }

    #[test]
    fn a_command_string_gets_the_prelude_in_front() {
        let args = bash_args("bash", &strings(&["-ec", "exit 3", "name", "x"]), "P").unwrap();
        assert_eq!(args, strings(&["-ec", "P\nexit 3", "name", "x"]));
    }

    #[test]
    fn after_double_dash_the_script_comes_whatever_it_reads_and_rcfile_takes_its_value() {
        let args = bash_args("bash", &strings(&["--rcfile", "/r", "-e", "--", "-odd.sh", "x"]), "P").unwrap();
        assert_eq!(args, strings(&["--rcfile", "/r", "-e", "-c", "P\nsource \"$0\" \"$@\"", "-odd.sh", "x"]));
    }

    #[test]
    fn bash_without_a_script_is_refused() {
        assert!(matches!(bash_args("bash", &strings(&["-e"]), "P"), Err(CarrierError::NoScript(..))));
    }

    #[test]
    fn a_builtin_builder_cannot_carry_the_hook() {
        let drv = Derivation { builder: "builtin:fetchurl".into(), ..Derivation::default() };
        let attributes = Attributes::Environment(Default::default());
        assert_eq!(Carrier::choose(&drv, &attributes, &[]), Err(CarrierError::Builtin("builtin:fetchurl".into())));
    }
}
