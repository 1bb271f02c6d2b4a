# nix-attach setup hook: a failing build waits, with its shell state, for a
# person to attach to it (`nix-attach attach`).
#
# Add it to a derivation's inputs like any setup hook. Packaging substitutes
# two placeholders, as makeSetupHook does: nixAttach, the static nix-attach
# binary, and shell, the shell for sessions (or nothing, for the builder's
# own bash).
#
# How it works:
# - An ERR trap (with errtrace) notices the command that will end the build,
#   in the failing frame, and snapshots the shell there: its variables,
#   locals included, functions, aliases and options. It costs one test when
#   the failure is not fatal (set +e regions, subshells).
# - A failure hook (failureHooks) runs when the build exits non-zero. If no
#   ERR snapshot was taken (an explicit `exit`, a fatal expansion error), it
#   snapshots there, without the failing function's locals. Then it runs the
#   agent, which waits for sessions and returns; the build then fails with
#   its original exit code.
#
# Settings, derivation attributes (environment variables, or shell variables
# under __structuredAttrs; the hook reads them as shell variables and passes
# each to the agent explicitly):
#   dontAttachOnFailure   set to a non-empty value: this hook does nothing
#   NIX_ATTACH_TIMEOUT    idle seconds before the build gives up (1800)
#   NIX_ATTACH_MAX_PAUSE  seconds the build stays paused in all (14400, at
#                         most a day), sessions or not
#   NIX_ATTACH_SHELL      the shell for sessions (default: the packaged
#                         shell, else the builder's own bash, found by the
#                         agent: $BASH is not reliable when bash was started
#                         without a path)
#   NIX_ATTACH_ON_FAILURE commands run in the restored shell at the failure,
#                         before the build waits; their output goes to the
#                         build log, bounded (`cat config.log`)

# Not in nix-shell (leaving it with a failing status is no failed build),
# not twice, and not where the derivation opts out.
if [[ -z "${dontAttachOnFailure-}" && -z "${IN_NIX_SHELL-}" && -z "${__nixAttachLoaded-}" ]]; then
__nixAttachLoaded=1

