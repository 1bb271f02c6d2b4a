//! The daemon's pre-build hook puts the attach hook into builds that
//! `nix-attach build` or `run` asked for, at sandbox setup: a failing build
//! without the hook in its inputs pauses, with no edit and no rebuild. Each
//! test runs a second nix-daemon beside the test bed's, on the same store,
//! with its own nix.conf (naming the hook) and its own socket; the shared
//! daemon is never touched.

use crate::support::daemon::SecondDaemon;
use crate::support::{daemon_takes_pre_build_hook_paths, eval, fixtures, nix_attach, nix_release, nix_string, release, unique_name, Drv};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// A failing derivation without the hook among its inputs.
fn hookless(prefix: &str, phase: &str) -> Drv {
    Drv::new(prefix).without_hook().phase("buildPhase", phase)
}

const STATE: &str =
    "myHelper() { echo helper; }\nlocal phaseLocal=kept\ndeclare -a arr=(a 'b c')\nmkdir -p src && cd src\numask 0027\nsh -c 'exit 3'";

/// What the Linux stdenv fixture's setup hooks leave in a build: a file
/// hook's fixup step, patchelf's function and fixup step, and the
/// cc-wrapper's variables, one read from its nix-support/ through a link;
/// its `cc` reads its flags from there too.
const SETUP_HOOKS_WORK: (&str, &str) = (
    "declare -F patchELF _auditTmpdir; echo \"${postFixupHooks[*]}|${#fixupOutputHooks[@]}|${NIX_CC#/nix/store/*-}|$ccWrapperFlags\"; cc -c x.c",
    "patchELF\n_auditTmpdir\n_auditTmpdir|1|cc-wrapper-fixture|-O2 -fixture-cflag\ncc -O2 -fixture-cflag -L/fixture-libc -c x.c\n",
);

#[test]
fn a_build_without_the_hook_pauses_when_the_wrapper_asked_for_it_with_its_whole_state() {
    let daemon = SecondDaemon::hooked();
    if drops_the_hooks_output(&daemon) {
        return;
    }
    let drv = hookless("injected", STATE);
    let mut build = daemon.wrapped(&drv);
    let paused = build.paused();
    assert_eq!(paused.entry["phase"], "buildPhase");
    assert_eq!(paused.entry["command"], "sh -c 'exit 3'");
    assert_eq!(
        eval(&paused.id, "myHelper; echo $phaseLocal; printf '%s|' \"${arr[@]}\"; echo; echo $PWD; umask"),
        "helper\nkept\na|b c|\n/build/src\n0027\n"
    );
    assert_eq!(eval(&paused.id, SETUP_HOOKS_WORK.0), SETUP_HOOKS_WORK.1, "the stdenv's setup hooks did not all do their work");
    let finished = release(build, &paused);
    assert!(!finished.status.success());
    assert!(finished.log.contains("failed with exit code 3") && finished.log.contains("Running phase: buildPhase"), "{}", finished.log);
    assert!(finished.log.contains("nix-attach: failing stdenv builds pause even without the attach hook"), "{}", finished.log);
    assert_eq!(finished.log.matches("building '").count(), 1, "built twice:\n{}", finished.log);
    assert!(!finished.log.contains("nix-attach retry"), "{}", finished.log);
    assert_inputs_intact(&drv);
}

#[test]
fn where_the_only_setup_hook_package_is_the_compiler_its_nix_support_is_whole_inside() {
    let drv = hookless("compiler-only", "sh -c 'exit 3'").attr("fixtureStdenv", "compiler-only");
    let inside = "cc -c x.c; echo \"$ccWrapperTarget|$ccWrapperFlags\"; cd $NIX_CC/nix-support && stat -c '%n %a' add-flags.sh cc-cflags && readlink cflags-link";
    let seen =
        "cc -O2 -fixture-cflag -L/fixture-libc -c x.c\nfixture-linux|-O2 -fixture-cflag\nadd-flags.sh 555\ncc-cflags 444\ncc-cflags\n";
    assert_pauses_injected(&drv, inside, seen);
}

#[test]
fn where_the_stdenv_has_only_file_hooks_a_package_of_the_build_carries_the_hook() {
    let drv = hookless("files-only-stdenv", "sh -c 'exit 3'").attr("fixtureStdenv", "files-only").input("f.patchelf");
    assert_pauses_injected(&drv, "declare -F patchELF _auditTmpdir", "patchELF\n_auditTmpdir\n");
}

/// Where the daemon takes the hook's paths, `drv` pauses through a daemon
/// with the hook, a session there sees `seen` from `command`, and every
/// input is intact after the build.
fn assert_pauses_injected(drv: &Drv, command: &str, seen: &str) {
    let daemon = SecondDaemon::hooked();
    if drops_the_hooks_output(&daemon) {
        return;
    }
    let mut build = daemon.wrapped(drv);
    let paused = build.paused();
    assert_eq!(eval(&paused.id, command), seen);
    release(build, &paused);
    assert_inputs_intact(drv);
}

