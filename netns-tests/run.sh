#!/usr/bin/env bash
# netns-tests/run.sh: run the end-to-end stories, each in its own namespaces.
#
#   netns-tests/run.sh                      every story, then the core ones again on the TUN stack
#   netns-tests/run.sh home_restart ...     only the ones named (with or without .sh), on each
#                                           stack they run on
#   NETSTACK=tun netns-tests/run.sh [...]   only the TUN pass (NETSTACK=userspace: only the first)
#   VERBOSE=1 netns-tests/run.sh            stream each story's output as it runs
#
# Two passes. The first runs every story with NETSTACK=userspace: the Pinhole peers carry the
# overlay on the embedded stack. The second runs the core stories again with NETSTACK=tun: the
# same story, its Pinhole peers now on kernel TUN devices (netstack = "tun"; lib.sh writes it);
# stock wireguard-go peers stay as they are. They print as name[tun]. A story names the stacks
# it runs on in its "# netstacks:" line: "userspace tun" (core: both passes), or one stack and,
# after "--", why not the other; no line means userspace. Unset NETSTACK means both passes.
#
# Each story says what it needs on its "# requires:" line (root, pinhole, and commands; the TUN
# pass also needs /dev/net/tun). A story whose needs are not met is skipped with the reason, or
# fails when CI=true. A named story asked for on a stack it does not run on is skipped, with its
# reason. Prints PASS/FAIL/SKIP per story with its time, then one line "N passed, N failed[, N
# skipped]". Exits non-zero if any story failed.
#
# PINHOLE=/path/to/pinhole picks the binary (default: target/debug/pinhole, then target/release).
# STORY_TIMEOUT (seconds, default 300) bounds each story.
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CI=${CI:-false}
STORY_TIMEOUT=${STORY_TIMEOUT:-300}
case ${NETSTACK:-} in
'') passes=(userspace tun) ;;
userspace | tun) passes=("$NETSTACK") ;;
*)
    echo "run.sh: NETSTACK must be 'userspace', 'tun', or unset for both, not '$NETSTACK'" >&2
    exit 2
    ;;
esac

# The order tells the story of the product: harness first, then the happy path, interop,
# recovery, hostile input, and configuration.
ORDER=(harness_selftest config_mistakes pinhole_relay_pinhole_home stock_wireguard_home
    stock_wireguard_relay home_restart relay_restart malformed_flood)

if [[ -z ${PINHOLE:-} ]]; then
    for candidate in "$REPO/target/debug/pinhole" "$REPO/target/release/pinhole"; do
        if [[ -x $candidate ]]; then
            PINHOLE=$candidate
            break
        fi
    done
fi
export PINHOLE=${PINHOLE:-$REPO/target/debug/pinhole}

if (($# > 0)); then
    stories=()
    for arg in "$@"; do
        name=$(basename "${arg%.sh}")
        [[ -f $HERE/$name.sh ]] || {
            echo "run.sh: no story called '$arg' (have: $(cd "$HERE" && ls -- *.sh | grep -vxE 'lib.sh|run.sh' | sed 's/\.sh$//' | paste -sd' '))" >&2
            exit 2
        }
        stories+=("$name")
    done
else
    stories=("${ORDER[@]}")
    for f in "$HERE"/*.sh; do
        name=$(basename "${f%.sh}")
        [[ $name == lib || $name == run ]] && continue
        [[ " ${ORDER[*]} " == *" $name "* ]] || stories+=("$name")
    done
fi

# netstacks NAME : the stacks the story runs on, from its "# netstacks:" line (default userspace).
netstacks() {
    local line
    line=$(sed -n 's/^# netstacks: *//p' "$HERE/$1.sh" | head -n 1)
    line=${line%%--*}
    echo "${line:-userspace}"
}

# runs_on NAME STACK : does the story run on STACK?
runs_on() {
    [[ " $(netstacks "$1") " == *" $2 "* ]]
}

# not_on_why NAME : what the story says after "--" on its "# netstacks:" line.
not_on_why() {
    local line
    line=$(sed -n 's/^# netstacks: *//p' "$HERE/$1.sh" | head -n 1)
    [[ $line == *--* ]] && echo "${line#*-- }"
}

# unmet NAME STACK : why the story cannot run here on STACK ("" when it can).
unmet() {
    local req missing=()
    req=$(sed -n 's/^# requires: *//p' "$HERE/$1.sh" | head -n 1)
    if [[ $2 == tun && ! -c /dev/net/tun ]]; then
        missing+=("/dev/net/tun (the TUN stack needs the kernel's tun driver: modprobe tun)")
    fi
    for need in $req; do
        case $need in
        root) ((EUID == 0)) || missing+=("root (netns tests need root: run as root or with sudo)") ;;
        pinhole)
            "$PINHOLE" --help >/dev/null 2>&1 ||
                missing+=("a working pinhole binary at $PINHOLE (run: make build)")
            ;;
        *) command -v "$need" >/dev/null 2>&1 || missing+=("the command '$need'") ;;
        esac
    done
    local IFS=';'
    echo "${missing[*]}"
}

