# stdenvAdapters.withAttachOnFailure: a stdenv whose every derivation gets
# the attach hook, unless it says `dontAttachOnFailure = true`.
#
#   pkgs.callPackage ./foo.nix { stdenv = pkgs.stdenvAdapters.withAttachOnFailure pkgs.stdenv; }
#
# The result says `attachOnFailure = true`, so that the overlay can tell a
# package set whose own `stdenv` is this one (there the hook must not be
# built with it: see default.nix). Like any adapter made with `//`, it does
# not survive `stdenv.override`.
attachHook: stdenv:

stdenv // {
  attachOnFailure = true;

  mkDerivation = fnOrAttrs:
    (stdenv.mkDerivation fnOrAttrs).overrideAttrs (previous: {
      nativeBuildInputs =
        (previous.nativeBuildInputs or [ ])
        ++ (if previous.dontAttachOnFailure or false then [ ] else [ attachHook ]);
    });
}
