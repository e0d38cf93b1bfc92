#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 wg
# netstacks: userspace -- garbage stops at WireGuard's checks, before either stack: TUN adds only time
#
# Story: someone on the internet sprays the relay's WireGuard port with garbage: random bytes,
# truncated messages, forged handshakes (some with a correct mac1, since the relay's public key is
# no secret), messages for sessions that never existed. WireGuard's rule is silence: nothing goes
# back, nothing breaks, and the real tunnel keeps working.
source "$(dirname "$0")/lib.sh"

FLOOD_COUNT=${FLOOD_COUNT:-120000}
FLOOD_PPS=${FLOOD_PPS:-20000}
MAX_LOG_LINES=100 # "no per-packet logs": at the default level, a flood is a few lines at most

make_topology
gen_keypair relay
gen_keypair home
web_service web "$NS_HOME" 127.0.0.1 "$SERVICE_PORT"
pinhole_relay_config >"$WORK/relay.toml"
pinhole_home_config >"$WORK/home.toml"

say "relay (default log level) and home up; the service answers through the relay"
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml"
wait_relay_ready relay 10
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v
wait_for 15 "the service through the relay" client_gets_hello
check_hello

say "counters on the relay's link to the client: datagrams to and from udp/$WG_PORT"
in_ns "$NS_RELAY" nft -f - <<EOF
table inet watch {
    chain in {
        type filter hook input priority filter; policy accept;
        iifname "r-client" udp dport $WG_PORT counter
    }
    chain out {
        type filter hook output priority filter; policy accept;
        oifname "r-client" udp sport $WG_PORT counter
    }
}
EOF
counter() { in_ns "$NS_RELAY" nft list chain inet watch "$1" | sed -n 's/.*counter packets \([0-9]*\).*/\1/p'; }
log_before=$(wc -l <"$WORK/relay.log")
rss_before=$(rss_kib relay)

say "the flood: $FLOOD_COUNT malformed datagrams at up to $FLOOD_PPS/s, plus forged handshakes with a correct mac1"
start flood "$NS_CLIENT" python3 "$NT_DIR/tools/wgflood.py" --target "$RELAY_PUBLIC_IP:$WG_PORT" \
    --public-key "$(pub relay)" --count "$FLOOD_COUNT" --pps "$FLOOD_PPS" --duration 60 \
    --mac1-count 24 --mac1-rate 4 --listen 3 --expect-silence

flood_under_way() { (($(counter in) >= 5000)); }
wait_for 15 "the flood to reach the relay (5000 datagrams counted)" flood_under_way
t=$(now_ms)
if try_for 20 client_gets_hello; then
    note "during the flood a request through the tunnel succeeded after $(fmt_ms $(($(now_ms) - t))) s"
else
    note "during the flood no request through the tunnel succeeded within 20 s"
fi

wait_exit flood 90
sed 's/^/        /' "$WORK/flood.log"
[[ $EXIT_RC == 0 ]] || fail "the relay answered forged or malformed datagrams (wgflood exit $EXIT_RC)"
pass "the flood tool received zero replies"
received=$(counter in)
sent_back=$(counter out)
note "the relay's WireGuard port received $received datagrams from the client's link"
assert_eq 0 "$sent_back" "the relay sent no datagram from udp/$WG_PORT toward the flooding client"

assert_alive relay "a flood must not kill the relay"
assert_alive home
log_lines=$(($(wc -l <"$WORK/relay.log") - log_before))
assert_le "$log_lines" "$MAX_LOG_LINES" "the relay wrote few log lines during the flood"
note "relay RSS: ${rss_before} KiB before, $(rss_kib relay) KiB after"

say "after the flood: the tunnel still works"
wait_for 15 "the service through the relay after the flood" client_gets_hello
check_hello
check_big_transfer
pass "garbage got silence, and the tunnel kept working"