#[test]
fn a_stdenv_build_with_no_setup_hook_package_fails_at_once_and_the_wrapper_says_why_and_offers_retry() {
    let daemon = SecondDaemon::hooked();
    let drv = hookless("no-hook-package", "sh -c 'exit 3'").attr("fixtureStdenv", "files-only");
    let finished = daemon.wrapped(&drv).finish();
    assert!(!finished.status.success() && finished.log.contains("failed with exit code 3"), "{}", finished.log);
    assert!(!finished.log.contains("attach with"), "it paused:\n{}", finished.log);
    let why = if daemon_takes_pre_build_hook_paths() {
        "failed without pausing (none of its inputs has a nix-support/setup-hook that the daemon's pre-build hook could extend); \
         to enter it, build it again so that it pauses: nix-attach retry "
    } else {
        "failed without pausing; to enter it, build it again so that it pauses: nix-attach retry "
    };
    assert_eq!(finished.log.matches(why).count(), 1, "{}", finished.log);
}

/// Every store path among `drv`'s inputs still has the content the store
/// recorded for it: the hook's mounts inside an input changed nothing
/// there (Nix makes a missing target, and truncates a file that a file is
/// mounted over).
fn assert_inputs_intact(drv: &Drv) {
    let drv_path = drv.instantiate();
    let requisites = Command::new("nix-store")
        .args(["--query", "--requisites", "--include-outputs", &drv_path])
        .env("NIX_REMOTE", "daemon")
        .output()
        .unwrap();
    let paths: Vec<String> =
        String::from_utf8_lossy(&requisites.stdout).lines().filter(|path| !path.ends_with(".drv")).map(String::from).collect();
    assert!(paths.iter().any(|path| path.contains("-stdenv-fixture")), "no stdenv among {paths:?}");
    let packages = ["-patchelf-fixture", "-cc-wrapper-fixture"];
    assert!(
        paths.iter().any(|path| packages.iter().any(|package| path.ends_with(package))),
        "no package with a setup hook among {paths:?}"
    );
    let verified = Command::new("nix-store").arg("--verify-path").args(&paths).env("NIX_REMOTE", "daemon").output().unwrap();
    assert!(verified.status.success(), "an input changed: {}", String::from_utf8_lossy(&verified.stderr));
}

/// Whether the daemon's release drops what the pre-build hook prints (Lix
/// 2.93 and later): there, every spec of a pause by injection checks this
/// instead, that builds are untouched and the wrapper offers a retry.
fn drops_the_hooks_output(daemon: &SecondDaemon) -> bool {
    let drops = !daemon_takes_pre_build_hook_paths();
    if drops {
        where_nix_drops_the_hooks_paths_the_build_is_untouched_and_the_wrapper_offers_retry(daemon);
    }
    drops
}

/// On a release that drops what the pre-build hook prints (Lix 2.93 and
/// later), the build runs as it is and fails at once; the wrapper says so
/// once the hook has found which Nix runs it, and offers a retry.
fn where_nix_drops_the_hooks_paths_the_build_is_untouched_and_the_wrapper_offers_retry(daemon: &SecondDaemon) {
    let drv = hookless("ignored", STATE);
    let first = daemon.plain(&drv).finish();
    assert!(!first.status.success() && !first.log.contains("nix-attach"), "{}", first.log);
    let finished = daemon.wrapped(&drv).finish();
    assert!(!finished.status.success() && finished.log.contains("failed with exit code 3"), "{}", finished.log);
    assert!(!finished.log.contains("attach with"), "it paused:\n{}", finished.log);
    let why = format!("nix-attach: only builds with the attach hook pause: {} drops what the pre-build hook prints", nix_release());
    assert!(finished.log.contains(&why), "{}", finished.log);
    let retry = format!("{} failed without pausing; to enter it, build it again so that it pauses: nix-attach retry ", drv.name);
    assert!(finished.log.contains(&retry), "{}", finished.log);
    assert_inputs_intact(&drv);
}

#[test]
fn a_plain_nix_build_through_the_same_daemon_fails_at_once_without_a_pointer() {
    let daemon = SecondDaemon::hooked();
    let finished = daemon.plain(&hookless("not-asked", "sh -c 'exit 3'")).finish();
    assert!(!finished.status.success());
    assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
    assert!(!finished.log.contains("nix-attach"), "{}", finished.log);
}

#[test]
fn a_failing_dependency_pauses_not_only_the_top_level() {
    let daemon = SecondDaemon::hooked();
    if drops_the_hooks_output(&daemon) {
        return;
    }
    let dependency = unique_name("deep-dependency");
    let top = Drv::new("top-level")
        .without_hook()
        .attr_expr(
            "dependency",
            &format!("f.mkDerivation {{ name = {}; buildPhase = \"local deep=yes; false\"; }}", nix_string(&dependency)),
        )
        .phase("buildPhase", "true");
    let mut build = daemon.wrapped(&top);
    build.name = dependency.clone();
    let paused = build.paused();
    assert_eq!(eval(&paused.id, "echo $deep"), "yes\n");
    release(build, &paused);
}

