#!/usr/bin/env bash
# The baseline for "attach to prompt": what nixpkgs' breakpointHook `attach`
# does today, written here from its description. It finds the waiting
# builder's pid in /proc by the derivation name in its environment, reads
# that environment for the build directory, and enters the build's
# namespaces with nsenter, running the sandbox's bash on env-vars.
#   breakpoint-attach.sh DRV-NAME BASH-IN-SANDBOX
set -euo pipefail
name=$1 shell=$2
for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    if tr '\0' '\n' < "$environ" 2> /dev/null | grep -qx "name=$name"; then
        top=$(tr '\0' '\n' < "$environ" | sed -n 's/^NIX_BUILD_TOP=//p')
        exec nsenter --mount --ipc --uts --pid --net --target "$pid" -- "$shell" --init-file "$top/env-vars" -i
    fi
done
echo "no builder for $name" >&2
exit 1
