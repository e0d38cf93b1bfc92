#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 wg socat
# netstacks: userspace tun
#
# Story: a public port needs controls. The relay's web forward admits only 198.51.100.0/25 and
# denies one address inside it (deny wins); the client namespace has three addresses and
# connects from each: one gets the page, the other two are closed at once. The relay's echo
# forward has max_connections = 2: two clients hold their connections, a third is closed at
# once and `pinhole status --json` counts it as refused; when one holder leaves, a new
# connection gets in again.
source "$(dirname "$0")/lib.sh"

ALLOWED_IP=$CLIENT_IP # 198.51.100.50: inside allow
DENIED_IP=198.51.100.51   # inside allow, but in deny
OUTSIDE_IP=198.51.100.200 # outside allow
ECHO_PORT=7000

make_topology
ip -n "$NS_CLIENT" addr add "$DENIED_IP/24" dev c-relay
ip -n "$NS_CLIENT" addr add "$OUTSIDE_IP/24" dev c-relay
gen_keypair relay
gen_keypair home

say "at home: the web service on 127.0.0.1:$SERVICE_PORT and an echo service on 127.0.0.1:$ECHO_PORT"
web_service web "$NS_HOME" 127.0.0.1 "$SERVICE_PORT"
start echo "$NS_HOME" socat "TCP-LISTEN:$ECHO_PORT,bind=127.0.0.1,reuseaddr,fork" PIPE
wait_for 10 "the echo service at home" listening "$NS_HOME" tcp "$ECHO_PORT"

say "the relay: web (allow 198.51.100.0/25, deny $DENIED_IP) and echo (max_connections = 2)"
pinhole_relay_config >"$WORK/relay.toml"
cat >>"$WORK/relay.toml" <<EOF
allow = ["198.51.100.0/25"]
deny = ["$DENIED_IP"]

[[forward]]
name = "echo"
listen = "0.0.0.0:$ECHO_PORT"
to = "$OVERLAY_HOME:$ECHO_PORT"
max_connections = 2
EOF
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_relay_ready relay 10

pinhole_home_config >"$WORK/home.toml"
cat >>"$WORK/home.toml" <<EOF

[[expose]]
name = "echo"
listen = "$OVERLAY_HOME:$ECHO_PORT"
to = "127.0.0.1:$ECHO_PORT"
EOF
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v
wait_for 15 "the service through the relay" client_gets_hello

# get_from IP : the client's curl to the relay's public port, from source address IP.
get_from() {
    in_ns "$NS_CLIENT" curl -sS --max-time 5 --interface "$1" "$PUBLIC_URL/"
}

web_refused_before=0
has_command status && web_refused_before=$(service_stat "$WORK/relay.toml" forwards web refused)

say "allow and deny, judged on the client's address"
got=$(get_from "$ALLOWED_IP" 2>&1) || fail "the allowed address $ALLOWED_IP was refused: $got"
assert_eq "$HELLO" "$got" "$ALLOWED_IP (in allow) gets the page"
for ip in "$DENIED_IP" "$OUTSIDE_IP"; do
    t0=$(now_ms)
    rc=0
    got=$(get_from "$ip" 2>&1) || rc=$?
    ms=$(($(now_ms) - t0))
    ((rc != 0)) || fail "$ip should be refused but got: $got"
    ((ms < 1000)) || fail "$ip was turned away only after $ms ms (curl exit $rc); refusals must be immediate"
    pass "$ip is closed at once: curl exit $rc after $ms ms ($(head -n 1 <<<"$got"))"
done

if has_command status; then
    refused=$(service_stat "$WORK/relay.toml" forwards web refused)
    assert_eq 2 $((refused - web_refused_before)) "pinhole status counts the 2 refused clients on the web forward"
else
    skip_step "refusal counts from pinhole status" "this binary has no 'status' command"
fi

say "max_connections = 2: two clients hold their echo connections open"
for i in 1 2; do
    start "holder$i" "$NS_CLIENT" python3 "$NT_DIR/tools/echo_client.py" hold "$RELAY_PUBLIC_IP" "$ECHO_PORT" \
        --count 1 --state "$WORK/holder$i.state"
    wait_for 15 "holder $i's connection to echo" grep -qx "held=1" "$WORK/holder$i.state"
done
pass "two connections are open and echo"
if has_command status; then
    wait_for 5 "pinhole status to show 2 live connections on echo" \
        eval '[[ $(service_stat "$WORK/relay.toml" forwards echo active) == 2 ]]'
    pass "pinhole status shows 2 live connections on echo"
fi

echo_refused_before=0
has_command status && echo_refused_before=$(service_stat "$WORK/relay.toml" forwards echo refused)

say "a third client connects"
rc=0
out=$(in_ns "$NS_CLIENT" python3 "$NT_DIR/tools/echo_client.py" once "$RELAY_PUBLIC_IP" "$ECHO_PORT" --wait 3) || rc=$?
case $rc in
0) fail "a third connection was served although max_connections = 2: $out" ;;
3) pass "the third connection was closed at once: $out" ;;
4) fail "the third connection was left hanging instead of closed at once: $out" ;;
*) fail "the third connection: unexpected exit $rc: $out" ;;
esac
ms=$(grep -o '[0-9]* ms' <<<"$out" | cut -d' ' -f1)
assert_le "${ms:-9999}" 1000 "the third connection was closed within a second"

if has_command status; then
    json=$("$PINHOLE" status -c "$WORK/relay.toml" --json)
    note "status --json (echo): $(json_get "next(s for s in j['forwards'] if s['name'] == 'echo')" <<<"$json")"
    refused=$(json_get "next(s for s in j['forwards'] if s['name'] == 'echo')['refused']" <<<"$json")
    active=$(json_get "next(s for s in j['forwards'] if s['name'] == 'echo')['active']" <<<"$json")
    assert_eq 1 $((refused - echo_refused_before)) "pinhole status --json counts the third connection in refused"
    assert_eq 2 "$active" "the two held connections are still live"
fi

say "one holder leaves; a new connection gets its place"
stop holder1 TERM
assert_eq 0 "$STOP_RC" "holder 1's connection stayed open until it closed it"
wait_for 10 "a new echo connection to be served" \
    in_ns "$NS_CLIENT" python3 "$NT_DIR/tools/echo_client.py" once "$RELAY_PUBLIC_IP" "$ECHO_PORT" --wait 3
pass "with one place free, a new connection is served ($(fmt_ms "$WAITED_MS") s)"
stop holder2 TERM
assert_eq 0 "$STOP_RC" "holder 2's connection stayed open throughout"

assert_alive relay
echo "MEASURED third_connection_closed_ms=${ms:-?}"
pass "allow/deny and max_connections hold on a public port"
