//! The `nix-attach` binary: parses the command line and reports errors.

use clap::Parser;

fn main() {
    let cli = nix_attach::cli::Cli::parse();
    let code = match nix_attach::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("nix-attach: error: {err:#}");
            nix_attach::host::ERROR_EXIT
        }
    };
    std::process::exit(code);
}
