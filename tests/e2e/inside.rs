//! Working inside a failed build: the session's own `nix-attach` says what
//! failed and which phases ran, runs the failing command again, and runs
//! the rest of the build after a fix, all in the sandbox, without ever
//! making the real build pass.

use crate::support::{eval, exec, release, Drv};

/// A build whose buildPhase fails until `$NIX_BUILD_TOP/fixed` exists.
fn until_fixed(prefix: &str) -> Drv {
    Drv::new(prefix).phase("buildPhase", "echo building\nsh -c 'test -f \"$NIX_BUILD_TOP/fixed\" || exit 3'")
}

#[test]
fn status_names_the_failure_and_the_phases_that_ran_failed_and_remain() {
    let (build, paused) = until_fixed("status").pause();
    let status = eval(&paused.id, "nix-attach status 2>&1");
    let expected = [
        format!("nix-attach: {} failed in buildPhase (exit 3)", build.name),
        "  failed command: sh -c 'test -f \"$NIX_BUILD_TOP/fixed\" || exit 3'".to_string(),
        "  phases ran: unpackPhase patchPhase configurePhase".to_string(),
        "  failed: buildPhase".to_string(),
        "  remain: (checkPhase, skipped) installPhase fixupPhase (installCheckPhase, skipped) (distPhase, skipped)".to_string(),
    ];
    for line in expected {
        assert!(status.lines().any(|shown| shown == line), "no line {line:?} in:\n{status}");
    }
    release(build, &paused);
}

#[test]
fn rerun_runs_the_failing_command_again_where_it_failed_with_its_status() {
    let (build, paused) = until_fixed("rerun").pause();
    let again = exec(&paused.id, &["nix-attach", "rerun"]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(3), "the original status: {said}");
    assert!(said.contains("it ended with status 3 (at the failure: 3)"), "{said}");
    let fixed = exec(&paused.id, &["eval", "touch \"$NIX_BUILD_TOP/fixed\"; nix-attach rerun"]);
    assert_eq!(fixed.status.code(), Some(0), "{}", String::from_utf8_lossy(&fixed.stderr));
    release(build, &paused);
}

#[test]
fn resume_runs_the_rest_of_the_build_after_a_fix_and_stops_where_it_still_fails() {
    let (build, paused) = until_fixed("resume").phase("installPhase", "mkdir -p $out; echo installed > $out/done").pause();
    let unfixed = exec(&paused.id, &["nix-attach", "resume"]);
    let said = String::from_utf8_lossy(&unfixed.stderr);
    assert_eq!(unfixed.status.code(), Some(3), "{said}");
    assert!(said.contains("resume stopped: buildPhase failed (exit 3)"), "{said}");
    assert!(said.contains("never registered: the real build still fails when released"), "{said}");

    let fixed = exec(&paused.id, &["eval", "touch \"$NIX_BUILD_TOP/fixed\"; nix-attach resume"]);
    let said = String::from_utf8_lossy(&fixed.stderr);
    assert_eq!(fixed.status.code(), Some(0), "{said}");
    assert!(said.contains("every phase from buildPhase on passed: the build would pass"), "{said}");
    assert_eq!(
        eval(&paused.id, "cat $out/done; echo $curPhase; pwd"),
        format!("installed\nbuildPhase\n{}\n", eval(&paused.id, "echo $NIX_BUILD_TOP").trim())
    );

    let finished = release(build, &paused);
    assert!(finished.log.contains("failed with exit code 3"), "the real build still fails: {}", finished.log);
}

