# nix-attach's command inside a session: `nix-attach status|rerun|resume|diff`.
# Written by the agent (agent/commands.rs), which fills in the @…@ values;
# sourced by the session's rc file after the build's own state.
#
# The command is a function named as the tool, and its helpers' names
# start with __nix_attach, so that it takes no name a build may use (a
# build defines `phases`, and may define any function); what it keeps is
# local to it, under names that start with __nix_attach too.
nix-attach() {
    local __nix_attach_agent=@agent@ __nix_attach_state=@state@ __nix_attach_name=@name@
    local __nix_attach_failed=@phase@ __nix_attach_exit=@exitCode@ __nix_attach_command=@command@
    local __nix_attach_cwd=@cwd@ __nix_attach_stack=@stack@ __nix_attach_paused=@paused@
    local __nix_attach_phases="${phases[*]:-}"
    if [ -z "$__nix_attach_phases" ]; then
        __nix_attach_phases="${prePhases[*]:-} unpackPhase patchPhase ${preConfigurePhases[*]:-} configurePhase ${preBuildPhases[*]:-} buildPhase checkPhase ${preInstallPhases[*]:-} installPhase ${preFixupPhases[*]:-} fixupPhase installCheckPhase ${preDistPhases[*]:-} distPhase ${postPhases[*]:-}"
    fi
    local __nix_attach_what="${1-}"
    shift || true
    case "$__nix_attach_what" in
        status) __nix_attach_status "$@" ;;
        rerun) __nix_attach_rerun "$@" ;;
        resume) __nix_attach_resume "$@" ;;
        diff) __nix_attach_diff "$@" ;;
        "" | help | -h | --help)
            printf '%s\n' \
                'nix-attach status          what failed, where, and which phases ran, failed and remain' \
                'nix-attach rerun           runs the failing command again, where it failed' \
                'nix-attach resume [PHASE]  runs the failed phase (or PHASE) and the ones after it' \
                'nix-attach diff [--new]    your changes to the source, as a patch for `patches` (--new: and new files)'
            ;;
        *)
            printf 'nix-attach: no command %s inside a build; `nix-attach help` lists them\n' "$__nix_attach_what" >&2
            return 2
            ;;
    esac
}

# Whether nixpkgs' genericBuild skips the phase $1, as its runPhase decides.
__nix_attach_skips() {
    case "$1" in
        unpackPhase) [ -n "${dontUnpack:-}" ] ;;
        patchPhase) [ -n "${dontPatch:-}" ] ;;
        configurePhase) [ -n "${dontConfigure:-}" ] ;;
        buildPhase) [ -n "${dontBuild:-}" ] ;;
        checkPhase) [ -z "${doCheck:-}" ] ;;
        installPhase) [ -n "${dontInstall:-}" ] ;;
        fixupPhase) [ -n "${dontFixup:-}" ] ;;
        installCheckPhase) [ -z "${doInstallCheck:-}" ] ;;
        distPhase) [ -z "${doDist:-}" ] ;;
        *) return 1 ;;
    esac
}

__nix_attach_status() {
    local __nix_attach_phase __nix_attach_seen="" __nix_attach_ran="" __nix_attach_remain=""
    printf 'nix-attach: %s failed in %s (exit %s)\n' "$__nix_attach_name" "${__nix_attach_failed:-its setup}" "$__nix_attach_exit"
    printf '  failed command: %s\n  in: %s\n' "$__nix_attach_command" "$__nix_attach_cwd"
    [ -z "$__nix_attach_stack" ] || printf '  stack: %s\n' "$__nix_attach_stack"
    for __nix_attach_phase in $__nix_attach_phases; do
        local __nix_attach_shown="$__nix_attach_phase"
        if __nix_attach_skips "$__nix_attach_phase"; then __nix_attach_shown="($__nix_attach_phase, skipped)"; fi
        if [ "$__nix_attach_phase" = "$__nix_attach_failed" ]; then
            __nix_attach_seen=1
        elif [ -z "$__nix_attach_seen" ]; then
            __nix_attach_ran="$__nix_attach_ran $__nix_attach_shown"
        else
            __nix_attach_remain="$__nix_attach_remain $__nix_attach_shown"
        fi
    done
    if [ -n "$__nix_attach_seen" ]; then
        printf '  phases ran:%s\n  failed: %s\n  remain:%s\n' "${__nix_attach_ran:- none}" "$__nix_attach_failed" "${__nix_attach_remain:- none}"
    else
        printf '  phases:%s (the failure was in none of them)\n' "$__nix_attach_phases"
    fi
}

