//! `nix-attach retry`: a derivation that failed without the hook is built
//! again so that it pauses, with no edit to its expression. Everything
//! here runs against the test bed's own daemon, which has no pre-build
//! hook, except the one spec where a daemon injects the hook.

use crate::support::daemon::SecondDaemon;
use crate::support::pty::Terminal;
use crate::support::{
    daemon_takes_pre_build_hook_paths, eval, exec, fixtures, instantiate, nix_attach, nix_attach_cmd, nix_string, release, unique_name,
    Build, Drv, Paused,
};
use std::process::Command;

/// Builds `drv` (without the hook) and checks that it fails without
/// pausing; returns its `.drv` path.
fn failed_without_pausing(drv: &Drv) -> String {
    let finished = drv.build();
    assert!(!finished.status.success(), "{} did not fail:\n{}", drv.name, finished.log);
    assert!(!finished.log.contains("attach with"), "{} paused without the hook:\n{}", drv.name, finished.log);
    drv.instantiate()
}

/// `nix-attach retry --no-enter DRV`: without a terminal it leaves the
/// paused build waiting, so the test can reach it.
fn retry(name: &str, drv_path: &str) -> Build {
    let mut command = Command::new(nix_attach());
    command.args(["retry", "--no-enter", drv_path]);
    Build::spawn(name, command)
}

/// Retries `drv_path` and waits until the copy pauses.
fn paused_retry(name: &str, drv_path: &str) -> (Build, Paused) {
    let mut build = retry(name, drv_path);
    let paused = build.paused();
    (build, paused)
}

/// The output paths a derivation names.
fn outputs_of(drv_path: &str) -> Vec<String> {
    let output = Command::new("nix-store").args(["--query", "--outputs", drv_path]).env("NIX_REMOTE", "daemon").output().unwrap();
    String::from_utf8(output.stdout).unwrap().lines().map(String::from).collect()
}

/// A raw `derivation` (no stdenv) over the fixture `f`, with `attrs`.
fn raw_expression(name: &str, attrs: &str) -> String {
    format!(
        "let f = import {} {{}}; in derivation ({{ name = {}; system = builtins.currentSystem; }} // {attrs})",
        fixtures().display(),
        nix_string(name)
    )
}

/// Releases the paused copy and checks that the retry fails as the build
/// did, saying so.
fn released_fails_as_before(build: Build, paused: &Paused, code: i32) {
    let finished = release(build, paused);
    assert!(!finished.status.success(), "the retry succeeded:\n{}", finished.log);
    assert!(finished.log.contains(&format!("failed with exit code {code}")), "{}", finished.log);
}

#[test]
fn a_stdenv_build_without_the_hook_pauses_when_retried_with_its_whole_shell() {
    let drv = Drv::new("retry-stdenv").without_hook().attr("preHook", "ownPreHook=ran").phase(
        "buildPhase",
        "retryFunction() { :; }\nlocal phaseLocal=inside\nretryArray=(one 'two three')\nunexported=42\nsh -c 'exit 3'",
    );
    let drv_path = failed_without_pausing(&drv);
    let (build, paused) = paused_retry(&drv.name, &drv_path);
    assert_eq!(paused.entry["phase"], "buildPhase");
    assert_eq!(paused.entry["command"], "sh -c 'exit 3'");
    assert_eq!(paused.entry["exit_code"], 3);
    assert_eq!(eval(&paused.id, "declare -F retryFunction"), "retryFunction\n");
    assert_eq!(eval(&paused.id, "echo \"$phaseLocal\""), "inside\n");
    assert_eq!(eval(&paused.id, "echo \"${retryArray[1]}\""), "two three\n");
    assert_eq!(eval(&paused.id, "declare -p unexported"), "declare -- unexported=\"42\"\n");
    assert_eq!(eval(&paused.id, "echo \"$ownPreHook\""), "ran\n", "the derivation's own preHook did not run");
    assert!(build.log().contains("never the original's"), "{}", build.log());
    released_fails_as_before(build, &paused, 3);
}