#[test]
fn the_sessions_command_takes_no_name_a_build_may_use() {
    let (build, paused) = until_fixed("names").pause();
    let in_session = eval(&paused.id, "compgen -A function");
    let in_build =
        eval(&paused.id, r#"env -i "$BASH" --norc -c 'source "$1"; compgen -A function' _ "$NIX_BUILD_TOP/.nix-attach-state.sh""#);
    let added: Vec<&str> = in_session.lines().filter(|name| !in_build.lines().any(|known| known == *name)).collect();
    assert!(added.contains(&"nix-attach"), "{added:?}");
    for name in added {
        assert!(name == "nix-attach" || name.starts_with("__nix_attach_"), "the session defines {name}, a name a build may use");
    }
    assert_eq!(
        eval(&paused.id, "type -t nix-attach; nix-attach help | head -1"),
        "function\nnix-attach status          what failed, where, and which phases ran, failed and remain\n"
    );
    release(build, &paused);
}

#[test]
fn the_host_runs_the_same_commands_with_their_output_and_status() {
    let (build, paused) = until_fixed("from-host").pause();
    let status = crate::support::nix_attach_cmd(&["status", &paused.id]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("  failed: buildPhase"), "{status:?}");
    let rerun = crate::support::nix_attach_cmd(&["rerun", &paused.id]);
    assert_eq!(rerun.status.code(), Some(3), "{rerun:?}");
    let resumed = crate::support::nix_attach_cmd(&["resume", &paused.id, "installPhase"]);
    let said = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(0), "from installPhase on, nothing fails: {said}");
    assert!(said.contains("every phase from installPhase on passed"), "{said}");
    release(build, &paused);
}

/// A build of `tests/fixtures/diff-source`, patched by `diff-source.patch`,
/// that makes a product and then fails in buildPhase.
pub fn with_source(prefix: &str) -> Drv {
    let fixtures = crate::support::fixtures();
    let src = format!("builtins.path {{ path = {}/diff-source; name = \"diff-source\"; }}", fixtures.display());
    Drv::new(prefix)
        .attr_expr("src", &src)
        .attr_expr("patches", &format!("[ {}/diff-source.patch ]", fixtures.display()))
        .phase("buildPhase", "echo object > product.o\nsh -c 'exit 3'")
}

#[test]
fn diff_shows_the_sessions_edit_as_a_patch_and_nothing_the_build_made() {
    let (build, paused) = with_source("diff").pause();
    assert_eq!(eval(&paused.id, "pwd"), format!("{}/diff-source\n", eval(&paused.id, "echo $NIX_BUILD_TOP").trim()));
    assert_eq!(eval(&paused.id, "nix-attach diff"), "", "no edit, no diff: neither product.o nor the patched notes");

    eval(&paused.id, "sed -i 's/return 1/return 0/' main.c");
    let patch = eval(&paused.id, "nix-attach diff");
    assert_eq!(
        patch,
        "diff --git a/main.c b/main.c\n--- a/main.c\n+++ b/main.c\n@@ -1,3 +1,3 @@\n int main(void) {\n-    return 1;\n+    return 0;\n }\n"
    );

    // It applies where nixpkgs applies patches: to the source as unpacked
    // and patched, with `patch -p1`.
    let tree = applied(&patch);
    assert_eq!(std::fs::read_to_string(tree.join("main.c")).unwrap(), eval(&paused.id, "cat main.c"));
    std::fs::remove_dir_all(&tree).unwrap();

    eval(&paused.id, "echo more >> docs/notes.txt");
    let both = eval(&paused.id, "nix-attach diff");
    assert!(
        both.starts_with("diff --git a/docs/notes.txt b/docs/notes.txt\n--- a/docs/notes.txt\n+++ b/docs/notes.txt\n@@ -1,2 +1,3 @@\n notes\n patched line\n+more\n"),
        "against the patched source: {both}"
    );

    eval(&paused.id, "echo added > docs/added.txt");
    assert!(!eval(&paused.id, "nix-attach diff").contains("added.txt"), "a new file only with --new");
    let with_new = eval(&paused.id, "nix-attach diff --new");
    assert!(with_new.contains("diff --git a/docs/added.txt b/docs/added.txt\nnew file mode 100644\n--- /dev/null\n+++ b/docs/added.txt\n@@ -0,0 +1 @@\n+added\n"), "{with_new}");
    assert!(!with_new.contains("product.o"), "{with_new}");
    let from_host = crate::support::nix_attach_cmd(&["diff", &paused.id, "--new"]);
    assert_eq!(String::from_utf8_lossy(&from_host.stdout), with_new, "the host's `diff ID --new` is the session's");
    assert_eq!(eval(&paused.id, "ls -a $NIX_BUILD_TOP/.nix-attach | grep -c pristine || true"), "0\n", "the scratch directory is gone");
    release(build, &paused);
}

