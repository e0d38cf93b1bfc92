#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 socat wg wireguard-go
# netstacks: userspace tun
#
# Story: the relay is stock WireGuard (wireguard-go) with socat forwarding its public port into
# the tunnel; the home runs Pinhole and exposes its overlay port 80 as 127.0.0.1:8000.
source "$(dirname "$0")/lib.sh"

make_topology

say "keys: wg genkey for the stock relay, pinhole genkey for the home"
gen_wg_keypair relay
gen_keypair home

say "at home: a web service on 127.0.0.1:$SERVICE_PORT"
web_service web "$NS_HOME" 127.0.0.1 "$SERVICE_PORT"

say "on the relay: wireguard-go on udp/$WG_PORT with $OVERLAY_RELAY/24, no endpoint for the home"
cat >"$WORK/relay.conf" <<EOF
[Interface]
PrivateKey = $(key relay)
ListenPort = $WG_PORT

[Peer]
PublicKey = $(pub home)
AllowedIPs = $OVERLAY_HOME/32
EOF
wireguard_go_up wg-relay "$NS_RELAY" "$WG_IF_RELAY" "$OVERLAY_RELAY/24" "$WORK/relay.conf"

say "on the relay: socat, public tcp/$PUBLIC_PORT -> $OVERLAY_HOME:$OVERLAY_PORT through the tunnel"
start socat "$NS_RELAY" socat "TCP-LISTEN:$PUBLIC_PORT,fork,reuseaddr" "TCP:$OVERLAY_HOME:$OVERLAY_PORT,connect-timeout=5"
wait_tcp "$NS_CLIENT" "$RELAY_PUBLIC_IP" "$PUBLIC_PORT" 10

say "at home: pinhole up, dialing the stock relay"
pinhole_home_config >"$WORK/home.toml"
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v

say "the Pinhole home completes a handshake with the stock relay"
wait_for 15 "wg show on the relay to report a handshake with the home" \
    eval "in_ns $NS_RELAY wg show $WG_IF_RELAY latest-handshakes | awk '{exit !(\$2 > 0)}'"
pass "handshake done ($(fmt_ms "$WAITED_MS") s); relay sees the home at $(in_ns "$NS_RELAY" wg show "$WG_IF_RELAY" endpoints | awk '{print $2}')"

say "the Pinhole home answers ping on its overlay address"
if try_for 5 in_ns "$NS_RELAY" ping -c1 -W1 "$OVERLAY_HOME"; then
    pass "the relay's kernel pings $OVERLAY_HOME through the tunnel"
else
    fail "the Pinhole home does not answer ping on $OVERLAY_HOME"
fi

say "the client asks the relay for the home page"
wait_for 15 "the client's request through socat and the tunnel to reach the Pinhole home" client_gets_hello
check_hello

say "a 10 MiB file from the Pinhole home, through the stock relay"
check_big_transfer

assert_alive home
pass "a Pinhole home works with a stock WireGuard relay"
