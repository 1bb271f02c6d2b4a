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
    ("nounset and pipefail", "[[ -o nounset && -o pipefail ]] && echo both", "both\n"),
    ("errexit, for commands run with exec", "[[ -o errexit ]] && echo on", "on\n"),
    ("curPhase and exitCode", r#"printf '%s %s' "$curPhase" "$exitCode""#, "buildPhase 3"),
];

#[test]
fn a_paused_build_keeps_its_exact_shell_state() {
    let (build, paused) = Drv::new("state").phase("buildPhase", STATE_PHASE).pause();
    let mut wrong = Vec::new();
    for (what, code, expected) in CASES {
        let got = eval(&paused.id, code);
        if got != *expected {
            wrong.push(format!("{what}: expected {expected:?}, got {got:?}"));
        }
    }
    release(build, &paused);
    assert!(wrong.is_empty(), "state not restored:\n{}", wrong.join("\n"));
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
    assert!(build.log().contains(&format!("attach with `sudo nix-attach attach {}`", paused.id)));
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
