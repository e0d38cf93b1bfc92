#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 wg wireguard-go
# netstacks: userspace tun
#
# Story: zero Pinhole software at home. The home runs stock WireGuard (wireguard-go + wg) and its
# own kernel serves HTTP on its tunnel address; the Pinhole relay forwards its public port there.
source "$(dirname "$0")/lib.sh"

make_topology

say "keys: pinhole genkey for the relay, wg genkey for the stock home"
gen_keypair relay
gen_wg_keypair home

say "on the relay: pinhole up (udp/$WG_PORT, public tcp/$PUBLIC_PORT -> $OVERLAY_HOME:$OVERLAY_PORT)"
pinhole_relay_config >"$WORK/relay.toml"
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_relay_ready relay 10

say "at home: wireguard-go, configured with wg setconf and ip addr, dialing the relay"
stock_home_conf home >"$WORK/home.conf"
wireguard_go_up wg-home "$NS_HOME" "$WG_IF_HOME" "$OVERLAY_HOME/24" "$WORK/home.conf"

say "at home: the kernel serves HTTP on the tunnel address $OVERLAY_HOME:$OVERLAY_PORT"
web_service web "$NS_HOME" "$OVERLAY_HOME" "$OVERLAY_PORT"

say "the stock home completes a handshake with the Pinhole relay"
wait_for 15 "wg show to report a handshake with the relay" \
    eval "in_ns $NS_HOME wg show $WG_IF_HOME latest-handshakes | awk '{exit !(\$2 > 0)}'"
pass "handshake done ($(fmt_ms "$WAITED_MS") s)"

say "the Pinhole relay answers ping on its overlay address"
if try_for 5 in_ns "$NS_HOME" ping -c1 -W1 "$OVERLAY_RELAY"; then
    pass "the home pings the relay's overlay address $OVERLAY_RELAY"
else
    fail "the Pinhole relay does not answer ping on $OVERLAY_RELAY from a stock WireGuard peer"
fi

say "the client asks the relay for the home page"
wait_for 15 "the client's request through the relay to reach the stock home" client_gets_hello
check_hello

say "a 10 MiB file from the stock home, through the Pinhole relay"
check_big_transfer

transfer=$(in_ns "$NS_HOME" wg show "$WG_IF_HOME" transfer)
note "wg show transfer at home: $transfer"
assert_alive relay
pass "a stock WireGuard home works with a Pinhole relay"
