//! A failing build pauses, `list` shows it, and `exec` sees the shell state
//! exactly as it was at the failure.

use crate::support::{alive, eval, exec, nix_attach_with_input, release, Drv};
use std::path::Path;

/// The failing phase: it sets every kind of state, then a command fails.
const STATE_PHASE: &str = r#"
myHelper() { echo "helper says $1"; }
exportedTricky=$'spaces and\nnewline "dq" \'sq\' $dollar \\back ünïcödé'
export exportedTricky
notExported=$'tab\there $x \\'
emptyValue=
local localVar="phase local"
declare -a localArray=(one "two words")
declare -a gappy=([0]=a [5]=f [9]="")
declare -A assoc=(["key with spaces"]=1 ["*"]=star ['$(x)']=dollar [$'new\nline']=nl)
declare -i counter=41
counter+=1
declare -r frozen="ice"
mkdir -p src/deeper && cd src/deeper
umask 0027
echo "before the failure"
sh -c 'exit 3'
echo "not reached"
"#;

/// (what is checked, bash code run by `exec -- eval`, its exact stdout)
const CASES: &[(&str, &str, &str)] = &[
    (
        "an exported value with spaces, a newline, quotes, $, a backslash and non-ASCII",
        r#"printf %s "$exportedTricky""#,
        "spaces and\nnewline \"dq\" 'sq' $dollar \\back ünïcödé",
    ),
    ("it stays exported", "declare -p exportedTricky | cut -c1-11", "declare -x \n"),
    ("an unexported value", r#"printf %s "$notExported""#, "tab\there $x \\"),
    ("it stays unexported", "declare -p notExported | cut -c1-11", "declare -- \n"),
    ("an empty string is set, not unset", r#"printf '[%s]' "${emptyValue-unset}""#, "[]"),
    ("a local of the failing phase", r#"printf %s "$localVar""#, "phase local"),
    ("an array declared in the failing phase", r#"printf '%s|' "${localArray[@]}""#, "one|two words|"),
    ("an indexed array with gaps", "declare -p gappy", "declare -a gappy=([0]=\"a\" [5]=\"f\" [9]=\"\")\n"),
    (
        "an associative array with awkward keys",
        r#"printf '%s|' "${assoc["key with spaces"]}" "${assoc["*"]}" "${assoc['$(x)']}" "${assoc[$'new\nline']}" "${#assoc[@]}""#,
        "1|star|dollar|nl|4|",
    ),
    ("the integer attribute", "declare -p counter; counter+=1; echo $counter", "declare -i counter=\"42\"\n43\n"),
    ("the readonly attribute", "declare -p frozen", "declare -r frozen=\"ice\"\n"),
    ("a function the derivation defined", "myHelper x", "helper says x\n"),
    ("the stdenv's phase functions", "declare -F genericBuild installPhase", "genericBuild\ninstallPhase\n"),
    ("the working directory of the failure", r#"printf %s "$PWD""#, "/build/src/deeper"),
    ("the umask", "umask", "0027\n"),
    ("pipefail on, and nounset off as nixpkgs' setup leaves it", "[[ -o pipefail && ! -o nounset ]] && echo so", "so\n"),
    ("errexit, for commands run with exec", "[[ -o errexit ]] && echo on", "on\n"),
    ("curPhase and exitCode", r#"printf '%s %s' "$curPhase" "$exitCode""#, "buildPhase 3"),
];

/// What structured attributes add: lists are arrays, `outputs` is an
/// associative array, and each output is exported from it.
const STRUCTURED_CASES: &[(&str, &str, &str)] = &[
    ("a list attribute is an array", r#"printf '%s|' "${makeFlags[@]}""#, "-j2|PREFIX=/a b|"),
    ("it is not exported", "declare -p makeFlags | cut -c1-11", "declare -a \n"),
    ("outputs maps each output to its path", r#"[[ ${outputs[dev]} == "$dev" && $dev == /nix/store/*-dev ]] && echo yes"#, "yes\n"),
    ("each output is exported", "declare -p out dev | cut -c1-11", "declare -x \ndeclare -x \n"),
];

/// Pauses `drv` in STATE_PHASE and checks every case.
fn assert_state_kept(drv: Drv, cases: &[&[(&str, &str, &str)]]) {
    let (build, paused) = drv.phase("buildPhase", STATE_PHASE).pause();
    let mut wrong = Vec::new();
    for (what, code, expected) in cases.iter().copied().flatten() {
        let got = eval(&paused.id, code);
        if got != *expected {
            wrong.push(format!("{what}: expected {expected:?}, got {got:?}"));
        }
    }
    release(build, &paused);
    assert!(wrong.is_empty(), "state not restored:\n{}", wrong.join("\n"));
}

#[test]
fn a_paused_build_keeps_its_exact_shell_state() {
    assert_state_kept(Drv::new("state"), &[CASES]);
}

#[test]
fn a_paused_build_with_structured_attributes_keeps_its_exact_shell_state() {
    let drv = Drv::new("state-structured")
        .structured()
        .attr_expr("makeFlags", r#"[ "-j2" "PREFIX=/a b" ]"#)
        .attr_expr("outputs", r#"[ "out" "dev" ]"#);
    assert_state_kept(drv, &[CASES, STRUCTURED_CASES]);
}

/// The timeout and the shell a paused build was given, as its agent has
/// them: `list`'s timeout, and the `--shell` its command line names.
fn settings_seen(drv: Drv) -> (u64, String) {
    let (build, paused) =
        drv.attr("NIX_ATTACH_TIMEOUT", "777").attr_expr("NIX_ATTACH_SHELL", r#""${f.bash}""#).phase("buildPhase", "false").pause();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", paused.pid())).unwrap();
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|arg| String::from_utf8_lossy(arg).into_owned()).collect();
    let shell = args.iter().position(|arg| arg == "--shell").map(|at| args[at + 1].clone()).unwrap_or_default();
    let timeout = paused.entry["timeout"].as_u64().unwrap();
    release(build, &paused);
    (timeout, shell)
}

#[test]
fn the_timeout_and_the_shell_attributes_reach_the_agent() {
    let (timeout, shell) = settings_seen(Drv::new("settings"));
    assert_eq!(timeout, 777);
    assert!(shell.ends_with("-bash-static"), "{shell:?}");
}

#[test]
fn the_timeout_and_the_shell_attributes_reach_the_agent_under_structured_attributes() {
    let (timeout, shell) = settings_seen(Drv::new("settings-structured").structured());
    assert_eq!(timeout, 777, "NIX_ATTACH_TIMEOUT is a shell variable there");
    assert!(shell.ends_with("-bash-static"), "{shell:?}");
}

#[test]
fn list_names_the_failure_and_where_to_find_it() {
    let (build, paused) = Drv::new("listed").phase("buildPhase", STATE_PHASE).pause();
    let entry = &paused.entry;
    assert_eq!(entry["phase"], "buildPhase");
    assert_eq!(entry["exit_code"], 3);
    assert_eq!(entry["command"], "sh -c 'exit 3'");
    assert_eq!(entry["locals"], true);
    let build_dir = Path::new(entry["build_dir"].as_str().unwrap());
    assert!(build_dir.join(".nix-attach/agent.sock").exists(), "no socket in {build_dir:?}");
    assert!(alive(paused.pid()));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", paused.pid())).unwrap();
    assert!(cmdline.split(|b| *b == 0).nth(1) == Some(b"agent"), "pid is not the agent");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(entry["since"].as_u64().unwrap().abs_diff(now) < 600);
    // The agent writes its metadata (which `list` reads) just before the line.
    let (id, agent) = build.pointer();
    assert_eq!(id, paused.id);
    let log = build.log();
    let lines: Vec<&str> = log.lines().filter(|line| line.contains("nix-attach attach ")).collect();
    assert_eq!(lines.len(), 1, "the pointer line is not there once:\n{log}");
    assert!(lines[0].contains(&format!("attach with `nix-attach attach {id}` until ")), "{log}");
    assert!(lines[0].ends_with(&format!(" (agent {agent})")) && agent.starts_with("/nix/store/"), "{log}");
    release(build, &paused);
}

#[test]
fn exec_keeps_stdout_and_stderr_apart_and_returns_the_status() {
    let (build, paused) = Drv::new("exec").phase("buildPhase", "false").pause();
    let output = exec(&paused.id, &["eval", "echo out; echo err >&2; exit 7"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
    assert_eq!(output.status.code(), Some(7));
    let piped = nix_attach_with_input(&["exec", &paused.id, "--", "eval", "read -r line; echo got:$line"], "hello\n");
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "got:hello\n");
    release(build, &paused);
}

#[test]
fn an_explicit_exit_pauses_with_a_snapshot_taken_at_exit_and_says_so() {
    let (build, paused) = Drv::new("exit").phase("buildPhase", "exitVar=kept\nexit 4").pause();
    assert_eq!(paused.entry["exit_code"], 4);
    assert_eq!(paused.entry["locals"], false);
    assert_eq!(eval(&paused.id, r#"echo "$exitVar $exitCode""#), "kept 4\n");
    let session = nix_attach_with_input(&["attach", &paused.id], "exit\n");
    let screen = String::from_utf8_lossy(&session.stdout);
    assert!(screen.contains("the failing function's locals may be missing"), "{screen}");
    let finished = release(build, &paused);
    assert!(finished.log.contains("failed with exit code 4"), "{}", finished.log);
}

#[test]
fn an_err_trap_the_build_set_still_runs() {
    let trap_hook = r#"(f.mkDerivation { name = "own-err-trap"; phases = "installPhase"; installPhase = "mkdir -p $out/nix-support; echo \"set -o errtrace; trap 'echo own-err-trap-ran >&2' ERR\" > $out/nix-support/setup-hook"; })"#;
    let (build, paused) = Drv::new("chained").input(trap_hook).phase("buildPhase", "local kept=yes\nfalse").pause();
    assert_eq!(eval(&paused.id, "echo $kept"), "yes\n", "the snapshot came from our ERR trap");
    let finished = release(build, &paused);
    assert!(finished.log.contains("own-err-trap-ran"), "{}", finished.log);
}

/// The command `list` names for a build that fails in `drv`.
fn failed_command(drv: Drv) -> String {
    let (build, paused) = drv.pause();
    let command = paused.entry["command"].as_str().unwrap().to_string();
    release(build, &paused);
    command
}

/// A function that fails through `return N`, as substituteInPlace and
/// many hooks do, and a phase that calls it.
const RETURNING: &str = "false_make() {\n  echo making\n  return 2\n}\necho before\nfalse_make --target all\necho not reached";

#[test]
fn a_function_failing_through_return_is_named_by_its_call_in_a_phase_run_by_run_phase() {
    assert_eq!(failed_command(Drv::new("return-phase").phase("buildPhase", RETURNING)), "false_make --target all");
}

#[test]
fn a_function_failing_through_return_is_named_by_its_call_in_a_phase_run_inline() {
    // Older nixpkgs evals each phase in genericBuild itself.
    let drv = Drv::new("return-inline").attr("fixtureInlinePhases", "1").phase("buildPhase", RETURNING);
    assert_eq!(failed_command(drv), "false_make --target all");
}

#[test]
fn a_function_failing_through_return_is_named_by_its_call_in_a_string_hook() {
    // preBuild runs through runHook, _eval and _callImplicitHook.
    let drv = Drv::new("return-hook").phase("preBuild", RETURNING);
    assert_eq!(failed_command(drv), "false_make --target all");
}

#[test]
fn a_function_failing_through_return_is_named_by_its_call_in_a_function_from_a_file() {
    let hook = r#"(f.mkDerivation { name = "returning-hook"; phases = "installPhase"; installPhase = "mkdir -p $out/nix-support; printf '%s\n' 'substituteLike() { return 1; }' 'patchStep() {' '  echo patching' '  substituteLike Makefile --replace-fail a b' '}' > $out/nix-support/setup-hook"; })"#;
    let drv = Drv::new("return-file").input(hook).phase("buildPhase", "patchStep");
    assert_eq!(failed_command(drv), "substituteLike Makefile --replace-fail a b");
}
