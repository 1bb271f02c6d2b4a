//! Writes the rc file that turns a fresh bash into the build's shell.
//!
//! The hook leaves three files: functions and aliases (`declare -f`, `alias
//! -p`), variables (`declare -p`) and options (`set +o`, `shopt -p`, `umask
//! -p`). The rc file sources the functions and the build's own variables
//! (not those bash manages itself), replays the options except those that
//! would make an interactive shell unusable, enters the failure's directory
//! and, when interactive, prints the banner.

use std::path::Path;

/// `set -o` options left as the interactive shell has them: they are the
/// shell's line editing and job control, not the build's state.
const INTERACTIVE_OPTIONS: &[&str] = &["monitor", "emacs", "vi", "history", "interactive-comments"];
/// `shopt` options that cannot be set at all.
const FIXED_SHOPTS: &[&str] = &["login_shell", "restricted_shell"];
/// Variables that bash manages itself, or that belong to the attaching
/// terminal: they are not part of the build's state.
const SPECIAL_VARIABLES: &[&str] = &[
    "BASH",
    "BASHOPTS",
    "BASHPID",
    "BASH_ALIASES",
    "BASH_ARGC",
    "BASH_ARGV",
    "BASH_ARGV0",
    "BASH_CMDS",
    "BASH_COMMAND",
    "BASH_EXECUTION_STRING",
    "BASH_LINENO",
    "BASH_LOADABLES_PATH",
    "BASH_SOURCE",
    "BASH_SUBSHELL",
    "BASH_VERSINFO",
    "BASH_VERSION",
    "COLUMNS",
    "COMP_WORDBREAKS",
    "DIRSTACK",
    "EPOCHREALTIME",
    "EPOCHSECONDS",
    "EUID",
    "FUNCNAME",
    "GROUPS",
    "HISTCMD",
    "HOSTTYPE",
    "LINENO",
    "LINES",
    "MACHTYPE",
    "OSTYPE",
    "PIPESTATUS",
    "PPID",
    "PWD",
    "RANDOM",
    "SECONDS",
    "SHELLOPTS",
    "SHLVL",
    "SRANDOM",
    "TERM",
    "UID",
    "_",
];
/// The hook's own variables.
const HOOK_PREFIX: &str = "__nixAttach";
/// The environment variable that brings a session the directories its PATH
/// starts with (`--with`); the rc file applies it after the build's PATH,
/// for that session only, and unsets it.
pub const WITH_PATH: &str = "__nixAttachWithPath";

/// Keeps the `declare -p` entries of the build's own variables. An entry
/// starts with `declare -FLAGS NAME`; bash 5.2 quotes newlines in values,
/// and lines of older bashes that do not start an entry belong to the one
/// before.
pub fn build_variables(declared: &str) -> String {
    let mut kept = String::with_capacity(declared.len());
    let mut keep = false;
    for line in declared.split_inclusive('\n') {
        if let Some(name) = declared_name(line) {
            keep = !SPECIAL_VARIABLES.contains(&name) && !name.starts_with(HOOK_PREFIX);
        }
        if keep {
            kept.push_str(line);
        }
    }
    kept
}

/// The variable a `declare -p` line starts, if it starts one.
fn declared_name(line: &str) -> Option<&str> {
    let (flags, rest) = line.strip_prefix("declare -")?.split_once(' ')?;
    let end = rest.find(['=', '\n']).unwrap_or(rest.len());
    let name = &rest[..end];
    let is_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (flags.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') && is_name).then_some(name)
}

/// The build's options as the rc file replays them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `set`, `shopt` and `umask` lines that are replayed as they are.
    lines: Vec<String>,
    /// errexit was on: it is replayed only for non-interactive use.
    errexit: bool,
}

impl Options {
    /// Keeps the option lines bash printed that can be replayed.
    pub fn parse(text: &str) -> Options {
        let mut options = Options::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["set", "-o", "errexit"] => options.errexit = true,
                ["set", "+o", "errexit"] => {}
                ["set", "-o" | "+o", name] if INTERACTIVE_OPTIONS.contains(name) => {}
                ["set", "-o" | "+o", name] if is_word(name) => options.lines.push(line.to_string()),
                ["shopt", _, name] if FIXED_SHOPTS.contains(name) => {}
                ["shopt", "-s" | "-u", name] if is_word(name) => options.lines.push(line.to_string()),
                ["umask", mask] if is_mask(mask) => options.lines.push(line.to_string()),
                _ => {}
            }
        }
        options
    }

    /// The options the build had that an interactive session leaves off.
    pub fn left_out(&self) -> Vec<String> {
        if self.errexit {
            vec!["errexit".to_string()]
        } else {
            Vec::new()
        }
    }
}