#[test]
fn structured_attributes_stay_shell_variables_in_the_retried_copy() {
    let drv = Drv::new("retry-structured")
        .without_hook()
        .structured()
        .attr_expr("retryList", "[ \"a b\" \"c\" ]")
        .attr_expr("retryNumbers", "[ (-1) 2 ]")
        .phase("buildPhase", "sh -c 'exit 5'");
    let drv_path = failed_without_pausing(&drv);
    let (build, paused) = paused_retry(&drv.name, &drv_path);
    assert_eq!(eval(&paused.id, "declare -p retryList"), "declare -a retryList=([0]=\"a b\" [1]=\"c\")\n");
    assert_eq!(eval(&paused.id, "printenv retryList || echo not exported"), "not exported\n");
    assert_eq!(eval(&paused.id, "declare -p retryNumbers"), "declare -a retryNumbers=([0]=\"-1\" [1]=\"2\")\n");
    assert!(eval(&paused.id, "declare -p outputs").starts_with("declare -A outputs=([out]="));
    released_fails_as_before(build, &paused, 5);
}

#[test]
fn the_copy_keeps_several_outputs_of_its_own_and_pass_as_file() {
    let drv = Drv::new("retry-outputs")
        .without_hook()
        .attr_expr("outputs", "[ \"out\" \"dev\" ]")
        .attr("retryText", "passed as a file")
        .attr_expr("passAsFile", "[ \"retryText\" ]")
        .phase("buildPhase", "sh -c 'exit 6'");
    let drv_path = failed_without_pausing(&drv);
    let originals = outputs_of(&drv_path);
    let (build, paused) = paused_retry(&drv.name, &drv_path);
    assert_eq!(eval(&paused.id, "cat \"$retryTextPath\""), "passed as a file");
    for output in ["out", "dev"] {
        let path = eval(&paused.id, &format!("echo \"${output}\"")).trim().to_string();
        let suffix = if output == "out" { drv.name.clone() } else { format!("{}-{output}", drv.name) };
        assert!(path.starts_with("/nix/store/") && path.ends_with(&suffix), "{output} is {path}");
        assert!(!originals.contains(&path), "the copy's {output} is the original's {path}");
    }
    released_fails_as_before(build, &paused, 6);
}

#[test]
fn a_derivation_as_make_derivation_makes_it_is_copied_to_mean_the_same_in_either_builder_form() {
    for (form, old_builder) in [("source-stdenv", false), ("self-sourcing", true)] {
        let mut drv = Drv::new(&format!("retry-nixpkgs-{form}"))
            .without_hook()
            .attr_expr("outputs", "[ \"out\" \"dev\" \"bin\" ]")
            .attr("outputDev", "dev")
            .attr("outputBin", "bin")
            .attr_expr("configureFlags", "[ \"--enable-a\" \"--with-b=c\" ]")
            .attr_expr("enableParallelBuilding", "true")
            .attr_expr("doCheck", "true")
            .phase("buildPhase", "sh -c 'exit 8'");
        if old_builder {
            drv = drv.attr_expr("fixtureOldBuilder", "true");
        }
        let drv_path = failed_without_pausing(&drv);
        let (build, paused) = paused_retry(&drv.name, &drv_path);
        let seen = eval(
            &paused.id,
            "echo \"[$__structuredAttrs] [$strictDeps] [$doCheck] [$doInstallCheck] [$enableParallelBuilding] [$enableParallelChecking]\"; \
             echo \"[$configureFlags] [$patches] [$outputDev] [$outputBin] [${userHook-unset}]\"",
        );
        assert_eq!(seen, "[] [] [1] [] [1] [1]\n[--enable-a --with-b=c] [] [dev] [bin] [unset]\n", "{form}");
        assert!(eval(&paused.id, "echo \"$bin\"").trim().ends_with(&format!("{}-bin", drv.name)), "{form}");
        released_fails_as_before(build, &paused, 8);
    }
}

#[test]
fn a_fixed_output_derivation_stays_fixed_output() {
    let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let drv = Drv::new("retry-fixed")
        .without_hook()
        .attr("outputHashMode", "flat")
        .attr("outputHashAlgo", "sha256")
        .attr("outputHash", empty)
        .phase("buildPhase", "sh -c 'exit 7'");
    let drv_path = failed_without_pausing(&drv);
    let (build, paused) = paused_retry(&drv.name, &drv_path);
    assert_eq!(eval(&paused.id, "echo \"$outputHash\""), format!("{empty}\n"));
    // A fixed output's path comes from its hash and name alone.
    assert_eq!(outputs_of(&drv_path), vec![eval(&paused.id, "echo \"$out\"").trim().to_string()]);
    released_fails_as_before(build, &paused, 7);
}

