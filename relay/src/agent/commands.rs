//! `nix-attach` inside a session: `status`, `rerun`, `resume` and `diff`
//! ([`super::source_diff`] compares the trees), as a
//! bash function the rc file defines (`session-commands.sh`), with this
//! build's failure filled in. A function, not a program: `rerun` and
//! `resume` run the build's own code in the session's shell state.

use super::restore::quote;
use crate::metadata::Metadata;
use std::path::Path;

/// The function's text, with `@…@` for this build's values.
const TEMPLATE: &str = include_str!("session-commands.sh");

/// The commands' file for the build that failed as `meta` says, whose
/// failure's directory is `cwd`; `agent` is this program inside the
/// sandbox and `state_dir` the agent's state directory.
pub fn render(meta: &Metadata, cwd: &Path, agent: &Path, state_dir: &Path) -> String {
    let stack = meta.stack.join(" < ");
    let values = [
        ("@agent@", agent.to_string_lossy().into_owned()),
        ("@state@", state_dir.to_string_lossy().into_owned()),
        ("@name@", meta.drv.clone()),
        ("@phase@", meta.phase.clone()),
        ("@exitCode@", meta.exit_code.to_string()),
        ("@command@", meta.command.clone()),
        ("@cwd@", cwd.to_string_lossy().into_owned()),
        ("@stack@", stack),
        ("@paused@", paused_now()),
    ];
    fill(TEMPLATE, &values)
}

/// Now, as `diff` reads a pause time: later writes are the session's.
fn paused_now() -> String {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", since.as_secs(), since.subsec_nanos())
}

/// `template` with each `@name@` of `values` replaced by its value, quoted,
/// in one pass: a value is never read as a name.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut text = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('@') {
        text.push_str(&rest[..at]);
        rest = &rest[at..];
        match values.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, value)) => {
                text.push_str(&quote(value));
                rest = &rest[name.len()..];
            }
            None => {
                text.push('@');
                rest = &rest[1..];
            }
        }
    }
    text.push_str(rest);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands for a build that failed in buildPhase with `command`,
    /// then `script`, run by bash; its stdout and stderr, and status.
    fn run_in_bash(command: &str, script: &str) -> (String, i32) {
        let mut meta = metadata();
        meta.command = command.into();
        let commands = render(&meta, Path::new("/"), Path::new("/bin/false"), Path::new("/nonexistent"));
        let out = std::process::Command::new("bash").args(["-c", &format!("{commands}\n{script}")]).output().unwrap();
        (String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr), out.status.code().unwrap_or(-1))
    }

    #[test]
    fn a_function_that_failed_through_return_is_run_again_as_its_phase_with_errexit() {
        let phase = r#"buildPhase='check() { echo checking; return 1; }; check; echo after'"#;
        let (said, status) = run_in_bash("return 1", &format!("{phase}\nnix-attach rerun"));
        assert_eq!(status, 1, "{said}");
        assert!(said.contains("checking") && !said.contains("after"), "it stops where the builder stopped: {said}");
    }

    #[test]
    fn resume_says_the_build_would_pass_only_when_every_output_was_made() {
        let dir = std::env::temp_dir().join(format!("nix-attach-outputs-{}", std::process::id()));
        let setup =
            format!("outputs='out dev'; out={0}/out; dev={0}/dev; phases=installPhase; installPhase='mkdir -p $out'", dir.display());
        let (said, status) = run_in_bash("false", &format!("{setup}\nnix-attach resume installPhase"));
        assert_eq!(status, 1, "{said}");
        assert!(said.contains("passed, but the build made no output dev: Nix would fail it"), "{said}");
        let (said, status) = run_in_bash("false", &format!("{setup}\ninstallPhase='mkdir -p $out $dev'; nix-attach resume installPhase"));
        assert_eq!(status, 0, "{said}");
        assert!(said.contains("the build would pass"), "{said}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn in_a_condition_where_bash_ignores_errexit_the_commands_refuse() {
        let (said, status) = run_in_bash("false", "if nix-attach rerun; then echo passed; fi; nix-attach resume || echo refused");
        assert!(!said.contains("passed") && said.contains("refused"), "{said}");
        assert_eq!(said.matches("run it as a command of its own").count(), 2, "{said}");
        assert_eq!(status, 0);
    }

    fn metadata() -> Metadata {
        Metadata {
            version: crate::protocol::VERSION,
            id: "4f2a9c0e11d3".into(),
            drv: "hello-2.12".into(),
            phase: "buildPhase".into(),
            exit_code: 2,
            command: "make -j2 'x' @stack@".into(),
            stack: vec!["buildPhase".into(), "genericBuild".into()],
            locals: true,
            since: 0,
            timeout: 1800,
            max_pause: 14400,
            build_top: "/build".into(),
            hostname: "localhost".into(),
        }
    }

    #[test]
    fn every_value_is_filled_in_as_one_quoted_word() {
        let mut meta = metadata();
        meta.command = "make -j2 'x' @stack@".into();
        let text = render(&meta, Path::new("/build/src"), Path::new("/nix/store/x/bin/nix-attach"), Path::new("/build/.nix-attach"));
        assert!(!text.contains("=@"), "a value is left unfilled: {text}");
        assert!(text.contains(r"__nix_attach_command='make -j2 '\''x'\'' @stack@'"), "{text}");
        assert!(text.contains("__nix_attach_stack='buildPhase < genericBuild'"), "{text}");
        assert!(text.contains("__nix_attach_name='hello-2.12'"), "{text}");
    }
}
