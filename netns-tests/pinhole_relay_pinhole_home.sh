#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 wg
# netstacks: userspace tun
#
# Story: a person runs a web service at home behind NAT and rents a relay with a public IP.
# Pinhole on both ends: anyone who reaches relay:8080 lands on 127.0.0.1:8000 at home, and the
# home opened no inbound port.
source "$(dirname "$0")/lib.sh"

make_topology
show_topology_is_as_promised

say "keys: pinhole genkey / pinhole pubkey (checked against wg pubkey)"
gen_keypair relay
gen_keypair home

say "at home: a web service on 127.0.0.1:$SERVICE_PORT, reachable from nowhere else"
web_service web "$NS_HOME" 127.0.0.1 "$SERVICE_PORT"

# Both peers also get an IPv6 overlay address, and the relay a second public port (8081) that
# crosses the tunnel over IPv6 to the same service.
say "on the relay: pinhole up (udp/$WG_PORT, public tcp/$PUBLIC_PORT -> $OVERLAY_HOME:$OVERLAY_PORT, tcp/8081 -> [fd77::2]:$OVERLAY_PORT)"
pinhole_relay_config | sed -e 's|^address = .*|address = ["10.77.0.1/24", "fd77::1/64"]|' \
    -e 's|^allowed_ips = .*|allowed_ips = ["10.77.0.2/32", "fd77::2/128"]|' >"$WORK/relay.toml"
cat >>"$WORK/relay.toml" <<EOF

[[forward]]
name = "web6"
listen = "0.0.0.0:8081"
to = "[fd77::2]:$OVERLAY_PORT"
EOF
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_relay_ready relay 10

say "at home: pinhole up (dials $RELAY_WAN_IP:$WG_PORT, exposes $OVERLAY_HOME:$OVERLAY_PORT -> 127.0.0.1:$SERVICE_PORT)"
pinhole_home_config | sed -e 's|^address = .*|address = ["10.77.0.2/24", "fd77::2/64"]|' \
    -e 's|^allowed_ips = .*|allowed_ips = ["10.77.0.1/32", "fd77::1/128"]|' >"$WORK/home.toml"
cat >>"$WORK/home.toml" <<EOF

[[expose]]
name = "web6"
listen = "[fd77::2]:$OVERLAY_PORT"
to = "127.0.0.1:$SERVICE_PORT"
EOF
started=$(now_ms)
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v

say "the client asks the relay for the home page"
wait_for 15 "the client's request through the relay to reach the home service" client_gets_hello
pass "first reply $(fmt_ms $(($(now_ms) - started))) s after the home started"
check_hello

say "a 10 MiB file from home, through the relay"
check_big_transfer

say "the same service over the IPv6 overlay: relay tcp/8081 -> [fd77::2]:$OVERLAY_PORT"
got=$(in_ns "$NS_CLIENT" curl -fsS --max-time 5 "http://$RELAY_PUBLIC_IP:8081/" 2>&1) ||
    fail "the request through the IPv6 overlay failed: $got"
assert_eq "$HELLO" "$got" "the request crossed the tunnel over IPv6"
sha=$(in_ns "$NS_CLIENT" curl -fsS --max-time 60 "http://$RELAY_PUBLIC_IP:8081/big.bin" | sha256sum | cut -d' ' -f1)
assert_eq "$BIG_SHA" "$sha" "10 MiB came through the IPv6 overlay intact"

say "20 requests at once"
pids=()
for i in $(seq 20); do
    in_ns "$NS_CLIENT" curl -fsS --max-time 20 -o "$WORK/par.$i" "$PUBLIC_URL/" &
    pids+=("$!")
done
failed=0
for p in "${pids[@]}"; do
    wait "$p" || failed=$((failed + 1))
done
assert_eq 0 "$failed" "20 concurrent requests all succeeded"
for i in $(seq 20); do
    [[ $(cat "$WORK/par.$i") == "$HELLO" ]] || fail "concurrent request $i got: $(head -c 200 "$WORK/par.$i")"
done
pass "20 concurrent replies are all the home page"

say "both peers stop cleanly on SIGTERM"
stop home TERM
assert_eq 0 "$STOP_RC" "pinhole up (home) exits 0 on SIGTERM"
stop relay TERM
assert_eq 0 "$STOP_RC" "pinhole up (relay) exits 0 on SIGTERM"
pass "the relay reached a service behind NAT with no inbound port at home"