#[test]
fn a_source_file_the_session_deletes_goes_to_dev_null_and_one_the_build_deleted_is_not_in_the_diff() {
    let (build, paused) = with_source("diff-deleted").phase("buildPhase", "rm Makefile\nsh -c 'exit 3'").pause();
    // In the directory the build deleted the Makefile from, too.
    eval(&paused.id, "rm docs/notes.txt; sed -i 's/return 1/return 0/' main.c");
    let patch = eval(&paused.id, "nix-attach diff");
    assert_eq!(
        patch,
        "diff --git a/docs/notes.txt b/docs/notes.txt\ndeleted file mode 100644\n--- a/docs/notes.txt\n+++ /dev/null\n\
         @@ -1,2 +0,0 @@\n-notes\n-patched line\n\
         diff --git a/main.c b/main.c\n--- a/main.c\n+++ b/main.c\n@@ -1,3 +1,3 @@\n int main(void) {\n-    return 1;\n+    return 0;\n }\n",
        "the Makefile was the build's to delete"
    );

    let tree = applied(&patch);
    assert!(!tree.join("docs/notes.txt").exists(), "patch -p1 deletes it");
    assert!(tree.join("Makefile").exists() && tree.join("main.c").exists());
    std::fs::remove_dir_all(&tree).unwrap();
    release(build, &paused);
}

#[test]
fn a_mode_the_session_changes_and_a_script_it_makes_carry_gits_mode_lines_which_patch_applies() {
    let (build, paused) = with_source("diff-modes").pause();
    eval(&paused.id, "chmod +x main.c; printf 'echo hi\\n' > run.sh; chmod 755 run.sh");
    assert_eq!(eval(&paused.id, "nix-attach diff"), "diff --git a/main.c b/main.c\nold mode 100644\nnew mode 100755\n", "a mode alone");
    let patch = eval(&paused.id, "nix-attach diff --new");
    assert_eq!(
        patch,
        "diff --git a/main.c b/main.c\nold mode 100644\nnew mode 100755\n\
         diff --git a/run.sh b/run.sh\nnew file mode 100755\n--- /dev/null\n+++ b/run.sh\n@@ -0,0 +1 @@\n+echo hi\n"
    );

    use std::os::unix::fs::PermissionsExt;
    let tree = applied(&patch);
    for (file, mode) in [("main.c", 0o755), ("run.sh", 0o755), ("Makefile", 0o644)] {
        assert_eq!(std::fs::metadata(tree.join(file)).unwrap().permissions().mode() & 0o777, mode, "{file}");
    }
    std::fs::remove_dir_all(&tree).unwrap();
    release(build, &paused);
}

