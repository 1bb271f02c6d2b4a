//! `nix-attach retry`: decides how a failed derivation is built once more
//! so that this time it pauses when it fails, with no edit to its
//! expression, on every Nix and Lix ([`prepare`]); the wrapper then runs
//! that build as `nix-attach build` does (`crate::wrapper::rebuild`). It
//! may use the derivation, store and injection modules, never the wrapper.
//!
//! 1. The argument becomes one derivation ([`target`]), whose inputs must
//!    all still be valid: the failed build had them, so nothing but the
//!    derivation itself is built again.
//! 2. Where the daemon's pre-build hook puts the attach hook into a stdenv
//!    build ([`crate::inject`]), the same derivation is built again, asked
//!    for by the wrapper, so its outputs are the real ones.
//! 3. Everywhere else a copy is built that differs only by carrying the
//!    hook ([`carrier`]): the hook, the static agent (this binary) and
//!    `retry-builder.sh` are added to the store as one content-addressed
//!    path, and the copy is written as a Nix expression ([`copy`],
//!    [`expression`]) and instantiated. Its outputs are its own: they are
//!    never the original's and never stand in for them (a fixed output
//!    keeps its path, which Nix checks against the hash).
//!
//! May use: [`derivation`](crate::derivation), [`inject`](crate::inject),
//! [`nix_conf`](crate::nix_conf), [`store`](crate::store); no module that
//! uses it (`layout` keeps the arrows one way).

pub mod carrier;
pub mod copy;
pub mod expression;
pub mod target;

