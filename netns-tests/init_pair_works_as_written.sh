#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 wg
# netstacks: userspace -- init's files are started unedited, and they name no netstack (userspace)
#
# Story: a person goes from nothing to a working relay in two commands. `pinhole init` writes a
# matched relay.toml and home.toml (fresh keys, mode 0600); they are started exactly as written,
# the relay on the VM and the home behind NAT, and the world's request to relay:8080 lands on
# the web service on the home's 127.0.0.1:8000. `pinhole status` on the relay then shows the
# home peer's handshake and the forward's counts, as text and as JSON.
source "$(dirname "$0")/lib.sh"

make_topology

has_command init || fail "this pinhole has no 'init' command; the story cannot be told without it"

PAIR="$WORK/pair"
say "pinhole init --endpoint $RELAY_WAN_IP:$WG_PORT --forward $PUBLIC_PORT:127.0.0.1:$SERVICE_PORT --out $PAIR"
out=$("$PINHOLE" init --endpoint "$RELAY_WAN_IP:$WG_PORT" \
    --forward "$PUBLIC_PORT:127.0.0.1:$SERVICE_PORT" --out "$PAIR" 2>&1) ||
    fail "pinhole init failed: $out"
note "init said: $(head -n 3 <<<"$out" | paste -sd' ')"
for f in relay.toml home.toml; do
    [[ -f $PAIR/$f ]] || fail "pinhole init did not write $PAIR/$f (it printed: $out)"
    assert_eq 600 "$(stat -c %a "$PAIR/$f")" "$f is mode 0600 (it holds a private key)"
done
comments=$(grep -c '^ *#' "$PAIR/relay.toml" || true)
((comments > 0)) || fail "relay.toml from init has no comments; a person has to read and edit it"
pass "relay.toml explains itself ($comments comment lines)"
grep -q "$RELAY_WAN_IP:$WG_PORT" "$PAIR/home.toml" || fail "home.toml does not dial the endpoint $RELAY_WAN_IP:$WG_PORT"
pass "home.toml dials $RELAY_WAN_IP:$WG_PORT"

say "at home: the web service on 127.0.0.1:$SERVICE_PORT"
web_service web "$NS_HOME" 127.0.0.1 "$SERVICE_PORT"

say "on the relay: pinhole up -c relay.toml, as written"
pinhole_up relay "$NS_RELAY" "$PAIR/relay.toml"
wait_relay_ready relay 10

say "at home: pinhole up -c home.toml, as written"
started=$(now_ms)
pinhole_up home "$NS_HOME" "$PAIR/home.toml"

say "the client asks the relay for the home page"
wait_for 15 "the client's request through the relay to reach the home service" client_gets_hello
first_ms=$(($(now_ms) - started))
pass "first reply $(fmt_ms "$first_ms") s after the home started"
check_hello
check_big_transfer

has_command status || fail "this pinhole has no 'status' command"
say "pinhole status -c relay.toml"
text=$("$PINHOLE" status -c "$PAIR/relay.toml" 2>&1) || fail "pinhole status failed: $text"
sed 's/^/      | /' <<<"$text"
assert_contains "$text" "peer: home" "status lists the home peer"
assert_contains "$text" "latest handshake" "status shows the home's latest handshake"
assert_contains "$text" "0.0.0.0:$PUBLIC_PORT" "status lists the public forward"

say "pinhole status -c relay.toml --json"
json=$("$PINHOLE" status -c "$PAIR/relay.toml" --json 2>&1) || fail "pinhole status --json failed: $json"
hs=$(json_get "next(p for p in j['peers'] if p['name'] == 'home')['latest_handshake']" <<<"$json") ||
    fail "no peer named home in: $json"
[[ $hs != null ]] || fail "latest_handshake of home is null after traffic flowed: $json"
age=$(($(date +%s) - hs))
((age >= 0 && age < 120)) || fail "latest_handshake $hs is $age s from now"
pass "latest_handshake of home is $hs ($age s ago)"
fwd="next(f for f in j['forwards'] if f['listen'].endswith(':$PUBLIC_PORT'))"
total=$(json_get "${fwd}['total']" <<<"$json") || fail "no forward listening on :$PUBLIC_PORT in: $json"
rx=$(json_get "${fwd}['rx_bytes']" <<<"$json")
tx=$(json_get "${fwd}['tx_bytes']" <<<"$json")
note "forward: $(json_get "${fwd}" <<<"$json")"
((total >= 3)) || fail "the forward counts $total connections; the client made at least 3"
pass "the forward counts $total connections"
((rx > 0)) || fail "the forward's rx_bytes is $rx after requests came in"
((tx >= 10 * 1024 * 1024)) || fail "the forward's tx_bytes is $tx after a 10 MiB download"
pass "the forward counts bytes both ways (rx $rx, tx $tx)"
missing=$(json_get "' '.join([k for k in 'name protocol listen to active total refused rx_bytes tx_bytes'.split() if k not in $fwd]
    + ['peer.' + k for k in 'name public_key endpoint latest_handshake rx_bytes tx_bytes'.split() if k not in j['peers'][0]]
    + [k for k in ('peers', 'forwards', 'exposes') if k not in j])" <<<"$json")
[[ -z $missing ]] || fail "status --json lacks keys of the contract: $missing"
pass "the JSON has every key of the contract"

echo "MEASURED first_reply=$(fmt_ms "$first_ms")s"
pass "the pair from pinhole init served a request as written"
