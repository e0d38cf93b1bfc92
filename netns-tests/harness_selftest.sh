#!/usr/bin/env bash
# requires: root ip nft ping curl python3 socat wireguard-go wg
# netstacks: userspace -- no Pinhole peer at all: stock wireguard-go on both ends
#
# Story: before blaming Pinhole for anything, show that the harness itself is right.
# With no Pinhole at all (stock wireguard-go on both ends, socat on the relay) the topology
# behaves as promised, a request crosses the tunnel, and the flood tool's forged datagrams
# (including the ones with a correct mac1) get no reply from a reference WireGuard implementation.
source "$(dirname "$0")/lib.sh"

make_topology
show_topology_is_as_promised

say "keys for two stock WireGuard peers (wg genkey)"
gen_wg_keypair relay
gen_wg_keypair home

say "the relay: wireguard-go on udp/$WG_PORT, no endpoint for the home"
cat >"$WORK/relay.conf" <<EOF
[Interface]
PrivateKey = $(key relay)
ListenPort = $WG_PORT

[Peer]
PublicKey = $(pub home)
AllowedIPs = $OVERLAY_HOME/32
EOF
wireguard_go_up wg-relay "$NS_RELAY" "$WG_IF_RELAY" "$OVERLAY_RELAY/24" "$WORK/relay.conf"

say "the home: wireguard-go dialing the relay through its NAT, keepalive 25 s"
stock_home_conf home >"$WORK/home.conf"
wireguard_go_up wg-home "$NS_HOME" "$WG_IF_HOME" "$OVERLAY_HOME/24" "$WORK/home.conf"

say "the home's own kernel serves HTTP on its tunnel address $OVERLAY_HOME:$OVERLAY_PORT"
web_service web "$NS_HOME" "$OVERLAY_HOME" "$OVERLAY_PORT"

wait_for 10 "the home to ping the relay over the tunnel" \
    in_ns "$NS_HOME" ping -c1 -W1 "$OVERLAY_RELAY"
pass "tunnel up: the home pings $OVERLAY_RELAY ($(fmt_ms "$WAITED_MS") s)"

say "socat on the relay: public tcp/$PUBLIC_PORT -> $OVERLAY_HOME:$OVERLAY_PORT through the tunnel"
start socat "$NS_RELAY" socat "TCP-LISTEN:$PUBLIC_PORT,fork,reuseaddr" "TCP:$OVERLAY_HOME:$OVERLAY_PORT"
wait_tcp "$NS_CLIENT" "$RELAY_PUBLIC_IP" "$PUBLIC_PORT" 10

check_hello
check_big_transfer

say "the flood tool against wireguard-go's port: forged and malformed datagrams, then listen"
in_ns "$NS_RELAY" nft -f - <<EOF
table inet watch {
    chain out {
        type filter hook output priority filter; policy accept;
        oifname "r-client" udp sport $WG_PORT counter
    }
}
EOF
mac1_before=$(grep -c 'invalid mac1' "$WORK/wg-relay.log" || true)
out=$(in_ns "$NS_CLIENT" python3 "$NT_DIR/tools/wgflood.py" --target "$RELAY_PUBLIC_IP:$WG_PORT" \
    --public-key "$(pub relay)" --count 5000 --duration 20 --mac1-count 12 --mac1-rate 4 \
    --listen 2 --expect-silence) || fail "wireguard-go answered the flood:
$out"
echo "$out" | sed 's/^/        /'
pass "the flood tool got no reply from wireguard-go"
out_pkts=$(in_ns "$NS_RELAY" nft list chain inet watch out | sed -n 's/.*counter packets \([0-9]*\).*/\1/p')
assert_eq 0 "$out_pkts" "the relay sent no datagram from udp/$WG_PORT toward the client"

# wireguard-go (LOG_LEVEL=verbose) says "invalid mac1" for bad ones and "invalid initiation"
# for ones that passed mac1; the forged-but-correct mac1 initiations must be among the latter.
# This proves the tool computes mac1 correctly.
wait_for 5 "wireguard-go to log the correct-mac1 initiations" \
    grep -q 'Received invalid initiation message' "$WORK/wg-relay.log"
good=$(grep -c 'Received invalid initiation message' "$WORK/wg-relay.log" || true)
pass "wireguard-go saw $good initiations with a correct mac1 (and $(($(grep -c 'invalid mac1' "$WORK/wg-relay.log" || true) - mac1_before)) with a wrong one): the tool's mac1 is right"

check_hello
pass "the harness is sound"
