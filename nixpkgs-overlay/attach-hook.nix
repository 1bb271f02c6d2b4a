# The attach hook, packaged as a setup hook: add it to `nativeBuildInputs`
# and the build pauses when it fails.
#
# It carries the static agent, and an interactive bash (with line editing)
# for sessions, as breakpointHook does.
{ makeSetupHook, pkgsStatic, bashInteractive }:

makeSetupHook {
  name = "attach-hook";
  substitutions = {
    nixAttach = "${pkgsStatic.nix-attach}/bin/nix-attach";
    shell = "${bashInteractive}/bin/bash";
  };
} ../setup-hooks/attach-hook.sh
