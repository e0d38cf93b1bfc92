#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 wg setpriv
# netstacks: tun -- it sets netstack = "tun" itself (and mixes in a userspace home): TUN pass only
#
# Story: the same relay and home as pinhole_relay_pinhole_home, but both peers say
# netstack = "tun": a kernel TUN device carries the overlay and the kernel does TCP. The world
# still reaches relay:8080 and lands on 127.0.0.1:8000 at home; the overlay addresses are now
# the hosts' own (ping works, the devices go away with the process). Without CAP_NET_ADMIN,
# `pinhole up` says what to do. Then a mixed pair: a TUN relay and a userspace home.
source "$(dirname "$0")/lib.sh"

# This story picks each peer's stack itself (tun_config below edits the generators' userspace
# configs), so run.sh's NETSTACK=tun must not make the generators do it first.
# shellcheck disable=SC2034 # read by lib.sh (netstack_lines)
NETSTACK=userspace

# tun_config FILE [tun_name] : FILE's [interface] gains netstack = "tun" (and tun_name).
tun_config() {
    local extra='netstack = "tun"'
    [[ -n ${2:-} ]] && extra+=$'\n'"tun_name = \"$2\""
    python3 - "$1" "$extra" <<'EOF'
import sys
path, extra = sys.argv[1], sys.argv[2]
text = open(path).read()
assert "\naddress = " in text
lines = text.split("\n")
i = next(n for n, l in enumerate(lines) if l.startswith("address = "))
lines.insert(i + 1, extra)
open(path, "w").write("\n".join(lines))
EOF
}

# device_has NS DEV ADDR : DEV exists in NS, is up, and holds ADDR.
device_has() {
    ip -n "$1" -o addr show dev "$2" 2>/dev/null | grep -q " $3/"
}

make_topology
show_topology_is_as_promised

say "keys: pinhole genkey / pinhole pubkey (checked against wg pubkey)"
gen_keypair relay
gen_keypair home

say "at home: a web service on 127.0.0.1:$SERVICE_PORT, reachable from nowhere else"
web_service web "$NS_HOME" 127.0.0.1 "$SERVICE_PORT"

pinhole_relay_config >"$WORK/relay.toml"
tun_config "$WORK/relay.toml"
pinhole_home_config >"$WORK/home.toml"
tun_config "$WORK/home.toml"
out=$("$PINHOLE" check -c "$WORK/relay.toml" 2>&1) || fail "pinhole check refused relay.toml: $out"
assert_contains "$out" "netstack       tun" "pinhole check shows the TUN stack"

say "without CAP_NET_ADMIN, pinhole up refuses and says what to do"
rc=0
out=$(in_ns "$NS_RELAY" timeout 20 setpriv --bounding-set -net_admin --inh-caps -net_admin \
    "$PINHOLE" up -c "$WORK/relay.toml" 2>&1) || rc=$?
((rc != 0)) || fail "pinhole up without CAP_NET_ADMIN exited 0: $out"
((rc != 124)) || fail "pinhole up without CAP_NET_ADMIN kept running: $out"
pass "pinhole up exits $rc without CAP_NET_ADMIN"
assert_contains "$out" "CAP_NET_ADMIN" "the message names the capability"
assert_contains "$out" "setcap cap_net_admin+ep" "the message says how to grant it"
assert_contains "$out" 'netstack = "userspace"' "the message names the userspace fallback"
note "$(grep -m1 CAP_NET_ADMIN <<<"$out")"
! ip -n "$NS_RELAY" link show pinhole0 >/dev/null 2>&1 || fail "a device was left behind"

say "on the relay: pinhole up with netstack = \"tun\""
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_relay_ready relay 10
wait_for 5 "the relay's TUN device pinhole0 with $OVERLAY_RELAY" \
    device_has "$NS_RELAY" pinhole0 "$OVERLAY_RELAY"
assert_contains "$(ip -n "$NS_RELAY" link show pinhole0)" "mtu 1420" "the device has the tunnel MTU"
pass "the relay's overlay address is on a kernel device: $(ip -n "$NS_RELAY" -br addr show dev pinhole0)"

say "at home: pinhole up with netstack = \"tun\" (dials $RELAY_WAN_IP:$WG_PORT)"
started=$(now_ms)
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v
wait_for 5 "the home's TUN device pinhole0 with $OVERLAY_HOME" \
    device_has "$NS_HOME" pinhole0 "$OVERLAY_HOME"
wait_for 10 "the home's expose to listen on $OVERLAY_HOME:$OVERLAY_PORT with a kernel socket" \
    listening "$NS_HOME" tcp "$OVERLAY_PORT"

say "the client asks the relay for the home page"
wait_for 15 "the client's request through the relay to reach the home service" client_gets_hello
pass "first reply $(fmt_ms $(($(now_ms) - started))) s after the home started"
check_hello

say "the overlay is the kernel's now: the relay host pings the home's overlay address"
in_ns "$NS_RELAY" ping -c2 -W2 "$OVERLAY_HOME" >/dev/null ||
    fail "ping $OVERLAY_HOME from the relay through the TUN devices failed"
pass "ping $OVERLAY_HOME from the relay namespace is answered through the tunnel"

say "a 10 MiB file from home, through the relay"
check_big_transfer

say "10 requests at once"
pids=()
for i in $(seq 10); do
    in_ns "$NS_CLIENT" curl -fsS --max-time 20 -o "$WORK/par.$i" "$PUBLIC_URL/" &
    pids+=("$!")
done
failed=0
for p in "${pids[@]}"; do
    wait "$p" || failed=$((failed + 1))
done
assert_eq 0 "$failed" "10 concurrent requests all succeeded"
for i in $(seq 10); do
    [[ $(cat "$WORK/par.$i") == "$HELLO" ]] || fail "concurrent request $i got: $(head -c 200 "$WORK/par.$i")"
done
pass "10 concurrent replies are all the home page"

say "both peers stop cleanly on SIGTERM, and their devices go with them"
stop home TERM
assert_eq 0 "$STOP_RC" "pinhole up (home) exits 0 on SIGTERM"
stop relay TERM
assert_eq 0 "$STOP_RC" "pinhole up (relay) exits 0 on SIGTERM"
wait_for 5 "the TUN devices to disappear" \
    eval "! ip -n $NS_RELAY link show pinhole0 >/dev/null 2>&1 && ! ip -n $NS_HOME link show pinhole0 >/dev/null 2>&1"
pass "no device, address or route is left behind"

say "mixed: a TUN relay (tun_name = \"phrelay%d\") and a userspace home"
pinhole_relay_config >"$WORK/relay.toml"
tun_config "$WORK/relay.toml" 'phrelay%d'
pinhole_home_config >"$WORK/home.toml"
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_relay_ready relay 10
wait_for 5 "the relay's TUN device phrelay0" device_has "$NS_RELAY" phrelay0 "$OVERLAY_RELAY"
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v
wait_for 15 "the client's request through the TUN relay to the userspace home" client_gets_hello
check_hello
check_big_transfer
! ip -n "$NS_HOME" link show pinhole0 >/dev/null 2>&1 || fail "the userspace home created a device"
pass "the userspace home has no device; the two stacks interoperate"
stop home TERM
assert_eq 0 "$STOP_RC" "pinhole up (userspace home) exits 0 on SIGTERM"
stop relay TERM
assert_eq 0 "$STOP_RC" "pinhole up (TUN relay) exits 0 on SIGTERM"
pass "the TUN stack carries the relay and the home, alone or mixed with the userspace stack"