# The runs, "story stack" each: the userspace pass, then the TUN pass. With NETSTACK unset, a
# story is left out of the pass of a stack it does not run on; a story named on the command line
# for a stack it does not run on (NETSTACK set) is a visible SKIP.
runs=()
for stack in "${passes[@]}"; do
    for story in "${stories[@]}"; do
        if runs_on "$story" "$stack" || { (($# > 0)) && ((${#passes[@]} == 1)); }; then
            runs+=("$story $stack")
        fi
    done
done

# label STORY STACK : how a run is named in the output: story, or story[tun].
label() {
    if [[ $2 == userspace ]]; then echo "$1"; else echo "$1[$2]"; fi
}
width=28
for run in "${runs[@]}"; do
    l=$(label "${run% *}" "${run#* }")
    ((${#l} > width)) && width=${#l}
done

passed=0 failed=0 skipped=0
failures=()
logdir=$(mktemp -d /tmp/pinhole-netns-run.XXXXXX)
trap 'rm -rf "$logdir"' EXIT
t_all=$EPOCHREALTIME
n_tun=0
for run in "${runs[@]}"; do [[ $run == *" tun" ]] && n_tun=$((n_tun + 1)); done
echo "netns tests: ${#runs[@]} runs, $((${#runs[@]} - n_tun)) on the userspace stack and $n_tun on the TUN stack (named story[tun]); pinhole = $PINHOLE"
if ((EUID != 0)); then
    if [[ $CI == true ]]; then
        echo "FAIL: netns tests need root (running as uid $EUID; CI=true, so this is a failure)"
    else
        echo "SKIP: netns tests need root (running as uid $EUID; run 'sudo make test' for the end-to-end stories)"
    fi
fi

for run in "${runs[@]}"; do
    story=${run% *} stack=${run#* }
    name=$(label "$story" "$stack")
    if ! runs_on "$story" "$stack"; then
        printf "SKIP: %-${width}s runs on %s only: %s\n" "$name" "$(netstacks "$story" | xargs)" \
            "$(not_on_why "$story")"
        skipped=$((skipped + 1))
        continue
    fi
    why=$(unmet "$story" "$stack")
    if [[ -n $why ]]; then
        if [[ $CI == true ]]; then
            printf "FAIL  %-${width}s missing: %s (CI=true: missing requirements are failures)\n" "$name" "$why"
            failed=$((failed + 1))
            failures+=("$name")
        else
            printf "SKIP: %-${width}s missing: %s\n" "$name" "$why"
            skipped=$((skipped + 1))
        fi
        continue
    fi
    log="$logdir/$story.$stack.log"
    t0=$EPOCHREALTIME
    if [[ ${VERBOSE:-0} == 1 ]]; then
        echo "----- $name -----"
        NETSTACK=$stack timeout -k 10 "$STORY_TIMEOUT" bash "$HERE/$story.sh" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
    else
        NETSTACK=$stack timeout -k 10 "$STORY_TIMEOUT" bash "$HERE/$story.sh" >"$log" 2>&1
        rc=$?
    fi
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    measured=$(sed -n 's/^MEASURED //p' "$log" | paste -sd' ')
    if ((rc == 0)); then
        printf "PASS  %-${width}s %6s s%s\n" "$name" "$secs" "${measured:+  ($measured)}"
        passed=$((passed + 1))
    else
        ((rc == 124 || rc == 137)) && echo "      (timed out after ${STORY_TIMEOUT}s)" >>"$log"
        printf "FAIL  %-${width}s %6s s  (exit %d)\n" "$name" "$secs" "$rc"
        if [[ ${VERBOSE:-0} != 1 ]]; then
            echo "      ----- output of $name (last 150 lines) -----"
            tail -n 150 "$log" | sed 's/^/      /'
            echo "      ----- end of $name -----"
        fi
        failed=$((failed + 1))
        failures+=("$name")
    fi
done

total=$(awk -v a="$t_all" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
echo "netns tests took $total s${failures[*]:+; failed: ${failures[*]}}"
summary="$passed passed, $failed failed"
((skipped > 0)) && summary+=", $skipped skipped"
echo "$summary"
((failed == 0))
