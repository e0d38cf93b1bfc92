#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 wg
# netstacks: userspace tun
#
# Story: the relay is killed (SIGKILL: no goodbye, every session forgotten) and restarted with the
# same config. Nobody touches the home peer, which sits behind NAT and is the only side that can
# dial. Plain WireGuard can take two minutes to notice; Pinhole must be back within 30 s.
#
# RELAY_DOWN_SECONDS (default 3) sets how long the relay stays dead; 100 shows that the home keeps
# trying past WireGuard's REKEY_ATTEMPT_TIME (90 s), which the 30 s promise also covers.
source "$(dirname "$0")/lib.sh"

BACK_WITHIN=30 # seconds, the promise in issue 2 ("Recovery")
DOWN=${RELAY_DOWN_SECONDS:-3}

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
home_pid=${PID_OF[home]}

say "the relay is killed with SIGKILL and stays down for $DOWN s (a deliberate outage)"
stop relay KILL
down_until=$(($(now_ms) + DOWN * 1000))
while (($(now_ms) < down_until)); do
    alive home || fail "the home peer died while the relay was down"
    sleep 0.5
done
assert_alive home "the home must outlive its relay"

say "the relay starts again with the same config; nobody touches the home"
started=$(now_ms)
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_relay_ready relay 10
if ! try_for "$BACK_WITHIN" client_gets_hello; then
    fail "the service was not back within ${BACK_WITHIN}s of the relay restarting"
fi
back_ms=$(($(now_ms) - started))
pass "the service was back $(fmt_ms "$back_ms") s after the relay restarted (limit ${BACK_WITHIN} s)"
echo "MEASURED relay_restart=$(fmt_ms "$back_ms")s"
assert_eq "$home_pid" "${PID_OF[home]}" "the home peer is the same process it was (never restarted)"

check_hello
check_big_transfer
pass "the home finds its relay again by itself"