#[test]
fn a_replays_diff_is_what_its_session_changed_and_nothing_the_build_did_before_the_capture() {
    let failing = "echo object > product.o\nrm Makefile\nsh -c 'exit 3'";
    let (dir, file) = captured(with_source("diff-replayed").phase("buildPhase", failing));
    let replayed = crate::support::capture::alice_replays(&file, &["eval", "sed -i 's/return 1/return 0/' main.c; nix-attach diff --new"]);
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout),
        MAIN_C_FIXED,
        "neither product.o nor the Makefile the build deleted: {}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn replay_with_patch_leaves_the_sessions_changes_in_a_file_outside_and_none_where_nothing_changed() {
    use crate::support::capture::alice_replays_with;
    let (dir, file) = captured(with_source("replay-patch"));
    let patch = dir.join("fix.patch");
    let replayed = alice_replays_with(&file, &["--patch", patch.to_str().unwrap()], &["sed", "-i", "s/return 1/return 0/", "main.c"]);
    let said = String::from_utf8_lossy(&replayed.stderr);
    assert!(replayed.status.success() && said.contains(&format!("are in {}", patch.display())), "{said}");
    assert_eq!(std::fs::read_to_string(&patch).unwrap(), MAIN_C_FIXED, "the session's edit, kept after its sandbox is gone");

    let unchanged = dir.join("none.patch");
    let replayed = alice_replays_with(&file, &["--patch", unchanged.to_str().unwrap()], &["true"]);
    let said = String::from_utf8_lossy(&replayed.stderr);
    assert!(replayed.status.success() && said.contains("changed nothing in the source"), "{said}");
    assert!(!unchanged.exists());

    // Said before the session, in one line.
    let refused = alice_replays_with(&file, &["--patch", "/nonexistent/fix.patch"], &["sh", "-c", "echo ran"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.lines().count() == 1 && said.contains("cannot write the patch beside"), "{said}");
    assert!(refused.stdout.is_empty(), "no session ran");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|entry| entry.file_name()).collect();
    assert_eq!(left.len(), 2, "the capture and the patch, nothing partial: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_replayed_session_that_points_its_socket_at_another_agent_of_the_users_gets_neither_its_patch_nor_its_release() {
    use crate::support::capture::alice_replays_with;
    use crate::support::{as_user, readable_nix_attach, ALICE};
    let (dir, file) = captured(with_source("replay-other-agent"));
    // Another replay of the same user's, waiting in a command: its agent's
    // socket is one the first session can point at.
    let other_tmp = dir.join("other-tmp");
    std::fs::create_dir(&other_tmp).unwrap();
    nix::unistd::chown(&other_tmp, nix::unistd::User::from_name(ALICE).unwrap().map(|user| user.uid), None).unwrap();
    let mut other = as_user(ALICE, readable_nix_attach())
        .args(["replay", file.to_str().unwrap(), "--", "sleep", "60"])
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", &other_tmp)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let other_socket = loop {
        let found = std::fs::read_dir(&other_tmp)
            .unwrap()
            .flatten()
            .map(|entry| entry.path().join("build/.nix-attach/agent.sock"))
            .find(|socket| socket.exists());
        if let Some(socket) = found {
            break socket;
        }
        assert!(std::time::Instant::now() < deadline, "the other replay's agent never listened");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let patch = dir.join("fix.patch");
    let swap = format!("sed -i s/return\\ 1/return\\ 0/ main.c; ln -sf {} $NIX_BUILD_TOP/.nix-attach/agent.sock", other_socket.display());
    let replayed = alice_replays_with(&file, &["--patch", patch.to_str().unwrap()], &["sh", "-c", &swap]);
    let said = String::from_utf8_lossy(&replayed.stderr);
    assert_eq!(replayed.status.code(), Some(1), "a session that passed fails for want of its patch: {said}");
    assert!(said.contains("cannot reach the sandbox's agent"), "{said}");
    assert!(!patch.exists(), "no patch from another agent");
    assert!(other.try_wait().unwrap().is_none(), "the other replay was released: {said}; it ended {:?}", other.wait_with_output());
    let _ = other.kill();
    let _ = other.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_replay_whose_patch_cannot_be_made_says_why_and_keeps_the_commands_status_or_fails_one_that_passed() {
    use crate::support::capture::alice_replays_with;
    // The pristine tree cannot be made again.
    let (dir, file) = captured(Drv::new("replay-patch-fails").phase("unpackPhase", UNPACKS_ONCE).phase("buildPhase", "sh -c 'exit 3'"));
    let patch = dir.join("fix.patch");
    for (command, status) in [("exit 7", 7), ("true", 1)] {
        let replayed = alice_replays_with(&file, &["--patch", patch.to_str().unwrap()], &["sh", "-c", command]);
        let said = String::from_utf8_lossy(&replayed.stderr);
        assert_eq!(replayed.status.code(), Some(status), "{command}: {said}");
        assert!(said.contains("`nix-attach diff` failed in the replay"), "{said}");
        assert!(!patch.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_replays_patch_over_max_size_is_refused_in_one_line_and_leaves_nothing() {
    use crate::support::capture::alice_replays_with;
    let (dir, file) = captured(with_source("replay-patch-bound"));
    let patch = dir.join("fix.patch");
    // A capture is hostile: what its session prints is bounded too.
    let flags = ["--patch", patch.to_str().unwrap(), "--patch-new", "--max-size", "64K"];
    let replayed = alice_replays_with(&file, &flags, &["sh", "-c", "printf '%0200000d\\n' 0 > made.txt"]);
    let said = String::from_utf8_lossy(&replayed.stderr);
    assert_eq!(replayed.status.code(), Some(1), "the command passed, the patch did not: {said}");
    assert!(said.contains("over its bound of 65536 bytes") && said.contains("--max-size"), "{said}");
    assert_eq!(said.lines().filter(|line| line.starts_with("nix-attach:")).count(), 1, "{said}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only the capture is there");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An unpackPhase that passes once: `diff` cannot make the pristine source.
pub const UNPACKS_ONCE: &str = "test ! -e \"$NIX_BUILD_TOP/unpacked\"\ntouch \"$NIX_BUILD_TOP/unpacked\"";

/// The fixture's main.c, returning 0: the edit the specs make.
pub const MAIN_C_FIXED: &str =
    "diff --git a/main.c b/main.c\n--- a/main.c\n+++ b/main.c\n@@ -1,3 +1,3 @@\n int main(void) {\n-    return 1;\n+    return 0;\n }\n";

/// `drv` paused, captured into a file in a directory every test user may
/// write to, and released; returns the directory and the file.
fn captured(drv: Drv) -> (std::path::PathBuf, std::path::PathBuf) {
    let (build, paused) = drv.pause();
    let dir = std::env::temp_dir().join(crate::support::unique_name("diff-captured"));
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("it.nix-attach");
    let captured = crate::support::nix_attach_cmd(&["capture", &paused.id, "-o", file.to_str().unwrap()]);
    assert!(captured.status.success(), "{}", String::from_utf8_lossy(&captured.stderr));
    release(build, &paused);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, file)
}

/// A copy of the fixture's source with its own patch and then `patch`
/// applied by GNU `patch -p1`, as nixpkgs' stdenv applies `patches`.
fn applied(patch: &str) -> std::path::PathBuf {
    let tree = std::env::temp_dir().join(crate::support::unique_name("diff-applies"));
    let copied =
        std::process::Command::new("cp").arg("-r").arg(crate::support::fixtures().join("diff-source")).arg(&tree).status().unwrap();
    assert!(copied.success());
    for patch_file in [std::fs::read_to_string(crate::support::fixtures().join("diff-source.patch")).unwrap(), patch.to_string()] {
        let mut apply = std::process::Command::new("patch")
            .arg("-p1")
            .current_dir(&tree)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("GNU patch (tests/bed/setup installs it)");
        std::io::Write::write_all(&mut apply.stdin.take().unwrap(), patch_file.as_bytes()).unwrap();
        assert!(apply.wait().unwrap().success(), "patch -p1 takes {patch_file}");
    }
    tree
}

#[test]
fn resume_in_a_condition_refuses_as_bash_would_ignore_errexit_there() {
    let (build, paused) = until_fixed("resume-in-if").pause();
    let asked = exec(&paused.id, &["eval", "if nix-attach resume; then echo passed; fi"]);
    let said = String::from_utf8_lossy(&asked.stderr);
    assert!(said.contains("run it as a command of its own"), "{said}");
    assert!(!said.contains("every phase") && String::from_utf8_lossy(&asked.stdout).is_empty(), "{said}");
    release(build, &paused);
}

#[test]
fn what_the_on_failure_commands_wrote_is_not_the_sessions_to_diff() {
    let (build, paused) = with_source("diff-on-failure").attr("NIX_ATTACH_ON_FAILURE", "echo noted >> main.c").pause();
    assert!(eval(&paused.id, "cat main.c").ends_with("noted\n"), "the commands ran");
    assert_eq!(eval(&paused.id, "nix-attach diff"), "", "nothing was edited in a session");
    release(build, &paused);
}