#[test]
fn structured_attributes_builds_pause_too() {
    let daemon = SecondDaemon::hooked();
    if drops_the_hooks_output(&daemon) {
        return;
    }
    let drv = hookless("injected-structured", "sh -c 'exit 3'").structured().attr_expr("makeFlags", r#"[ "-j2" "A=b c" ]"#);
    let mut build = daemon.wrapped(&drv);
    let paused = build.paused();
    assert_eq!(eval(&paused.id, r#"printf '%s|' "${makeFlags[@]}""#), "-j2|A=b c|");
    release(build, &paused);
}

#[test]
fn a_derivation_that_carries_the_hook_is_hooked_once() {
    // Hooked twice, the build would pause again after its release.
    let daemon = SecondDaemon::hooked();
    let mut build = daemon.wrapped(&Drv::new("carries-hook").phase("buildPhase", "sh -c 'exit 3'"));
    let paused = build.paused();
    let finished = release(build, &paused);
    let agents: std::collections::BTreeSet<&str> =
        finished.log.split("nix-attach attach ").skip(1).filter_map(|rest| rest.get(..12)).collect();
    assert_eq!(agents.len(), 1, "{}", finished.log);
}

#[test]
fn a_builder_that_is_not_the_stdenv_is_left_alone() {
    let daemon = SecondDaemon::hooked();
    let name = unique_name("raw-builder");
    let expression = format!(
        "let f = import {} {{ }}; in derivation {{ name = {}; system = builtins.currentSystem; builder = f.bash; args = [ \"-c\" \"exit 3\" ]; }}",
        fixtures().display(),
        nix_string(&name)
    );
    let finished = daemon.build(&name, &expression, nix_attach(), &["run", "--no-enter", "--", "nix-build"]).finish();
    assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
    assert!(!finished.log.contains("attach with"), "{}", finished.log);
    if daemon_takes_pre_build_hook_paths() {
        let why = "failed without pausing (it is not a stdenv build, which the daemon's pre-build hook leaves alone); \
                   to enter it, build it again so that it pauses: nix-attach retry ";
        assert!(finished.log.contains(why), "{}", finished.log);
    }
}

#[test]
fn a_passing_build_under_the_injection_is_bit_identical() {
    let daemon = SecondDaemon::hooked();
    let drv = Drv::new("passing").without_hook().phase("installPhase", "mkdir -p $out && echo same > $out/file");
    assert!(daemon.wrapped(&drv).finish().status.success());
    let checked = daemon.build(&drv.name, &drv.expression(), nix_attach(), &["run", "--no-enter", "--", "nix-build", "--check"]).finish();
    assert!(checked.status.success(), "{}", checked.log);
    assert_inputs_intact(&drv);
}

#[test]
fn where_the_daemon_drops_the_hooks_output_it_prints_nothing() {
    // The daemon's Nix is asked its version once and the answer kept in
    // the cache; here the cache says Lix 2.93, which drops the hook's output.
    let daemon = SecondDaemon::hooked();
    let program = nix_attach::nix_program::nix_on_path().expect("nix on PATH");
    let nix = std::fs::metadata(std::fs::canonicalize(program).unwrap()).unwrap();
    use std::os::unix::fs::MetadataExt;
    let cache = daemon.dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(
        cache.join(format!("version-{}-{}-{}-{}", nix.dev(), nix.ino(), nix.size(), nix.mtime())),
        "nix (Lix, like Nix) 2.93.0\n",
    )
    .unwrap();
    let finished = daemon.wrapped(&hookless("not-honoured", "sh -c 'exit 3'")).finish();
    assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
    assert!(!finished.log.contains("attach with"), "{}", finished.log);
}

/// The hook run by hand on `drv`: status, stdout, stderr.
fn run_hook(drv: &Path) -> (Option<i32>, String, String) {
    let output = Command::new(nix_attach()).arg0("nix-attach-pre-build-hook").arg(drv).arg("/tmp/no-sandbox").output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_missing_truncated_or_garbage_derivation_is_left_unhooked_with_one_logged_line() {
    let dir = std::env::temp_dir().join(unique_name("bad-drv"));
    std::fs::create_dir_all(&dir).unwrap();
    let some_drv =
        std::fs::read_dir("/nix/store").unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "drv")).unwrap();
    let text = std::fs::read(&some_drv).unwrap();
    std::fs::write(dir.join("truncated.drv"), &text[..text.len() / 2]).unwrap();
    std::fs::write(dir.join("garbage.drv"), b"\x7fELF\x02\x01\x01garbage").unwrap();
    for drv in [dir.join("missing.drv"), dir.join("truncated.drv"), dir.join("garbage.drv")] {
        let (status, stdout, stderr) = run_hook(&drv);
        assert_eq!(status, Some(0), "{drv:?}: Nix fails a build whose pre-build hook fails");
        assert_eq!(stdout, "", "{drv:?}");
        assert_eq!(stderr.lines().count(), 1, "{drv:?}: {stderr}");
        assert!(stderr.contains("goes on without the attach hook"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
