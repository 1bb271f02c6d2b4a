# stdenvAdapters.withAttachOnFailure: a stdenv whose every derivation gets
# the attach hook, unless it says `dontAttachOnFailure = true`.
#
#   pkgs.callPackage ./foo.nix { stdenv = pkgs.stdenvAdapters.withAttachOnFailure pkgs.stdenv; }
attachHook: stdenv:

stdenv // {
  mkDerivation = fnOrAttrs:
    (stdenv.mkDerivation fnOrAttrs).overrideAttrs (previous: {
      nativeBuildInputs =
        (previous.nativeBuildInputs or [ ])
        ++ (if previous.dontAttachOnFailure or false then [ ] else [ attachHook ]);
    });
}
