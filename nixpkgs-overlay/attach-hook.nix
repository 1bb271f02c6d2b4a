# The attach hook, packaged as a setup hook: add it to `nativeBuildInputs`
# and the build pauses when it fails.
#
# It carries the static agent, and an interactive bash (with line editing)
# for sessions, as breakpointHook does. The overlay (default.nix) decides
# which package set these come from.
{ makeSetupHook, stdenv, nix-attach, pkgsStatic, bashInteractive }:

let
  # In a static set, nix-attach is the static build already; and there
  # nixpkgs makes `pkgsStatic` the set as it was before the user's overlays,
  # which has no nix-attach.
  staticAgent = if stdenv.hostPlatform.isStatic or false then nix-attach else pkgsStatic.nix-attach;
in
makeSetupHook {
  name = "attach-hook";
  substitutions = {
    nixAttach = "${staticAgent}/bin/nix-attach";
    shell = "${bashInteractive}/bin/bash";
  };
} ../setup-hooks/attach-hook.sh
