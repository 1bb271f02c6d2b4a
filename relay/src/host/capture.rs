//! `nix-attach capture`: asks a paused build's agent for its capture
//! ([`crate::capture`]), checks every entry as it arrives, and writes the
//! file, compressed with zstd.
//!
//! The agent runs in the build, so its archive is as hostile as the build:
//! each entry must be a plain path under `build/` (or the manifest), a
//! file, directory or link; modes lose setuid, setgid and sticky bits; the
//! manifest is bounded and checked field by field; and the whole stream is
//! bounded by `--max-size`. The derivation's text (`--drv`, which `build
//! --capture` passes) comes from the store, never from the agent. The file
//! is written beside its final name and renamed once whole, so a failed
//! capture leaves nothing behind.

use super::privileges;
use crate::capture::{
    self, plain_mode, CaptureError, Checked, CheckedEntries, EntryKind, Manifest, Origin, Sandbox, DERIVATION, MANIFEST, MAX_DERIVATION,
    MAX_MANIFEST,
};
use crate::protocol::{read_frame, write_frame, AgentFrame, ClientFrame, Hello, ProtocolError, Request, VERSION};
use crate::sanitize::sanitize;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// zstd's level for captures: quick, and most of the ratio.
const LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CaptureFileError {
    #[error("the build directory is larger than --max-size ({0} bytes); raise it with --max-size")]
    TooLarge(u64),
    #[error("the agent could not capture the build: {0}")]
    Agent(String),
    #[error("the agent sent a {0} frame during a capture (is it an older nix-attach?)")]
    Unexpected(&'static str),
    #[error("the agent ended the capture with status {0}")]
    Status(i32),
    #[error("the connection to the agent broke")]
    Protocol(#[from] ProtocolError),
    #[error("the agent's archive is not valid")]
    Archive(#[source] io::Error),
    #[error("the agent's archive is not valid")]
    Capture(#[from] CaptureError),
    #[error("{0} exists already; choose another name with -o")]
    Exists(PathBuf),
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] io::Error),
    #[error("--drv {0:?} is not a derivation in the store (a /nix/store/….drv path)")]
    NotDerivation(String),
    #[error("cannot read the derivation {0} (at most {MAX_DERIVATION} bytes of `Derive(…)` text)")]
    Derivation(String, #[source] io::Error),
}

/// Captures the build `query` names into `output` (by default
/// `NAME.nix-attach` here); at most `max_size` bytes of archive. The
/// capture keeps `derivation`'s path and text, where it is given.
///
/// The file is made by the caller, beside its final name, and given to the
/// person root becomes ([`privileges::successor`]); a child process gives
/// up root and alone reads what the agent sends, into that file; the
/// caller then renames it into place, or removes it. So a capture run by
/// root itself (CI) lands where root asked, and no root process reads a
/// byte the build wrote.
pub fn capture(query: Option<&str>, output: Option<PathBuf>, max_size: u64, derivation: Option<String>) -> anyhow::Result<i32> {
    if let Some(path) = output.as_ref().filter(|path| path.symlink_metadata().is_ok()) {
        return Err(CaptureFileError::Exists(path.clone()).into());
    }
    if let Some(drv) = derivation.as_ref().filter(|drv| !capture::is_derivation_path(drv, &crate::nix_conf::store_dir())) {
        return Err(CaptureFileError::NotDerivation(sanitize(drv)).into());
    }
    let connection = super::reach_keeping_root(query)?;
    let directory = output.as_deref().and_then(Path::parent).filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let partial = directory.join(format!(".nix-attach-capture-{}.partial", std::process::id()));
    let file = File::options().write(true).create_new(true).open(&partial).map_err(|err| CaptureFileError::Write(partial.clone(), err))?;
    let asked = Asked { max_size, derivation };
    let written = give_to_successor(&file).and_then(|()| write_as_successor(connection, file, &asked));
    let summary = match written {
        Ok(Some(summary)) => summary,
        failed => {
            let _ = std::fs::remove_file(&partial);
            return failed.map(|_| super::ERROR_EXIT);
        }
    };
    let path = output.unwrap_or_else(|| capture::default_file_name(&summary.name));
    if path.symlink_metadata().is_ok() {
        let _ = std::fs::remove_file(&partial);
        return Err(CaptureFileError::Exists(path).into());
    }
    std::fs::rename(&partial, &path).map_err(|err| CaptureFileError::Write(path.clone(), err))?;
    eprintln!(
        "nix-attach: captured {} to {} ({} store paths; {} special files left out)",
        sanitize(&summary.name),
        sanitize(&path.to_string_lossy()),
        summary.store_paths,
        summary.left_out
    );
    Ok(0)
}

/// What a capture keeps besides what the agent sends.
struct Asked {
    max_size: u64,
    derivation: Option<String>,
}

/// What the child tells the caller of a capture it wrote.
struct Summary {
    name: String,
    store_paths: usize,
    left_out: usize,
}

/// Gives the file to the person root becomes, where root asked on
/// someone's behalf (sudo); root's own capture stays root's.
fn give_to_successor(file: &File) -> anyhow::Result<()> {
    match privileges::successor()? {
        Some(who) if !privileges::is_nobody(who) => {
            nix::unistd::fchown(file, Some(nix::unistd::Uid::from_raw(who.0)), Some(nix::unistd::Gid::from_raw(who.1)))?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Writes the capture into `file` in a child that has given up root; its
/// summary, or `None` where it failed (it said why on stderr).
fn write_as_successor(mut connection: UnixStream, file: File, asked: &Asked) -> anyhow::Result<Option<Summary>> {
    let (mut from_child, to_parent) = std::io::pipe()?;
    // SAFETY: the client is single-threaded here; the child only runs
    // this function's code and exits.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(from_child);
            let code = match privileges::give_up_root().map_err(anyhow::Error::from).and_then(|()| {
                let manifest = write_file(&mut connection, file, asked)?;
                let sandbox = &manifest.sandbox;
                let line = format!("{}\n{}\n{}\n", sandbox.name, sandbox.store_paths.len(), sandbox.left_out.len());
                (&to_parent).write_all(line.as_bytes())?;
                Ok(())
            }) {
                Ok(()) => 0,
                Err(err) => super::say_error(&err),
            };
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop((to_parent, connection, file));
            let mut said = String::new();
            let _ = (&mut from_child).take(8192).read_to_string(&mut said);
            let status = nix::sys::wait::waitpid(child, None)?;
            let mut lines = said.lines();
            let summary = match (status, lines.next(), lines.next(), lines.next()) {
                (nix::sys::wait::WaitStatus::Exited(_, 0), Some(name), Some(paths), Some(left)) => {
                    Some(Summary { name: name.to_string(), store_paths: paths.parse().unwrap_or(0), left_out: left.parse().unwrap_or(0) })
                }
                _ => None,
            };
            Ok(summary)
        }
    }
}

/// Reads the agent's archive from `connection`, checked, into `file`,
/// and adds the derivation and the manifest.
fn write_file(connection: &mut UnixStream, file: File, asked: &Asked) -> Result<Manifest, CaptureFileError> {
    let write_error = |err| CaptureFileError::Write(PathBuf::from("the capture file"), err);
    write_frame(connection, &ClientFrame::Hello(Hello { version: VERSION, request: Request::Capture }))
        .map_err(|err| CaptureFileError::Protocol(err.into()))?;
    let mut encoder = zstd::Encoder::new(BufWriter::new(file), LEVEL).map_err(write_error)?;
    // zstd's own workers compress while this thread reads and checks.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4)) as u32;
    encoder.multithread(workers).map_err(write_error)?;
    // Frames are read through a buffer: two reads per frame otherwise.
    let connection = std::io::BufReader::with_capacity(4 * crate::protocol::MAX_FRAME, connection);
    let max_size = asked.max_size;
    let mut stream = FrameStream { connection, pending: bytes::Bytes::new(), ended: false, left: max_size, max_size, failure: None };
    let mut out = tar::Builder::new(encoder);
    let copied = copy_checked(&mut tar::Archive::new(&mut stream), &mut out);
    let sandbox = match (copied, stream.failure.take()) {
        (_, Some(failure)) => return Err(failure),
        (Err(err), None) => return Err(err),
        (Ok(sandbox), None) => sandbox,
    };
    if let Some(drv) = &asked.derivation {
        let text = read_derivation(drv)?;
        out.append_data(&mut file_header(text.len() as u64, 0o444, 0), DERIVATION, &text[..]).map_err(write_error)?;
    }
    let manifest = Manifest { sandbox, origin: origin(asked.derivation.clone()) };
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
    out.append_data(&mut file_header(json.len() as u64, 0o644, 0), MANIFEST, &json[..]).map_err(write_error)?;
    let encoder = out.into_inner().map_err(write_error)?;
    encoder.finish().and_then(|mut file| file.flush()).map_err(write_error)?;
    Ok(manifest)
}

/// Checks a whole archive as the agent sends it (a plain tar stream),
/// writing nothing: the sandbox its manifest describes, or why not.
pub fn check_archive(input: impl Read) -> Result<Sandbox, CaptureFileError> {
    copy_checked(&mut tar::Archive::new(input), &mut tar::Builder::new(io::sink()))
}

/// Copies every entry of `archive` into `out`, checked, and returns the
/// sandbox its manifest describes.
fn copy_checked<R: Read, W: Write>(archive: &mut tar::Archive<R>, out: &mut tar::Builder<W>) -> Result<Sandbox, CaptureFileError> {
    let mut sandbox = None;
    let mut entries = CheckedEntries::new(archive)?;
    while let Some(Checked { path, target, kind, mut entry }) = entries.next_checked()? {
        let header = entry.header();
        let (mode, mtime, size) = (header.mode().unwrap_or(0o644), header.mtime().unwrap_or(0), entry.size());
        if path == Path::new(DERIVATION) {
            // The derivation is read from the store, never from the build.
            return Err(CaptureError::BadPath(DERIVATION.into()).into());
        }
        if path == Path::new(MANIFEST) {
            sandbox = Some(read_sandbox(&mut entry, size)?);
            continue;
        }
        let copied = match kind {
            EntryKind::File => out.append_data(&mut file_header(size, mode, mtime), &path, &mut entry),
            EntryKind::Directory => {
                let mut header = file_header(0, mode, mtime);
                header.set_entry_type(tar::EntryType::Directory);
                out.append_data(&mut header, &path, io::empty())
            }
            EntryKind::Symlink => {
                let mut header = file_header(0, 0o777, mtime);
                header.set_entry_type(tar::EntryType::Symlink);
                out.append_link(&mut header, &path, target.unwrap_or_default())
            }
        };
        copied.map_err(CaptureFileError::Archive)?;
    }
    sandbox.ok_or(CaptureFileError::Capture(CaptureError::NoManifest))
}

/// The agent's half of the manifest, bounded and checked.
fn read_sandbox(entry: &mut impl Read, size: u64) -> Result<Sandbox, CaptureFileError> {
    if size > MAX_MANIFEST {
        return Err(CaptureError::ManifestTooLarge.into());
    }
    let mut text = Vec::new();
    entry.take(MAX_MANIFEST).read_to_end(&mut text).map_err(CaptureFileError::Archive)?;
    let sandbox: Sandbox = capture::parse_manifest(&text)?;
    sandbox.check(&crate::nix_conf::store_dir())?;
    Ok(sandbox)
}

fn file_header(size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(plain_mode(mode));
    header.set_mtime(mtime);
    header
}

/// The text of the derivation `drv` (a checked store path), bounded and
/// never through a link.
fn read_derivation(drv: &str) -> Result<Vec<u8>, CaptureFileError> {
    let failed = |err| CaptureFileError::Derivation(sanitize(drv), err);
    let file = File::options().read(true).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits()).open(drv).map_err(failed)?;
    let mut text = Vec::new();
    file.take(MAX_DERIVATION + 1).read_to_end(&mut text).map_err(failed)?;
    if text.len() as u64 > MAX_DERIVATION || !text.starts_with(b"Derive(") {
        return Err(failed(io::ErrorKind::InvalidData.into()));
    }
    Ok(text)
}

/// Where this capture is taken, of `derivation` where it is known.
fn origin(derivation: Option<String>) -> Origin {
    let version = crate::nix_program::nix_on_path().and_then(|nix| crate::nix_program::version_output(&nix));
    let nix = version.and_then(|text| text.lines().next().map(str::to_string));
    let taken = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|since| since.as_secs()).unwrap_or_default();
    let machine = nix::unistd::gethostname().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    Origin { nix: nix.unwrap_or_else(|| "unknown".into()), system: format!("{}-linux", std::env::consts::ARCH), taken, machine, derivation }
}

/// The agent's output frames as one byte stream, at most `max_size`
/// bytes; it ends at the agent's exit status. Why it failed is kept in
/// `failure`, as the archive reader sees only an I/O error.
struct FrameStream<'a> {
    connection: std::io::BufReader<&'a mut UnixStream>,
    pending: bytes::Bytes,
    ended: bool,
    left: u64,
    max_size: u64,
    failure: Option<CaptureFileError>,
}

impl FrameStream<'_> {
    fn fail(&mut self, failure: CaptureFileError) -> io::Error {
        let shown = failure.to_string();
        self.failure.get_or_insert(failure);
        io::Error::other(shown)
    }

    /// The next chunk of output; `None` at the agent's exit status 0.
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, CaptureFileError> {
        match read_frame::<AgentFrame>(&mut self.connection)? {
            Some(AgentFrame::Output(data)) if data.len() as u64 > self.left => Err(CaptureFileError::TooLarge(self.max_size)),
            Some(AgentFrame::Output(data)) => {
                self.left -= data.len() as u64;
                Ok(Some(data))
            }
            Some(AgentFrame::Exit(0)) => {
                self.ended = true;
                Ok(None)
            }
            Some(AgentFrame::Exit(status)) => Err(CaptureFileError::Status(status)),
            Some(AgentFrame::Error(message)) => Err(CaptureFileError::Agent(sanitize(&message))),
            Some(AgentFrame::Stderr(_)) => Err(CaptureFileError::Unexpected("stderr")),
            Some(AgentFrame::Terminal) => Err(CaptureFileError::Unexpected("terminal")),
            Some(AgentFrame::Relaying(_)) => Err(CaptureFileError::Unexpected("relay's greeting")),
            None => Err(CaptureFileError::Agent("it left before the capture was whole".into())),
        }
    }
}

