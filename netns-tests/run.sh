#!/usr/bin/env bash
# netns-tests/run.sh: run the end-to-end stories, each in its own namespaces.
#
#   netns-tests/run.sh                      every story
#   netns-tests/run.sh home_restart ...     only the ones named (with or without .sh)
#   VERBOSE=1 netns-tests/run.sh            stream each story's output as it runs
#
# Each story says what it needs on its "# requires:" line (root, pinhole, and commands).
# A story whose needs are not met is skipped with the reason, or fails when CI=true.
# Prints PASS/FAIL/SKIP per story with its time, then one line "N passed, N failed[, N skipped]".
# Exits non-zero if any story failed.
#
# PINHOLE=/path/to/pinhole picks the binary (default: target/debug/pinhole, then target/release).
# STORY_TIMEOUT (seconds, default 300) bounds each story.
set -uo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CI=${CI:-false}
STORY_TIMEOUT=${STORY_TIMEOUT:-300}

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

# unmet NAME : why the story cannot run here ("" when it can).
unmet() {
    local req missing=()
    req=$(sed -n 's/^# requires: *//p' "$HERE/$1.sh" | head -n 1)
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

passed=0 failed=0 skipped=0
failures=()
logdir=$(mktemp -d /tmp/pinhole-netns-run.XXXXXX)
trap 'rm -rf "$logdir"' EXIT
t_all=$EPOCHREALTIME
echo "netns tests: ${#stories[@]} stories, pinhole = $PINHOLE"
if ((EUID != 0)); then
    if [[ $CI == true ]]; then
        echo "FAIL: netns tests need root (running as uid $EUID; CI=true, so this is a failure)"
    else
        echo "SKIP: netns tests need root (running as uid $EUID; run 'sudo make test' for the end-to-end stories)"
    fi
fi

for story in "${stories[@]}"; do
    why=$(unmet "$story")
    if [[ -n $why ]]; then
        if [[ $CI == true ]]; then
            printf 'FAIL  %-28s missing: %s (CI=true: missing requirements are failures)\n' "$story" "$why"
            failed=$((failed + 1))
            failures+=("$story")
        else
            printf 'SKIP: %-28s missing: %s\n' "$story" "$why"
            skipped=$((skipped + 1))
        fi
        continue
    fi
    log="$logdir/$story.log"
    t0=$EPOCHREALTIME
    if [[ ${VERBOSE:-0} == 1 ]]; then
        echo "----- $story -----"
        timeout -k 10 "$STORY_TIMEOUT" bash "$HERE/$story.sh" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
    else
        timeout -k 10 "$STORY_TIMEOUT" bash "$HERE/$story.sh" >"$log" 2>&1
        rc=$?
    fi
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    measured=$(sed -n 's/^MEASURED //p' "$log" | paste -sd' ')
    if ((rc == 0)); then
        printf 'PASS  %-28s %6s s%s\n' "$story" "$secs" "${measured:+  ($measured)}"
        passed=$((passed + 1))
    else
        ((rc == 124 || rc == 137)) && echo "      (timed out after ${STORY_TIMEOUT}s)" >>"$log"
        printf 'FAIL  %-28s %6s s  (exit %d)\n' "$story" "$secs" "$rc"
        if [[ ${VERBOSE:-0} != 1 ]]; then
            echo "      ----- output of $story (last 150 lines) -----"
            tail -n 150 "$log" | sed 's/^/      /'
            echo "      ----- end of $story -----"
        fi
        failed=$((failed + 1))
        failures+=("$story")
    fi
done

total=$(awk -v a="$t_all" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
echo "netns tests took $total s${failures[*]:+; failed: ${failures[*]}}"
summary="$passed passed, $failed failed"
((skipped > 0)) && summary+=", $skipped skipped"
echo "$summary"
((failed == 0))
