# nix-attach retry: sourced first by the bash that runs a retried build
# whose builder is not nixpkgs' stdenv, so that its failure pauses too.
#
# It sits beside attach-hook.sh and the static agent in one store path,
# which `nix-attach retry` adds to the store. It loads the attach hook and
# puts in the part of the stdenv the hook relies on: an EXIT trap that runs
# the failure hook when the builder ends non-zero. Then:
# - a bash builder's own script runs in this same shell, so a failure
#   pauses with its variables, functions, options and working directory
#   (the failing function's locals too, where errexit ends it);
# - any other builder runs as a child, through nixAttachRunBuilder, so a
#   failure pauses with the build's environment and directory only.
# A builder that sets its own EXIT trap replaces this one, and then does
# not pause.

source "${BASH_SOURCE[0]%/*}/attach-hook.sh"

__nixAttachExitHandler() {
    exitCode=$?
    if ((exitCode != 0)); then
        set +e
        nixAttachFailureHook
    fi
    exit "$exitCode"
}
trap __nixAttachExitHandler EXIT

# Runs a builder that is not bash, as a child; its failure is the build's.
nixAttachRunBuilder() {
    "$@" && return 0
    __nixAttachStatus=$?
    __nixAttachSnapshot exit "$__nixAttachStatus" "$*" "" || __nixAttachKind=failed
    exit "$__nixAttachStatus"
}