impl Read for FrameStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.next_chunk() {
                Ok(Some(chunk)) => self.pending = chunk,
                Ok(None) => return Ok(0),
                Err(failure) => return Err(self.fail(failure)),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending = self.pending.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Sandbox;

    fn sandbox() -> Sandbox {
        Sandbox::example()
    }

    fn raw_entry(name: &str, kind: tar::EntryType, data: &[u8], declared: u64) -> Vec<u8> {
        crate::capture::raw_entry(name, kind, data, declared, None)
    }

    fn manifest_entry(sandbox: &Sandbox) -> Vec<u8> {
        let json = serde_json::to_vec(sandbox).unwrap();
        raw_entry(MANIFEST, tar::EntryType::Regular, &json, json.len() as u64)
    }

    /// Copies the archive made of `entries` (and its end) as a capture does.
    fn copy(entries: &[Vec<u8>]) -> Result<Sandbox, CaptureFileError> {
        let mut bytes = entries.concat();
        bytes.extend_from_slice(&[0; 1024]);
        let mut out = tar::Builder::new(Vec::new());
        copy_checked(&mut tar::Archive::new(&bytes[..]), &mut out)
    }

    #[test]
    fn a_well_formed_archive_is_copied_and_its_sandbox_returned() {
        let file = raw_entry("build/a", tar::EntryType::Regular, b"data", 4);
        assert_eq!(copy(&[file, manifest_entry(&sandbox())]).unwrap(), sandbox());
    }