#[test]
fn a_raw_bash_builder_pauses_with_its_variables_and_working_directory() {
    let name = unique_name("retry-raw");
    // Only bash's builtins are at hand: no PATH.
    let script = "cd /nix/store; rawVariable=set; exit 3";
    let drv_path = instantiate(&raw_expression(&name, &format!("{{ builder = f.bash; args = [ \"-c\" {} ]; }}", nix_string(script))));
    let original = Build::spawn(&name, {
        let mut command = Command::new("nix-build");
        command.args(["--no-out-link", &drv_path]);
        command
    })
    .finish();
    assert!(!original.status.success() && !original.log.contains("attach with"), "{}", original.log);
    let (build, paused) = paused_retry(&name, &drv_path);
    assert_eq!(paused.entry["phase"], "");
    assert_eq!(paused.entry["exit_code"], 3);
    assert_eq!(eval(&paused.id, "pwd"), "/nix/store\n");
    assert_eq!(eval(&paused.id, "echo \"$rawVariable\""), "set\n");
    assert_eq!(exec(&paused.id, &["false"]).status.code(), Some(1));
    released_fails_as_before(build, &paused, 3);
}

#[test]
fn a_builder_that_is_not_bash_pauses_with_the_environment_when_an_input_holds_bash() {
    let name = unique_name("retry-not-bash");
    let attrs = "{ builder = \"${f.busybox}/bin/sh\"; args = [ \"-c\" \"exit 4\" ]; shellInput = f.bash; fromEnv = \"kept\"; }";
    let drv_path = instantiate(&raw_expression(&name, attrs));
    let (build, paused) = paused_retry(&name, &drv_path);
    assert_eq!(paused.entry["exit_code"], 4);
    assert!(paused.entry["command"].as_str().unwrap().ends_with("/bin/sh -c exit 4"), "{}", paused.entry);
    assert_eq!(eval(&paused.id, "echo \"$fromEnv\""), "kept\n");
    assert!(build.log().contains("the build's environment and directory only"), "{}", build.log());
    released_fails_as_before(build, &paused, 4);
}

/// `nix-attach retry ARGS…`, which must fail at once: its status, and
/// stderr, which must be one line.
fn refused(args: &[&str]) -> (i32, String) {
    let output = nix_attach_cmd(&[&["retry"], args].concat());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success(), "retry {args:?} did not fail: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(!stderr.contains("building"), "something was built: {stderr}");
    (output.status.code().unwrap(), stderr)
}

#[test]
fn a_builder_that_is_not_bash_with_no_bash_in_its_inputs_is_refused_in_one_line() {
    let name = unique_name("retry-no-bash");
    let drv_path = instantiate(&raw_expression(&name, "{ builder = \"${f.busybox}/bin/sh\"; args = [ \"-c\" \"exit 4\" ]; }"));
    let (_, stderr) = refused(&[&drv_path]);
    assert!(stderr.contains("none of its inputs holds a bash"), "{stderr}");
}

#[test]
fn a_derivation_that_does_not_exist_or_a_path_that_is_no_derivation_is_refused_in_one_line() {
    let missing = "/nix/store/00000000000000000000000000000000-missing.drv";
    let (_, stderr) = refused(&[missing]);
    assert!(stderr.contains(&format!("{missing} does not exist")), "{stderr}");
    let not_a_derivation = std::fs::read_dir("/nix/store")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().ends_with("-bash-static"))
        .expect("the fixture's bash is in the store");
    let (_, stderr) = refused(&[not_a_derivation.to_str().unwrap()]);
    assert!(stderr.contains("is not a derivation"), "{stderr}");
}

#[test]
fn a_derivation_whose_inputs_are_gone_is_refused_in_one_line_and_nothing_is_built() {
    let dependency = raw_expression(&unique_name("retry-gone-input"), "{ builder = f.bash; args = [ \"-c\" \"echo > $out\" ]; }");
    let built = Command::new("nix-build").args(["--no-out-link", "--expr", &dependency]).env("NIX_REMOTE", "daemon").output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let gone = String::from_utf8(built.stdout).unwrap().trim().to_string();
    let top = raw_expression(
        &unique_name("retry-gone"),
        &format!("{{ builder = f.bash; args = [ \"-c\" \"exit 1\" ]; dependency = ({dependency}); }}"),
    );
    let drv_path = instantiate(&top);
    let deleted = Command::new("nix-store").args(["--delete", &gone]).env("NIX_REMOTE", "daemon").output().unwrap();
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let (_, stderr) = refused(&[&drv_path]);
    assert!(stderr.contains("gone from the store") && stderr.contains(&gone), "{stderr}");
    let valid = Command::new("nix-store").args(["--check-validity", &gone]).env("NIX_REMOTE", "daemon").output().unwrap();
    assert!(!valid.status.success(), "the input was built again");
}