# The failing command, again, where it failed, in a subshell: the session
# stays as it was, whatever the command does. A function that failed
# through `return N` left only that as the command: then its phase runs
# again.
__nix_attach_rerun() {
    local __nix_attach_run="$__nix_attach_command"
    case "$__nix_attach_command" in
        return | "return "*) [ -z "$__nix_attach_failed" ] || __nix_attach_run="eval \"\${$__nix_attach_failed:-$__nix_attach_failed}\"" ;;
    esac
    printf 'nix-attach: running again, in %s: %s\n' "$__nix_attach_cwd" "$__nix_attach_run" >&2
    local __nix_attach_ended
    __nix_attach_in_subshell 'builtin cd -- "$__nix_attach_cwd" || exit 125; eval "$__nix_attach_run"'
    printf 'nix-attach: it ended with status %s (at the failure: %s)\n' "$__nix_attach_ended" "$__nix_attach_exit" >&2
    return "$__nix_attach_ended"
}

# Runs the code $1 in a subshell with errexit, as the builder ran, and with
# the build's own PATH (not the one --with put tools before), and puts its
# status in the caller's __nix_attach_ended. It returns 0 itself, so that
# errexit in the session (exec sessions have it) does not end the session
# at a failure. Called where bash ignores errexit (in `if`, `&&`, `||` or
# after `!`), it would run on past failures: it refuses instead.
__nix_attach_in_subshell() {
    local __nix_attach_errexit=""
    case $- in *e*) __nix_attach_errexit=1 ;; esac
    set +e
    # Not in a condition itself: it ends at `false` unless errexit is ignored.
    (set -e; false; true)
    if [ $? = 0 ]; then
        printf 'nix-attach: run it as a command of its own, not in `if`, `&&`, `||` or after `!`: there bash ignores errexit, and the build would run on past its failures\n' >&2
        __nix_attach_ended=2
    else
        (
            [ -z "${__nix_attach_build_path+set}" ] || PATH=$__nix_attach_build_path
            set -e
            eval "$1"
        )
        __nix_attach_ended=$?
    fi
    [ -z "$__nix_attach_errexit" ] || set -e
}

# The failed phase (or $1) and the phases after it, with errexit, as
# genericBuild runs them, in a subshell: a failure ends the subshell, not
# the session, which stays at the build's failure for the next try.
__nix_attach_resume() {
    local __nix_attach_from="${1:-$__nix_attach_failed}" __nix_attach_found="" __nix_attach_phase __nix_attach_ended
    if [ -z "$__nix_attach_from" ]; then
        printf 'nix-attach: the build failed in no phase; name one: nix-attach resume PHASE\n' >&2
        return 2
    fi
    for __nix_attach_phase in $__nix_attach_phases; do
        [ "$__nix_attach_phase" != "$__nix_attach_from" ] || __nix_attach_found=1
    done
    if [ -z "$__nix_attach_found" ]; then
        printf 'nix-attach: %s is not among the phases (%s)\n' "$__nix_attach_from" "$__nix_attach_phases" >&2
        return 2
    fi
    printf '%s\n' "nix-attach: resuming at $__nix_attach_from. What this writes stays in this sandbox and is never registered: the real build still fails when released." >&2
    __nix_attach_in_subshell '
        set -e
        __nix_attach_started=""
        trap '"'"'__nix_attach_ended=$?; [ "$__nix_attach_ended" = 0 ] || printf "nix-attach: resume stopped: %s failed (exit %s); fix it and run nix-attach resume again\n" "$curPhase" "$__nix_attach_ended" >&2'"'"' EXIT
        for curPhase in $__nix_attach_phases; do
            [ -n "$__nix_attach_started" ] || [ "$curPhase" = "$__nix_attach_from" ] || continue
            __nix_attach_started=1
            if declare -F runPhase >/dev/null; then
                runPhase "$curPhase"
            else
                # An older genericBuild ran each phase itself.
                if __nix_attach_skips "$curPhase"; then continue; fi
                eval "${!curPhase:-$curPhase}"
                if [ "$curPhase" = unpackPhase ]; then builtin cd -- "${sourceRoot:-.}"; fi
            fi
        done'
    local __nix_attach_missing
    __nix_attach_missing=$(__nix_attach_missing_outputs)
    if [ "$__nix_attach_ended" = 0 ] && [ -n "$__nix_attach_missing" ]; then
        printf '%s\n' "nix-attach: every phase from $__nix_attach_from on passed, but the build made no output$__nix_attach_missing: Nix would fail it." >&2
        __nix_attach_ended=1
    elif [ "$__nix_attach_ended" = 0 ]; then
        printf '%s\n' "nix-attach: every phase from $__nix_attach_from on passed: the build would pass as this session left it. Its outputs stay in this sandbox, never registered; the real build still fails when released." >&2
    fi
    return "$__nix_attach_ended"
}

