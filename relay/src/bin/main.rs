//! The `nix-attach` binary: parses the command line and reports errors.

use clap::Parser;

fn main() {
    // nix.conf's pre-build-hook names a link to this binary and passes no
    // arguments of ours: the name says what to do.
    let mut args = std::env::args();
    let name = args.next().unwrap_or_default();
    if std::path::Path::new(&name).file_name().is_some_and(|name| name == nix_attach::inject::PROGRAM) {
        std::process::exit(nix_attach::inject::run(&args.collect::<Vec<_>>()));
    }
    let cli = nix_attach::cli::Cli::parse();
    let code = match nix_attach::cli::run(cli) {
        Ok(code) => code,
        Err(err) => nix_attach::host::say_error(&err),
    };
    std::process::exit(code);
}
