# nix-attach, built from this repository's source.
#
# The agent runs inside build sandboxes, which hold nothing but a build's
# inputs, so the hook uses the static build (pkgsStatic.nix-attach).
{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "nix-attach";
  version = "0.1.0";

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [ ../Cargo.toml ../Cargo.lock ../relay ../tests/e2e ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  # The end-to-end tests need a root nix-daemon; the flake's checks run the
  # unit tests.
  doCheck = false;

  # Never pause the build of the tool that does the pausing.
  dontAttachOnFailure = true;

  # nix.conf's pre-build-hook names this link (Nix passes no arguments of
  # ours, so the name says what to do).
  postInstall = ''
    ln -s nix-attach $out/bin/nix-attach-pre-build-hook
  '';

  meta = {
    description = "Attach a shell to a failed Nix build, inside its sandbox, with the builder's shell state";
    license = lib.licenses.mit;
    mainProgram = "nix-attach";
    platforms = lib.platforms.linux;
  };
}