use crate::derivation::{name_of, Derivation, DerivationError};
use crate::inject::{self, files::HOOK};
use crate::store::{self, StoreError};
use carrier::{Carrier, CarrierError};
use copy::{Attributes, CopyError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use target::TargetError;

/// What `retry-builder.sh` is, as the repository ships it.
const RETRY_BUILDER: &str = include_str!("../../../setup-hooks/retry-builder.sh");
/// The name of the store path with the hook's files.
const ASSETS: &str = "nix-attach-retry";

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("cannot read {0}")]
    Derivation(PathBuf, #[source] DerivationError),
    #[error("inputs of {drv} are gone from the store ({gone}); build its inputs again first (`nix-store --realise` each), then retry")]
    Gone { drv: PathBuf, gone: String },
    #[error("cannot retry {0} so that it pauses")]
    Carrier(String, #[source] CarrierError),
    #[error("cannot copy {0}")]
    Copy(String, #[source] CopyError),
    #[error("cannot prepare the hook's files in {0}")]
    Assets(PathBuf, #[source] std::io::Error),
    #[error("cannot write the copy's expression to {0}")]
    Expression(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the derivation is built again.
#[derive(Debug)]
pub enum Plan {
    /// The same derivation: the daemon injects the hook.
    Same(PathBuf),
    /// A copy that carries the hook.
    Copy { drv: PathBuf, carrier: Carrier },
}

/// A build to run again: what to say first, and nix-build's arguments.
#[derive(Debug)]
pub struct Rebuild {
    /// The line that says how it is built again.
    pub line: String,
    /// `nix-build`'s arguments.
    pub args: Vec<OsString>,
}

/// Decides how the derivation at `drv_path` is built again so that it
/// pauses, and makes the copy where one is needed.
pub fn prepare(drv_path: &Path) -> Result<Rebuild, RetryError> {
    let plan = plan(drv_path)?;
    let name = name_of(drv_path);
    let (line, built) = match &plan {
        Plan::Same(drv) => (format!("building {name} again, as it is: the daemon's pre-build hook makes it pause when it fails"), drv),
        Plan::Copy { drv, carrier } => (
            format!(
                "building {name} again as a copy that pauses when it fails ({}); a session has {}. \
                 The copy's outputs are its own: never the original's, and never used in their place \
                 (a fixed output keeps its path, checked against its hash)",
                drv.display(),
                carrier.restores()
            ),
            drv,
        ),
    };
    let outputs = outputs_of(built)?;
    let mut args: Vec<OsString> = vec!["--no-out-link".into()];
    // Outputs already there would not be built again.
    if store::invalid(&outputs)?.is_empty() {
        args.push("--check".into());
    }
    args.push(built.into());
    Ok(Rebuild { line, args })
}

/// Decides how to build `drv_path` again, and makes the copy if needed.
pub fn plan(drv_path: &Path) -> Result<Plan, RetryError> {
    let mut drv = Derivation::read(drv_path).map_err(|err| RetryError::Derivation(drv_path.to_path_buf(), err))?;
    let inputs = inputs_of(drv_path, &drv)?;
    let gone = store::invalid(&inputs)?;
    if !gone.is_empty() {
        return Err(RetryError::Gone { drv: drv_path.to_path_buf(), gone: gone.join(", ") });
    }
    if inject::would_hook(&drv) {
        return Ok(Plan::Same(drv_path.to_path_buf()));
    }
    let name = name_of(drv_path);
    let mut attributes = Attributes::of(&drv).map_err(|err| RetryError::Copy(name.clone(), err))?;
    let carrier = Carrier::choose(&drv, &attributes, &inputs).map_err(|err| RetryError::Carrier(name.clone(), err))?;
    let assets = add_assets()?;
    carrier.apply(&assets, &mut drv, &mut attributes).map_err(|err| RetryError::Carrier(name.clone(), err))?;
    let mut paths = expression::Paths::new(&crate::nix_conf::store_dir().to_string_lossy());
    inputs.iter().chain(std::iter::once(&assets)).for_each(|input| paths.input(input));
    drv.outputs.iter().for_each(|(output, path)| paths.output(output, path));
    let text = copy::expression(&drv, &attributes, &paths, &inputs);
    let copy = instantiate(&text)?;
    Ok(Plan::Copy { drv: copy, carrier })
}

/// The store paths the build reads: its sources and the outputs it uses
/// of each input derivation.
fn inputs_of(drv_path: &Path, drv: &Derivation) -> Result<Vec<String>, RetryError> {
    let mut inputs = drv.input_sources.clone();
    for (input, used) in &drv.input_derivations {
        let input_path = Path::new(input);
        if !input_path.exists() {
            return Err(RetryError::Gone { drv: drv_path.to_path_buf(), gone: input.clone() });
        }
        let input_drv = Derivation::read(input_path).map_err(|err| RetryError::Derivation(input_path.to_path_buf(), err))?;
        inputs.extend(used.iter().filter_map(|output| input_drv.outputs.get(output)).filter(|path| !path.is_empty()).cloned());
    }
    Ok(inputs)
}

fn outputs_of(drv_path: &Path) -> Result<Vec<String>, RetryError> {
    let drv = Derivation::read(drv_path).map_err(|err| RetryError::Derivation(drv_path.to_path_buf(), err))?;
    Ok(drv.output_paths())
}

/// A private scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// A new directory of a random name, only its owner's (it fails if the
    /// name is taken).
    fn new() -> Result<Scratch, RetryError> {
        use std::os::unix::fs::DirBuilderExt;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|err| RetryError::Assets(std::env::temp_dir(), std::io::Error::other(err.to_string())))?;
        let suffix: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("nix-attach-retry-{suffix}"));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|err| RetryError::Assets(dir.clone(), err))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Adds the hook, `retry-builder.sh` and the static agent (this binary)
/// to the store as one path; returns it. The hook finds the agent beside
/// itself.
fn add_assets() -> Result<String, RetryError> {
    let scratch = Scratch::new()?;
    let dir = scratch.0.join(ASSETS);
    let io = |err| RetryError::Assets(dir.clone(), err);
    std::fs::create_dir(&dir).map_err(io)?;
    let binary = std::env::current_exe().map_err(io)?;
    std::fs::copy(&binary, dir.join("nix-attach")).map_err(io)?;
    let hook = HOOK.replace("@nixAttach@", "${BASH_SOURCE[0]%/*}/nix-attach").replace("@shell@", "");
    std::fs::write(dir.join("attach-hook.sh"), hook).map_err(io)?;
    std::fs::write(dir.join("retry-builder.sh"), RETRY_BUILDER).map_err(io)?;
    Ok(store::add(&dir)?)
}

/// Instantiates the copy's expression; returns the copy's path.
fn instantiate(text: &str) -> Result<PathBuf, RetryError> {
    let scratch = Scratch::new()?;
    let file = scratch.0.join("copy.nix");
    std::fs::write(&file, text).map_err(|err| RetryError::Expression(file.clone(), err))?;
    Ok(PathBuf::from(store::instantiate(&file)?))
}
