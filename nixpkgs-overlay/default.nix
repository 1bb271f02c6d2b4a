# The nix-attach overlay for nixpkgs.
#
#   nix-attach                         the tool (host client and in-sandbox agent)
#   attachHook                         a setup hook: a failing build pauses for `nix-attach attach`
#   stdenvAdapters.withAttachOnFailure a stdenv whose every derivation gets attachHook
#
# Use it with `import <nixpkgs> { overlays = [ (import ./nixpkgs-overlay) ]; }`
# or through the flake's `overlays.default`.
final: prev: {
  nix-attach = final.callPackage ./package.nix { };

  attachHook = final.callPackage ./attach-hook.nix { };

  stdenvAdapters = (prev.stdenvAdapters or { }) // {
    withAttachOnFailure = import ./with-attach-on-failure.nix final.attachHook;
  };
}