    /// The derivation is among them: the client reads it from the store,
    /// and a build may not put its own in its place.
    #[test]
    fn a_path_out_of_the_build_directory_is_refused() {
        for name in ["build/../../etc/cron.d/x", "/etc/passwd", "elsewhere", DERIVATION] {
            let entry = raw_entry(name, tar::EntryType::Regular, b"x", 1);
            assert!(
                matches!(copy(&[entry, manifest_entry(&sandbox())]), Err(CaptureFileError::Capture(CaptureError::BadPath(_)))),
                "{name}"
            );
        }
    }

    #[test]
    fn device_files_fifos_and_hard_links_are_refused() {
        for kind in [tar::EntryType::Char, tar::EntryType::Block, tar::EntryType::Fifo, tar::EntryType::Link] {
            let entry = raw_entry("build/x", kind, b"", 0);
            assert!(matches!(copy(&[entry]), Err(CaptureFileError::Capture(CaptureError::BadKind { .. }))), "{kind:?}");
        }
    }

    #[test]
    fn a_size_that_lies_or_a_cut_stream_is_an_error_not_a_short_file() {
        let mut lying = raw_entry("build/a", tar::EntryType::Regular, b"short", 4096);
        lying.truncate(512 + 5);
        let bytes = lying;
        let mut out = tar::Builder::new(Vec::new());
        let copied = copy_checked(&mut tar::Archive::new(&bytes[..]), &mut out);
        assert!(matches!(copied, Err(CaptureFileError::Capture(CaptureError::Archive(_)))), "{copied:?}");
    }

    #[test]
    fn an_archive_without_a_manifest_or_with_a_bad_one_is_refused() {
        assert!(matches!(copy(&[]), Err(CaptureFileError::Capture(CaptureError::NoManifest))));
        let mut bad = sandbox();
        bad.store_paths.push("/etc".into());
        assert!(matches!(copy(&[manifest_entry(&bad)]), Err(CaptureFileError::Capture(CaptureError::Field("store_paths", _)))));
        let garbage = raw_entry(MANIFEST, tar::EntryType::Regular, b"{not json", 9);
        assert!(matches!(copy(&[garbage]), Err(CaptureFileError::Capture(CaptureError::Manifest(_)))));
        let mut relative = sandbox();
        relative.build_top = "../build".into();
        assert!(matches!(copy(&[manifest_entry(&relative)]), Err(CaptureFileError::Capture(CaptureError::Field("build_top", _)))));
    }
}
