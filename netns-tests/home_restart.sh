#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 wg
# netstacks: userspace tun
#
# Story: the home peer restarts (an update, a reboot, a crash). The relay accepts its new
# handshake and the service is back within 15 s of the home starting again, after a clean
# SIGTERM and after a SIGKILL that left the relay holding a dead session.
source "$(dirname "$0")/lib.sh"

BACK_WITHIN=15 # seconds, the promise in issue 2 ("Recovery")

make_topology
gen_keypair relay
gen_keypair home
web_service web "$NS_HOME" 127.0.0.1 "$SERVICE_PORT"
pinhole_relay_config >"$WORK/relay.toml"
pinhole_home_config >"$WORK/home.toml"

say "relay and home up; the service answers through the relay"
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_relay_ready relay 10
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v
wait_for 15 "the service through the relay" client_gets_hello
check_hello

for sig in TERM KILL; do
    say "the home goes away (SIG$sig)"
    stop home "$sig"
    if [[ $sig == TERM ]]; then
        assert_eq 0 "$STOP_RC" "pinhole up exits 0 on SIGTERM"
    fi

    t=$(now_ms)
    rc=0
    in_ns "$NS_CLIENT" curl -fsS --max-time 5 -o /dev/null "$PUBLIC_URL/" 2>/dev/null || rc=$?
    ((rc != 0)) || fail "a request succeeded while the home was down"
    if ((rc == 28)); then
        note "with the home down, a request through the relay got no answer within 5 s (curl gave up)"
    else
        note "with the home down, a request through the relay failed after $(fmt_ms $(($(now_ms) - t))) s (curl exit $rc)"
    fi
    assert_alive relay "the relay must outlive its home peer"

    say "the home starts again with the same config"
    started=$(now_ms)
    pinhole_up home "$NS_HOME" "$WORK/home.toml" -v
    if ! try_for "$BACK_WITHIN" client_gets_hello; then
        fail "the service was not back within ${BACK_WITHIN}s of the home restarting (after SIG$sig)"
    fi
    back_ms=$(($(now_ms) - started))
    pass "after SIG$sig the service was back $(fmt_ms "$back_ms") s after the home restarted (limit ${BACK_WITHIN} s)"
    echo "MEASURED home_restart_after_SIG$sig=$(fmt_ms "$back_ms")s"
    check_hello
done

check_big_transfer
pass "the relay follows its home peer through restarts"
