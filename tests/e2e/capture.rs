//! `nix-attach capture` writes a paused build to one file: its build
//! directory with the shell snapshot in it, and what its sandbox was. Each
//! spec reads the file back with the crates a replay reads it with.

use crate::support::broker::Broker;
use crate::support::capture::alice_replays;
use crate::support::{eval, nix_attach_cmd, release, Drv, ALICE};
use nix_attach::capture::{Manifest, DERIVATION, MANIFEST};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One entry of a capture file.
#[derive(Debug)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    content: Vec<u8>,
    link: Option<PathBuf>,
}

/// Every entry of the capture at `path`, by name, and its manifest.
fn read_capture(path: &Path) -> (BTreeMap<String, Entry>, Manifest) {
    let file = std::fs::File::open(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let mut archive = tar::Archive::new(zstd::Decoder::new(file).unwrap());
    let mut entries = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let (kind, mode) = (entry.header().entry_type(), entry.header().mode().unwrap());
        let link = entry.link_name().unwrap().map(|link| link.into_owned());
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        entries.insert(name, Entry { kind, mode, content, link });
    }
    let manifest = serde_json::from_slice(&entries.get(MANIFEST).expect("a manifest").content).unwrap();
    (entries, manifest)
}

/// A directory every test user may write to, for their captures.
fn scratch(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(crate::support::unique_name(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    dir
}

const FAILING: &str = "echo made > made-here\nchmod 755 made-here\nmkdir -p sub && ln -s ../made-here sub/link\nmkfifo a-fifo\n\
                       local kept=yes\nsh -c 'exit 3'";

#[test]
fn a_paused_build_is_written_to_one_file_with_its_build_directory_shell_state_and_sandbox() {
    let (build, paused) = Drv::new("captured").phase("buildPhase", FAILING).pause();
    let file = scratch("capture").join("it.nix-attach");
    let captured = nix_attach_cmd(&["capture", &paused.id, "-o", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&captured.stderr);
    assert!(captured.status.success() && said.contains(&format!("captured {} to", build.name)), "{said}");
    let (entries, manifest) = read_capture(&file);

    let made = &entries["build/made-here"];
    assert_eq!((made.kind, made.content.as_slice(), made.mode), (tar::EntryType::Regular, &b"made\n"[..], 0o755));
    assert_eq!(entries["build/sub/link"].link.as_deref(), Some(Path::new("../made-here")));
    assert!(!entries.contains_key("build/a-fifo") && !entries.contains_key("build/.nix-attach/agent.sock"));
    let mut left_out = manifest.sandbox.left_out.clone();
    left_out.sort();
    assert_eq!(left_out, [".nix-attach/agent.sock", "a-fifo"]);
    let variables = String::from_utf8_lossy(&entries["build/.nix-attach-variables.sh"].content).into_owned();
    assert!(variables.contains("kept=\"yes\""), "the snapshot holds the failing phase's locals: {variables}");
    assert!(entries.contains_key("build/.nix-attach/restore.sh"));
    // The list of the files there at the pause is the agent's, for `diff`;
    // a replay makes its own.
    assert!(!entries.contains_key("build/.nix-attach/present-at-pause"));

    let sandbox = &manifest.sandbox;
    assert_eq!(
        (sandbox.build_top.clone() + "\n", sandbox.cwd.clone() + "\n"),
        (eval(&paused.id, "echo $NIX_BUILD_TOP"), eval(&paused.id, "pwd"))
    );
    assert_eq!(sandbox.name, build.name);
    let bash = eval(&paused.id, "echo ${BASH%/bin/*}");
    assert!(sandbox.store_paths.contains(&bash.trim().to_string()), "{bash} not among {:?}", sandbox.store_paths);
    assert!(sandbox.other_paths.iter().any(|path| path == "/etc/passwd"), "{:?}", sandbox.other_paths);
    assert_eq!(sandbox.uid.to_string() + "\n", eval(&paused.id, "echo $UID"));
    assert!(manifest.origin.nix.starts_with("nix ("), "{:?}", manifest.origin);

    let finished = release(build, &paused);
    assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
}

#[test]
fn a_build_directory_over_the_bound_is_refused_in_one_line_and_no_file_is_left() {
    let (build, paused) = Drv::new("too-large").phase("buildPhase", "head -c 3000000 /dev/urandom > big\nfalse").pause();
    let dir = scratch("capture-bound");
    let file = dir.join("big.nix-attach");
    let refused = nix_attach_cmd(&["capture", &paused.id, "--max-size", "1M", "-o", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(125), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("larger than --max-size (1048576 bytes)"), "{said}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "something was left in {}", dir.display());

    std::fs::write(&file, "mine").unwrap();
    let kept = nix_attach_cmd(&["capture", &paused.id, "-o", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&kept.stderr).contains("exists already"), "{}", String::from_utf8_lossy(&kept.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    release(build, &paused);
}

#[test]
fn the_owner_captures_their_build_through_the_broker_without_sudo() {
    let broker = Broker::start();
    let mut build = Drv::new("captured-by-owner").phase("buildPhase", "local secret=alices\nfalse").start_as(ALICE);
    let paused = build.paused();
    let file = scratch("capture-owner").join("alices.nix-attach");
    let captured = broker.run_as(ALICE, &["capture", &paused.id, "-o", file.to_str().unwrap()]);
    assert!(captured.status.success(), "{}", String::from_utf8_lossy(&captured.stderr));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), crate::support::uid_of(ALICE), "the file is alice's");
    let (entries, _) = read_capture(&file);
    assert!(String::from_utf8_lossy(&entries["build/.nix-attach-variables.sh"].content).contains("secret=\"alices\""));
    release(build, &paused);
}

/// What a session sees of the build's state, live or replayed.
const PROBE: &str = "myHelper; echo $phaseLocal; printf '%s|' \"${arr[@]}\"; echo; echo $PWD; umask; cat made-here; echo $UID $HOSTNAME";

/// A build that pauses with state for [`PROBE`], captured into a file
/// every user may read; returns the file and what a live session saw.
fn captured_for_replay(prefix: &str) -> (PathBuf, String) {
    let state = "myHelper() { echo helper; }\nlocal phaseLocal=kept\ndeclare -a arr=(a 'b c')\nmkdir -p src && cd src\n\
                 echo made > made-here\numask 0027\nsh -c 'exit 3'";
    let (build, paused) = Drv::new(prefix).phase("buildPhase", state).pause();
    let file = scratch(prefix).join("it.nix-attach");
    let captured = nix_attach_cmd(&["capture", &paused.id, "-o", file.to_str().unwrap()]);
    assert!(captured.status.success(), "{}", String::from_utf8_lossy(&captured.stderr));
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let live = eval(&paused.id, PROBE);
    release(build, &paused);
    (file, live)
}

#[test]
fn an_ordinary_user_replays_a_capture_with_the_state_a_live_session_had() {
    let (file, live) = captured_for_replay("replayed");
    let replayed = alice_replays(&file, &["eval", PROBE]);
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stderr));
    assert_eq!(String::from_utf8_lossy(&replayed.stdout), live);
    let status = alice_replays(&file, &["eval", "exit 7"]);
    assert_eq!(status.status.code(), Some(7), "the command's own status");
}

#[test]
fn a_replay_at_a_terminal_is_an_attach_in_the_recreated_sandbox_and_leaves_nothing_behind() {
    let (file, _) = captured_for_replay("replayed-attach");
    let (user, group) = (format!("--reuid={ALICE}"), format!("--regid={ALICE}"));
    // A temporary directory of this replay's own, to see that it is left empty.
    let tmp = scratch("replay-tmp");
    let tmpdir = format!("TMPDIR={}", tmp.display());
    let args =
        [user.as_str(), &group, "--init-groups", "env", "-u", "XDG_RUNTIME_DIR", &tmpdir, crate::support::readable_nix_attach(), "replay"];
    let mut terminal = crate::support::pty::Terminal::spawn("setpriv", &[&args[..], &[file.to_str().unwrap()]].concat(), 24, 100);
    let origin = crate::support::capture::manifest_of(&file).origin;
    let machine = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    assert!(origin.describe().contains(&format!(" on {machine} (nix (")), "{origin:?}");
    let banner = terminal.expect(&format!("a replay of a capture {}: no process of the build runs here", origin.describe()));
    let inside = terminal.expect_after(banner, " $ ");
    terminal.send("echo \"local=$phaseLocal etc=$(echo /etc/*) root=$(echo /*)\"\r");
    terminal.expect_after(inside, "local=kept etc=/etc/group /etc/hosts /etc/passwd root=/build /dev /etc /nix /proc /tmp");
    terminal.send("exit 4\r");
    assert_eq!(terminal.wait(), 4);
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().map(|entry| entry.path()).collect();
    assert!(left.is_empty(), "replay left {left:?}");
}

/// `file` written again with its manifest changed by `change`.
fn rewritten(file: &Path, change: impl FnOnce(&mut Manifest)) -> PathBuf {
    let (entries, mut manifest) = read_capture(file);
    change(&mut manifest);
    let out = file.with_extension("changed");
    let mut archive = tar::Builder::new(zstd::Encoder::new(std::fs::File::create(&out).unwrap(), 3).unwrap().auto_finish());
    for (name, entry) in entries.iter().filter(|(name, _)| name.as_str() != MANIFEST) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_size(entry.content.len() as u64);
        match &entry.link {
            Some(link) => archive.append_link(&mut header, name, link).unwrap(),
            None => archive.append_data(&mut header, name, &entry.content[..]).unwrap(),
        }
    }
    let json = serde_json::to_vec(&manifest).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    archive.append_data(&mut header, MANIFEST, &json[..]).unwrap();
    archive.finish().unwrap();
    drop(archive);
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    out
}

#[test]
fn store_paths_missing_here_are_counted_and_named_in_one_line() {
    let (file, _) = captured_for_replay("replay-missing");
    let absent = "/nix/store/0000000000000000000000000000000a-not-in-this-store";
    let file = rewritten(&file, |manifest| manifest.sandbox.store_paths.push(absent.to_string()));
    let refused = alice_replays(&file, &["true"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!((refused.status.code(), said.lines().count()), (Some(125), 1), "{said}");
    assert!(said.contains("1 of the ") && said.contains(&format!("(the first: {absent}); fetch them with")), "{said}");
}

#[test]
fn a_store_path_that_is_a_link_is_a_link_in_the_replay_and_what_it_points_to_stays_outside() {
    let (file, _) = captured_for_replay("replay-link");
    // A directory of this machine a capture must never bring into view,
    // and a store path that points at it (valid here: added to the store).
    let private = scratch("replay-link-private");
    std::fs::write(private.join("secret"), "host-only\n").unwrap();
    let link = scratch("replay-link").join("points-out");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let added = std::process::Command::new("nix-store").arg("--add").arg(&link).env("NIX_REMOTE", "daemon").output().unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let store_link = String::from_utf8(added.stdout).unwrap().trim().to_string();
    let file = rewritten(&file, |manifest| manifest.sandbox.store_paths.push(store_link.clone()));
    let probe = format!("readlink {store_link}; cat {store_link}/secret 2>/dev/null || echo not-here");
    let replayed = alice_replays(&file, &["eval", &probe]);
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stderr));
    assert_eq!(String::from_utf8_lossy(&replayed.stdout), format!("{}\nnot-here\n", private.display()));
}

#[test]
fn a_build_directory_placed_to_lead_out_of_the_sandbox_is_refused_and_nothing_is_made() {
    let (file, _) = captured_for_replay("replay-top");
    let outside = scratch("replay-top-outside");
    // Through /proc, bubblewrap would resolve the path in this machine's
    // root and make the directories there.
    let top = format!("/proc/self/root/oldroot{}/made", outside.display());
    let file = rewritten(&file, |manifest| manifest.sandbox.build_top = top.clone());
    let refused = alice_replays(&file, &["true"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!((refused.status.code(), said.lines().count()), (Some(125), 1), "{said}");
    assert!(said.contains(&format!("puts its build directory at {top}, at or around /proc,")), "{said}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something was made outside");
}

#[test]
fn what_a_capture_says_reaches_the_terminal_escaped_even_in_an_error() {
    let (file, _) = captured_for_replay("replay-escapes");
    let file = rewritten(&file, |manifest| manifest.sandbox.hostname = "runner\u{1b}]52;c;aGk=\u{7}".into());
    let refused = alice_replays(&file, &["true"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!((refused.status.code(), said.lines().count()), (Some(125), 1), "{said}");
    assert!(!said.contains('\u{1b}') && said.contains("runner\\e]52;c;aGk="), "{said:?}");
}

#[test]
fn a_capture_that_writes_through_its_own_link_is_refused_and_nothing_lands_outside() {
    let (file, _) = captured_for_replay("replay-hostile");
    let outside = scratch("replay-outside");
    let (entries, manifest) = read_capture(&file);
    let hostile = file.with_extension("hostile");
    let mut archive = tar::Builder::new(zstd::Encoder::new(std::fs::File::create(&hostile).unwrap(), 3).unwrap().auto_finish());
    for (name, entry) in entries.iter().filter(|(name, _)| name.as_str() == "build" || name.starts_with("build/.nix-attach")) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_size(entry.content.len() as u64);
        archive.append_data(&mut header, name, &entry.content[..]).unwrap();
    }
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    archive.append_link(&mut link, "build/out", &outside).unwrap();
    let mut through = tar::Header::new_gnu();
    through.set_size(4);
    through.set_mode(0o644);
    archive.append_data(&mut through, "build/out/planted", &b"evil"[..]).unwrap();
    let json = serde_json::to_vec(&manifest).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    archive.append_data(&mut header, MANIFEST, &json[..]).unwrap();
    archive.finish().unwrap();
    drop(archive);
    std::fs::set_permissions(&hostile, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let refused = alice_replays(&hostile, &["true"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!((refused.status.code(), said.lines().count()), (Some(125), 1), "{said}");
    assert!(said.contains("\"build/out/planted\" is reached through a link in the archive"), "{said}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "something landed outside");
}

#[test]
fn in_ci_capture_writes_each_paused_build_to_a_file_before_it_is_released_and_names_it() {
    let drv = Drv::new("ci-captured").phase("buildPhase", "local insideVar=here\nsh -c 'exit 3'");
    let dir = scratch("ci-capture");
    let ran = std::process::Command::new(crate::support::nix_attach())
        .args(["run", "--capture", dir.to_str().unwrap(), "--", "nix-build", "--no-out-link", "--expr", &drv.expression()])
        .env("GITHUB_ACTIONS", "true")
        .env("NIX_REMOTE", "daemon")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&ran.stdout), String::from_utf8_lossy(&ran.stderr));
    assert!(!ran.status.success() && stderr.contains("failed with exit code 3"), "the build fails as it would have: {stderr}");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|entry| entry.path()).collect();
    assert_eq!(files.len(), 1, "{files:?}\n{stderr}");
    let replay = format!("enter it later, anywhere, with `nix-attach replay {}`", files[0].display());
    assert!(stderr.contains(&replay), "{stderr}");
    assert!(stdout.contains("::notice title=nix-attach::captured build"), "{stdout}");
    let (entries, manifest) = read_capture(&files[0]);
    let built = drv.instantiate();
    assert_eq!(manifest.origin.derivation.as_deref(), Some(built.as_str()), "the file names the derivation that was built");
    assert_eq!(entries[DERIVATION].content, std::fs::read(&built).unwrap(), "and holds its text");
    std::fs::set_permissions(&files[0], std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let replayed = alice_replays(&files[0], &["eval", "echo $insideVar"]);
    assert_eq!(String::from_utf8_lossy(&replayed.stdout), "here\n", "{}", String::from_utf8_lossy(&replayed.stderr));
}

#[test]
fn a_derivation_that_is_not_one_is_refused_before_anything_is_asked() {
    let refused = nix_attach_cmd(&["capture", "no-such-build", "--drv", "/etc/passwd"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!((refused.status.code(), said.lines().count()), (Some(125), 1), "{said}");
    assert!(said.contains("\"/etc/passwd\" is not a derivation in the store"), "{said}");
}

#[test]
fn root_captures_where_it_asks_and_under_sudo_the_file_is_the_sudo_users() {
    let (build, paused) = Drv::new("captured-by-root").phase("buildPhase", "false").pause();
    let dir = std::env::temp_dir().join(crate::support::unique_name("capture-root-only"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    use std::os::unix::fs::MetadataExt;
    let owner_of = |name: &str, env: &[(&str, String)]| {
        let file = dir.join(name);
        let mut capture = std::process::Command::new(crate::support::nix_attach());
        capture.args(["capture", &paused.id, "-o", file.to_str().unwrap()]).env_remove("SUDO_UID").env_remove("SUDO_GID");
        let captured = capture.envs(env.iter().map(|(key, value)| (key, value))).output().unwrap();
        assert!(captured.status.success(), "{}", String::from_utf8_lossy(&captured.stderr));
        std::fs::metadata(&file).unwrap().uid()
    };
    assert_eq!(owner_of("roots.nix-attach", &[]), 0, "root's own capture is root's");
    let alice = crate::support::uid_of(ALICE);
    let sudo = [("SUDO_UID", alice.to_string()), ("SUDO_GID", alice.to_string())];
    assert_eq!(owner_of("alices.nix-attach", &sudo), alice, "under sudo, the file is the sudo user's");
    release(build, &paused);
}