#[test]
fn where_the_daemon_injects_the_hook_the_same_derivation_is_built_again_and_elsewhere_a_copy() {
    let daemon = SecondDaemon::hooked();
    let drv = Drv::new("retry-injected").without_hook().phase("buildPhase", "sh -c 'exit 8'");
    // Not asked for by the wrapper: it fails without pausing (and the
    // hook finds out which Nix runs it).
    let original = daemon.plain(&drv).finish();
    assert!(!original.status.success() && !original.log.contains("attach with"), "{}", original.log);
    let drv_path = drv.instantiate();
    let mut command = Command::new(nix_attach());
    command
        .args(["retry", "--no-enter", &drv_path])
        .env("NIX_DAEMON_SOCKET_PATH", daemon.dir.join("socket"))
        .env("NIX_CONF_DIR", &daemon.dir)
        .env("NIX_ATTACH_CACHE", daemon.dir.join("cache"));
    let mut build = Build::spawn(&drv.name, command);
    let paused = build.paused();
    let out = vec![eval(&paused.id, "echo \"$out\"").trim().to_string()];
    if daemon_takes_pre_build_hook_paths() {
        assert!(build.log().contains("again, as it is"), "{}", build.log());
        assert_eq!(outputs_of(&drv_path), out, "not the same derivation");
    } else {
        // Where the hook's paths lose to the inputs, a copy carries the hook.
        assert!(build.log().contains("as a copy that pauses"), "{}", build.log());
        assert_ne!(outputs_of(&drv_path), out, "the copy builds the original's output");
    }
    released_fails_as_before(build, &paused, 8);
}

/// A top-level derivation whose dependency fails, neither with the hook.
fn top_with_failing_dependency(prefix: &str) -> (Drv, Drv) {
    let dependency = Drv::new(&format!("{prefix}-dep")).without_hook().phase("buildPhase", "sh -c 'exit 3'");
    let top = Drv::new(prefix).without_hook().attr_expr("dependency", &format!("({})", dependency.expression()));
    (top, dependency)
}

/// `nix-attach run FLAGS… -- nix-build …` on `drv`, under a PTY.
fn wrapped_at_a_terminal(flags: &[&str], drv: &Drv) -> Terminal {
    let expression = drv.expression();
    let args: Vec<&str> = [&["run"], flags, &["--", "nix-build", "--no-out-link", "--expr", &expression]].concat();
    Terminal::spawn(nix_attach(), &args, 40, 160)
}

#[test]
fn in_ci_the_wrapper_prints_the_retry_line_for_the_failing_dependency_not_the_top() {
    let (top, dependency) = top_with_failing_dependency("retry-ci");
    let output = Command::new(nix_attach())
        .args(["run", "--", "nix-build", "--no-out-link", "--expr", &top.expression()])
        .env("CI", "true")
        .env("GITHUB_ACTIONS", "true")
        .env("NIX_REMOTE", "daemon")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let line = format!(
        "{} failed without pausing; to enter it, build it again so that it pauses: nix-attach retry {}",
        dependency.name,
        dependency.instantiate()
    );
    assert!(stderr.contains(&format!("nix-attach: {line}")), "{stderr}");
    assert!(stdout.contains(&format!("::notice title=nix-attach::{line}")), "{stdout}");
    assert!(!stderr.contains(&format!("retry {}", top.instantiate())), "{stderr}");
    let plain = top.build();
    assert_eq!(output.status.code(), plain.status.code(), "not nix-build's own status");
}

#[test]
fn at_a_terminal_the_wrapper_offers_to_retry_the_failing_dependency_then_to_enter_it() {
    let (top, dependency) = top_with_failing_dependency("retry-pty");
    let mut terminal = wrapped_at_a_terminal(&[], &top);
    let asked = terminal.expect(&format!("{} failed without pausing; build it again so that it pauses? [Y/n]", dependency.name));
    assert!(!terminal.screen().contains(&format!("{} failed without pausing", top.name)), "{}", terminal.screen());
    terminal.send("y");
    let offered = terminal
        .expect_after(asked, &format!("{} failed in buildPhase (exit 3): sh -c 'exit 3' — enter the build? [Y/n]", dependency.name));
    terminal.send("y");
    let inside = terminal.expect_after(offered, " $ ");
    terminal.send("echo \"in=$curPhase\"\r");
    terminal.expect_after(inside, "in=buildPhase");
    terminal.send("exit\r");
    terminal.expect_after(inside, "released it, nix goes on");
    assert_ne!(terminal.wait(), 0);
}

