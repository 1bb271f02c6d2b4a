# The nix-attach overlay for nixpkgs.
#
#   nix-attach                         the tool (host client and in-sandbox agent)
#   attachHook                         a setup hook: a failing build pauses for `nix-attach attach`
#   stdenvAdapters.withAttachOnFailure a stdenv whose every derivation gets attachHook
#
# Use it with `import <nixpkgs> { overlays = [ (import ./nixpkgs-overlay) ]; }`
# or through the flake's `overlays.default`.
#
# The adapted stdenv may replace the whole set's `stdenv`, with an overlay
# listed after this one:
#
#   final: prev: { stdenv = prev.stdenvAdapters.withAttachOnFailure prev.stdenv; }
#
# It takes the adapter from `prev`: after the overlays, nixpkgs reads
# `prev.stdenv` to finish the set, so a `stdenv` defined from `final` is
# infinite recursion, whatever the adapter.
#
# The hook carries the static agent and an interactive bash, which are
# themselves built with `stdenv` (the agent's Rust toolchain too, through
# buildPackages), so in such a set they would need the hook to build the
# hook. There the hook comes from a set of its own, made by `import
# final.path` with this overlay only: stock nixpkgs, whose packages the hook
# does not reach. Elsewhere it is built from `final`, with no second set.
let
  overlay = final: prev: {
    nix-attach = final.callPackage ./package.nix { };

    attachHook =
      if isAdapted final.stdenv
      then (hookPackages final).attachHook
      else final.callPackage ./attach-hook.nix { };

    stdenvAdapters = (prev.stdenvAdapters or { }) // {
      withAttachOnFailure = import ./with-attach-on-failure.nix final.attachHook;
    };
  };

  # The adapter marks its stdenv; reading the mark does not evaluate the hook.
  isAdapted = stdenv: stdenv.attachOnFailure or false;

  # nixpkgs for the platform the hook runs on (it is a nativeBuildInput),
  # with this overlay and neither the user's overlays nor their config
  # (packageOverrides or replaceStdenv could adapt its stdenv again). Its
  # packages are the stock ones, which a binary cache may hold.
  hookPackages = final: import final.path {
    system = final.stdenv.buildPlatform.system;
    config = { };
    overlays = [ overlay ];
  };
in
overlay
