#!/usr/bin/env bash
# requires: root pinhole ip nft python3 wg socat
# netstacks: userspace tun
#
# Story: a person reaches an old telnet-style service at home through the relay. Telnet sends
# its interrupt as TCP urgent data: one "urgent" byte among the ordinary ones. A reader that
# does not ask for urgent data inline drops that byte, and everything after it must still
# arrive. Two ways to lose it: a splice stops at the urgent mark for good, and a read stops
# short there with data behind it, so "short read, so the socket is empty" waits forever.
source "$(dirname "$0")/lib.sh"

make_topology
gen_keypair relay
gen_keypair home

say "at home: an echo service on 127.0.0.1:$SERVICE_PORT (socat)"
start echo "$NS_HOME" socat "TCP-LISTEN:$SERVICE_PORT,bind=127.0.0.1,reuseaddr,fork" PIPE
wait_for 10 "the echo service at home" listening "$NS_HOME" tcp "$SERVICE_PORT"

say "relay and home: pinhole up (public tcp/$PUBLIC_PORT -> the home's echo service)"
pinhole_relay_config >"$WORK/relay.toml"
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml"
pinhole_home_config >"$WORK/home.toml"
pinhole_up home "$NS_HOME" "$WORK/home.toml"
echo_works() { in_ns "$NS_CLIENT" python3 "$NT_DIR/tools/echo_client.py" once "$RELAY_PUBLIC_IP" "$PUBLIC_PORT" --wait 2; }
wait_for 15 "the echo service through the relay" echo_works

say "five connections each send \"before\", an urgent byte and \"after\" back to back"
got=$(in_ns "$NS_CLIENT" python3 "$NT_DIR/tools/echo_client.py" urgent "$RELAY_PUBLIC_IP" "$PUBLIC_PORT" \
    --count 5 --wait 3) || fail "urgent data through the relay and home: $got"
pass "everything after each urgent byte arrived ($got)"