#[test]
fn with_enter_on_failure_the_wrapper_retries_and_enters_without_asking() {
    let (top, dependency) = top_with_failing_dependency("retry-pty-enter");
    let mut terminal = wrapped_at_a_terminal(&["--enter-on-failure"], &top);
    let inside = terminal.expect(&format!("inside the build of {}", dependency.name));
    terminal.send("exit\r");
    terminal.expect_after(inside, "released it, nix goes on");
    assert_ne!(terminal.wait(), 0);
    assert!(!terminal.screen().contains("[Y/n]"), "{}", terminal.screen());
}

#[test]
fn attributes_that_read_like_nix_code_are_copied_as_text() {
    let hostile = "\"; evil = builtins.currentTime; x = \" ${builtins.currentTime} '' \\ $HOME \\${";
    let drv = Drv::new("retry-hostile-text").without_hook().attr("hostileText", hostile).phase("buildPhase", "sh -c 'exit 3'");
    let drv_path = failed_without_pausing(&drv);
    let (build, paused) = paused_retry(&drv.name, &drv_path);
    assert_eq!(eval(&paused.id, "printf %s \"$hostileText\""), hostile);
    released_fails_as_before(build, &paused, 3);
}

#[test]
fn a_failure_line_that_a_build_prints_cannot_name_a_derivation_that_built() {
    let built = instantiate(&format!("(import {} {{}}).busybox", fixtures().display()));
    let missing = "/nix/store/00000000000000000000000000000000-missing.drv";
    let fake = format!(
        "echo \"error: builder for '{built}' failed with exit code 1;\" >&2\necho \"error: builder for '{missing}' failed with exit code 1;\" >&2\nsh -c 'exit 3'"
    );
    let drv = Drv::new("retry-fake-line").without_hook().phase("buildPhase", &fake);
    let output = Command::new(nix_attach())
        .args(["run", "--", "nix-build", "--no-out-link", "--expr", &drv.expression()])
        .env("CI", "true")
        .env("NIX_REMOTE", "daemon")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("nix-attach retry {}", drv.instantiate())), "the real failure is not offered: {stderr}");
    assert!(!stderr.contains(&format!("nix-attach retry {built}")), "a derivation that built is offered: {stderr}");
    assert!(!stderr.contains(&format!("nix-attach retry {missing}")), "a missing derivation is offered: {stderr}");
}

#[test]
fn a_nix_file_and_an_attribute_name_the_derivation_to_retry() {
    let drv = Drv::new("retry-file").without_hook().phase("buildPhase", "sh -c 'exit 3'");
    let other = Drv::new("retry-file-other").without_hook();
    failed_without_pausing(&drv);
    let file = std::env::temp_dir().join(format!("{}.nix", drv.name));
    std::fs::write(&file, format!("{{ it = {}; other = {}; }}", drv.expression(), other.expression())).unwrap();
    let mut command = Command::new(nix_attach());
    command.args(["retry", "--no-enter", file.to_str().unwrap(), "--", "-A", "it"]);
    let mut build = Build::spawn(&drv.name, command);
    let paused = build.paused();
    released_fails_as_before(build, &paused, 3);
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_nix_file_that_does_not_evaluate_is_refused_with_nix_s_own_error_in_one_line() {
    let file = std::env::temp_dir().join(format!("{}.nix", unique_name("retry-bad-file")));
    std::fs::write(&file, "{ it = builtins.getAttr \"missing\" { }; }").unwrap();
    let (_, stderr) = refused(&[file.to_str().unwrap(), "--", "-A", "it"]);
    assert!(stderr.contains("error: attribute 'missing' missing"), "{stderr}");
    let _ = std::fs::remove_file(file);
}

#[test]
fn an_input_that_no_attribute_names_in_its_text_stays_an_input_of_the_copy() {
    let marker = unique_name("hidden-input");
    let check = format!("for input in /nix/store/*-{marker}; do [ -e \"$input\" ] || exit 9; done\nsh -c 'exit 3'");
    let drv = Drv::new("retry-hidden-input")
        .without_hook()
        .attr_expr("hidden", &format!("builtins.substring 0 0 (builtins.toFile {} \"x\")", nix_string(&marker)))
        .phase("buildPhase", &check);
    let drv_path = failed_without_pausing(&drv);
    let (build, paused) = paused_retry(&drv.name, &drv_path);
    assert_eq!(paused.entry["command"], "sh -c 'exit 3'", "the copy lacks the input");
    released_fails_as_before(build, &paused, 3);
}