# The outputs the build has not made (` dev man`), as Nix checks them when
# the builder ends: `outputs` names them (under structured attributes it
# maps each to its path), each one's path is in the variable of its name.
__nix_attach_missing_outputs() {
    local __nix_attach_output __nix_attach_path
    if [[ "$(declare -p outputs 2> /dev/null)" == "declare -A"* ]]; then
        for __nix_attach_output in "${!outputs[@]}"; do
            [ -e "${outputs[$__nix_attach_output]}" ] || printf ' %s' "$__nix_attach_output"
        done
    else
        for __nix_attach_output in ${outputs:-out}; do
            __nix_attach_path="${!__nix_attach_output:-}"
            [ -n "$__nix_attach_path" ] && [ -e "$__nix_attach_path" ] || printf ' %s' "$__nix_attach_output"
        done
    fi
}

# The session's changes to the source as a patch: the build's own unpack
# and patch phases make the pristine source in a scratch directory, and
# the agent compares it with the source as it is now.
__nix_attach_diff() {
    local __nix_attach_new="" __nix_attach_live="${sourceRoot:-.}" __nix_attach_scratch __nix_attach_ended
    case "${1-}" in
        --new) __nix_attach_new=--new ;;
        "") ;;
        *)
            printf 'nix-attach: diff takes only --new\n' >&2
            return 2
            ;;
    esac
    case "$__nix_attach_live" in
        /*) ;;
        *) __nix_attach_live="$NIX_BUILD_TOP/$__nix_attach_live" ;;
    esac
    __nix_attach_scratch=$(mktemp -d "$__nix_attach_state/pristine.XXXXXX") || return 125
    __nix_attach_in_subshell '
        set -e
        builtin cd -- "$__nix_attach_scratch"
        if ! __nix_attach_skips unpackPhase; then eval "${unpackPhase:-unpackPhase}"; fi
        builtin cd -- "${sourceRoot:-.}"
        if ! __nix_attach_skips patchPhase; then eval "${patchPhase:-patchPhase}"; fi
        pwd > "$__nix_attach_scratch.root"' > "$__nix_attach_scratch.log" 2>&1
    if [ "$__nix_attach_ended" = 0 ]; then
        __nix_attach_ended=0
        "$__nix_attach_agent" source-diff --pristine "$(cat "$__nix_attach_scratch.root")" --live "$__nix_attach_live" \
            --paused "$__nix_attach_paused" --present "$__nix_attach_state/present-at-pause" $__nix_attach_new ||
            __nix_attach_ended=$?
    else
        printf 'nix-attach: the build'"'"'s unpackPhase and patchPhase failed (status %s) making the pristine source:\n' "$__nix_attach_ended" >&2
        cat "$__nix_attach_scratch.log" >&2
        __nix_attach_ended=125
    fi
    chmod -R u+w "$__nix_attach_scratch"
    rm -rf "$__nix_attach_scratch" "$__nix_attach_scratch.root" "$__nix_attach_scratch.log"
    return "$__nix_attach_ended"
}