# Writes the snapshot with builtins only, three files: functions and aliases,
# variables (`declare -p`: every variable visible here, the failing frame's
# locals included; the agent leaves out the ones bash manages itself), and
# options.
# Called as `__nixAttachSnapshot KIND STATUS COMMAND LINE || …`, so that
# errexit is off inside it; it returns non-zero if a file could not be
# written.
__nixAttachSnapshot() {
    local __nixAttachDir=${NIX_BUILD_TOP:-${TMPDIR:-/tmp}}
    __nixAttachStateFile=$__nixAttachDir/.nix-attach-state.sh
    __nixAttachVariablesFile=$__nixAttachDir/.nix-attach-variables.sh
    __nixAttachOptionsFile=$__nixAttachDir/.nix-attach-options
    __nixAttachKind=$1
    __nixAttachStatus=$2
    __nixAttachCommand=${3:0:4000}
    __nixAttachPwd=$PWD
    __nixAttachFrames=()
    # The failing frames start above this function and its caller; at exit,
    # above the EXIT trap's handler (the stdenv's, or retry's).
    local -i __nixAttachI=2 __nixAttachFirst=2
    for ((; __nixAttachI < ${#FUNCNAME[@]}; __nixAttachI++)); do
        [[ $1 == err || ( ${FUNCNAME[__nixAttachI]} != exitHandler && ${FUNCNAME[__nixAttachI]} != __nixAttachExitHandler ) ]] ||
            __nixAttachFirst=__nixAttachI+1
    done
    for ((__nixAttachI = __nixAttachFirst; __nixAttachI < ${#FUNCNAME[@]} && __nixAttachI < __nixAttachFirst + 64; __nixAttachI++)); do
        __nixAttachFrames+=("${FUNCNAME[__nixAttachI]} (${BASH_SOURCE[__nixAttachI]-?}:${BASH_LINENO[__nixAttachI - 1]})")
    done
    [[ $1 != err ]] || __nixAttachFrames[0]="${FUNCNAME[2]-main} (${BASH_SOURCE[2]-?}:$4)"
    { set +o; shopt -p; umask -p; } > "$__nixAttachOptionsFile" || return 1
    declare -p > "$__nixAttachVariablesFile" || return 1
    { declare -f; alias -p; } > "$__nixAttachStateFile" || return 1
}

# The call that failed in the failing frame, where a function failed
# through `return N` (substituteInPlace, patchShebangs, many hooks): bash
# leaves BASH_COMMAND at that `return`, the last command run inside the
# function. So the failing frame's own line is looked up instead, by
# LINENO: in the code it eval'd (a phase or a hook given as a string, as
# nixpkgs' runPhase, genericBuild, _callImplicitHook and _eval run them;
# there LINENO counts from the line of the eval), or else in the file it
# was defined in. Prints the line, trimmed, or nothing. Runs only when a
# failure ends the build.
# Called as `__nixAttachFailedCall LINENO FRAME-ARG1 || …` from the
# function the trap calls, so the failing frame is FUNCNAME[2].
__nixAttachFailedCall() {
    local __nixAttachFunction=${FUNCNAME[2]-} __nixAttachFile=${BASH_SOURCE[2]-} __nixAttachEvald=
    local -i __nixAttachLine=$1 __nixAttachStart=1 __nixAttachI __nixAttachEval=0
    case $__nixAttachFunction in
        runPhase | genericBuild)
            if [[ $__nixAttachFunction == genericBuild && -n "${buildCommand-}" ]]; then
                __nixAttachEvald=$buildCommand
            elif [[ -n "${curPhase-}" ]]; then
                __nixAttachEvald=${!curPhase:-$curPhase}
            fi ;;
        _callImplicitHook) [[ -z "${hookName-}" ]] || __nixAttachEvald=${!hookName-} ;;
        _eval) __nixAttachEvald=$2 ;;
    esac
    local -a __nixAttachSource=() __nixAttachCode=()
    [[ -f $__nixAttachFile && -r $__nixAttachFile ]] && mapfile -t __nixAttachSource < "$__nixAttachFile"
    if [[ -n $__nixAttachEvald && -n $__nixAttachFunction ]]; then
        # The eval is the last line with one, in the frame's function, at
        # or before LINENO.
        local __nixAttachWhere
        shopt -s extdebug
        __nixAttachWhere=$(declare -F "$__nixAttachFunction")
        shopt -u extdebug
        __nixAttachWhere=${__nixAttachWhere#* }
        __nixAttachStart=${__nixAttachWhere%% *}
        for ((__nixAttachI = __nixAttachStart; __nixAttachI <= __nixAttachLine && __nixAttachI <= ${#__nixAttachSource[@]}; __nixAttachI++)); do
            [[ ! ${__nixAttachSource[__nixAttachI - 1]} =~ (^|[^[:alnum:]_])eval[[:space:]] ]] || __nixAttachEval=__nixAttachI
        done
        mapfile -t __nixAttachCode <<< "$__nixAttachEvald"
    fi
    local __nixAttachFound=
    if ((__nixAttachEval > 0 && __nixAttachLine - __nixAttachEval < ${#__nixAttachCode[@]})); then
        __nixAttachFound=${__nixAttachCode[__nixAttachLine - __nixAttachEval]}
    elif ((__nixAttachLine > 0 && __nixAttachLine <= ${#__nixAttachSource[@]})); then
        __nixAttachFound=${__nixAttachSource[__nixAttachLine - 1]}
    fi
    __nixAttachFound=${__nixAttachFound#"${__nixAttachFound%%[![:space:]]*}"}
    printf %s "${__nixAttachFound%"${__nixAttachFound##*[![:space:]]}"}"
}

# The ERR trap's work once it knows the failure ends the build. Arguments:
# STATUS COMMAND LINENO FRAME-ARG1.
__nixAttachOnFatalError() {
    [[ -z "${__nixAttachKind-}" ]] || return 0
    local __nixAttachCall=$2
    if [[ $2 == return || $2 == "return "* ]]; then
        __nixAttachCall=$(__nixAttachFailedCall "$3" "${4-}") || __nixAttachCall=
        [[ -n $__nixAttachCall ]] || __nixAttachCall=$2
    fi
    __nixAttachSnapshot err "$1" "$__nixAttachCall" "$3" || __nixAttachKind=failed
}

# Runs as a failure hook: snapshots if the ERR trap did not, then waits. A
# build that will succeed anyway (succeedOnFailure) does not wait.
nixAttachFailureHook() {
    [[ -z "${succeedOnFailure-}" ]] || return 0
    local __nixAttachCode=${exitCode:-${__nixAttachStatus:-1}}
    if [[ -z "${__nixAttachKind-}" ]]; then
        __nixAttachSnapshot exit "$__nixAttachCode" "$BASH_COMMAND" "" || __nixAttachKind=failed
    fi
    if [[ $__nixAttachKind == failed ]]; then
        echo "nix-attach: cannot write the shell snapshot to ${NIX_BUILD_TOP:-${TMPDIR:-/tmp}} (is it full?); the build fails as usual" >&2
        return 0
    fi
    declare -p exitCode >> "$__nixAttachVariablesFile" 2>/dev/null || true
    local -a __nixAttachArgs=(
        agent --drv "${name:-${pname:-unknown}}" --phase "${curPhase-}"
        --exit-code "$__nixAttachCode" --command "$__nixAttachCommand"
        --build-top "${NIX_BUILD_TOP:-${TMPDIR:-/tmp}}" --cwd "$__nixAttachPwd"
        --state-file "$__nixAttachStateFile" --variables-file "$__nixAttachVariablesFile"
        --options-file "$__nixAttachOptionsFile" --timeout "${NIX_ATTACH_TIMEOUT:-1800}"
        --max-pause "${NIX_ATTACH_MAX_PAUSE:-14400}"
    )
    [[ $__nixAttachKind != err ]] || __nixAttachArgs+=(--locals)
    [[ -z "${NIX_ATTACH_ON_FAILURE-}" ]] || __nixAttachArgs+=(--on-failure "$NIX_ATTACH_ON_FAILURE")
    local __nixAttachShell=${NIX_ATTACH_SHELL:-@shell@}
    [[ -z "$__nixAttachShell" ]] || __nixAttachArgs+=(--shell "$__nixAttachShell")
    local __nixAttachFrame
    for __nixAttachFrame in "${__nixAttachFrames[@]}"; do
        __nixAttachArgs+=(--frame "$__nixAttachFrame")
    done
    "@nixAttach@" "${__nixAttachArgs[@]}" ||
        echo "nix-attach: the agent failed (status $?); the build fails as usual" >&2
    return 0
}

# An ERR trap the build set before this hook was sourced still runs, inline,
# with $? as it was; its own failures change nothing. Where errtrace was off
# it runs only where it used to: outside functions and subshells.
__nixAttachTakeTrap() { __nixAttachPreviousTrap=${3-}; }
eval "__nixAttachTakeTrap $(trap -p ERR)"
__nixAttachPrevious=
if [[ -n "$__nixAttachPreviousTrap" ]]; then
    __nixAttachReturn() { return "$1"; }
    __nixAttachPrevious='__nixAttachReturn "$__nixAttachLast" || { '"$__nixAttachPreviousTrap"$'\n''} || :; '
    if [[ ! -o errtrace ]]; then
        __nixAttachPrevious='[[ $BASHPID != "$$" || ( ${FUNCNAME[0]-main} != main && ${FUNCNAME[0]} != source ) ]] || '"$__nixAttachPrevious"
    fi
fi

# The ERR trap. Where the failure is not fatal (errexit off, or a subshell)
# it costs one assignment and one test. Where it is fatal it snapshots, then
# exits with the failing status itself, as errexit would: leaving the exit to
# errexit makes bash print "pop_var_context: head of shell_variables not a
# function context" when the failure is inside an eval inside a function.
__nixAttachTrap='__nixAttachLast=$?; [[ $- != *e* || $BASHPID != "$$" ]] || { __nixAttachOnFatalError "$__nixAttachLast" "$BASH_COMMAND" "$LINENO" "${1-}"; '"$__nixAttachPrevious"'exit "$__nixAttachLast"; }; '"$__nixAttachPrevious"
set -o errtrace
trap "$__nixAttachTrap" ERR
failureHooks+=(nixAttachFailureHook)

fi