/// What the rc file is made from.
pub struct RestoreInput<'a> {
    /// Functions and aliases.
    pub state_file: &'a Path,
    /// The build's own variables.
    pub variables_file: &'a Path,
    /// nix-attach's own command inside the session ([`super::commands`]).
    pub commands_file: &'a Path,
    pub options: &'a Options,
    pub cwd: &'a Path,
    pub history_file: &'a Path,
    pub prompt_label: &'a str,
    pub banner: &'a [String],
}

/// Quotes `text` for bash as one word.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Renders the rc file.
pub fn render(input: &RestoreInput) -> String {
    let mut script = String::from("# Written by nix-attach: restores the failed build's shell state.\n");
    script += &format!("source {}\n", quote(&input.state_file.to_string_lossy()));
    script += &format!("source {}\n", quote(&input.variables_file.to_string_lossy()));
    // The build's aliases are defined by now: none may rewrite our function.
    script += &format!(
        "if shopt -q expand_aliases; then shopt -u expand_aliases; source {0}; shopt -s expand_aliases; else source {0}; fi\n",
        quote(&input.commands_file.to_string_lossy())
    );
    for line in &input.options.lines {
        script += line;
        script.push('\n');
    }
    // The build's own PATH is kept for `nix-attach rerun` and `resume`.
    script += &format!(
        "if [ -n \"${{{WITH_PATH}-}}\" ]; then __nix_attach_build_path=$PATH; PATH=\"${WITH_PATH}${{PATH:+:$PATH}}\"; fi; unset {WITH_PATH}\n"
    );
    let cwd = quote(&input.cwd.to_string_lossy());
    script += &format!("cd -- {cwd} || printf 'nix-attach: cannot enter %s\\n' {cwd} >&2\n");
    script += "if [[ $- == *i* ]]; then\n";
    script += &format!("  HISTFILE={}\n", quote(&input.history_file.to_string_lossy()));
    script += &format!("  PS1={}\n", quote(&format!("(nix-attach {}) \\w \\$ ", input.prompt_label)));
    for line in input.banner {
        script += &format!("  printf '%s\\n' {}\n", quote(line));
    }
    if input.options.errexit {
        script += "else\n  set -o errexit\n";
    }
    script += "fi\n";
    script
}

fn is_word(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-')
}

fn is_mask(mask: &str) -> bool {
    (3..=4).contains(&mask.len()) && mask.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_with(options: &str) -> String {
        render(&RestoreInput {
            state_file: Path::new("/build/.nix-attach-state"),
            variables_file: Path::new("/build/.nix-attach/variables.sh"),
            commands_file: Path::new("/build/.nix-attach/commands.sh"),
            options: &Options::parse(options),
            cwd: Path::new("/build/it's here"),
            history_file: Path::new("/build/.nix-attach/history"),
            prompt_label: "hello:buildPhase",
            banner: &["line one".to_string()],
        })
    }

    #[test]
    fn only_the_builds_own_variables_are_kept() {
        let declared = "declare -- BASH=\"/bin/bash\"\ndeclare -ar BASH_VERSINFO=([0]=\"5\")\n\
                        declare -x out=\"/nix/store/x\"\ndeclare -a arr=([0]=$'a\\nb')\ndeclare -- __nixAttachLast=\"1\"\n\
                        declare -- old=\"line one\nline two\"\ndeclare -i n=\"3\"\ndeclare -- unset\n";
        assert_eq!(
            build_variables(declared),
            "declare -x out=\"/nix/store/x\"\ndeclare -a arr=([0]=$'a\\nb')\n\
             declare -- old=\"line one\nline two\"\ndeclare -i n=\"3\"\ndeclare -- unset\n"
        );
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn errexit_is_replayed_only_when_not_interactive() {
        let script = render_with("set -o errexit\nset -o nounset\n");
        assert!(script.contains("else\n  set -o errexit\n"));
        assert!(script.contains("set -o nounset\n"));
        assert_eq!(Options::parse("set -o errexit\n").left_out(), vec!["errexit".to_string()]);
        assert!(Options::parse("set +o errexit\n").left_out().is_empty());
    }

    #[test]
    fn interactive_options_and_fixed_shopts_are_not_replayed() {
        let script = render_with("set +o monitor\nset +o emacs\nshopt -u login_shell\nshopt -s extglob\n");
        assert!(!script.contains("monitor"));
        assert!(!script.contains("emacs"));
        assert!(!script.contains("login_shell"));
        assert!(script.contains("shopt -s extglob\n"));
    }

    #[test]
    fn umask_and_directory_are_restored() {
        let script = render_with("umask 0027\n");
        assert!(script.contains("umask 0027\n"));
        assert!(script.contains(r"cd -- '/build/it'\''s here'"));
    }

    #[test]
    fn lines_that_are_not_options_are_dropped() {
        let script = render_with("rm -rf /\nset -o $(evil)\numask 99999\n");
        assert!(!script.contains("rm -rf"));
        assert!(!script.contains("evil"));
        assert!(!script.contains("99999"));
    }
}
