#!/usr/bin/env bash
# requires: root pinhole ip ping curl python3 wg wireguard-go
# netstacks: userspace tun
#
# Story: a person adds their phone to a running relay in one command. `pinhole add-peer --wg`
# appends the phone to relay.toml and prints a wg-quick config; a stock WireGuard client
# (wireguard-go + wg, standing in for the phone app) is configured from it as a phone app would
# be, the relay is reloaded without a restart, and the phone completes a handshake, pings the
# relay's overlay address and reaches a service the relay exposes in the overlay. `wg show`
# against the relay's UAPI socket lists the phone like any WireGuard peer.
#
#   phone 198.51.100.60 ── 198.51.100.1 relay
source "$(dirname "$0")/lib.sh"

NS_PHONE="$PFX-phone"
PHONE_IP=198.51.100.60
WG_IF_PHONE="wgp$$"
# wg's UAPI directory (/var/run/wireguard) is shared by every namespace on this machine, so the
# relay's config file gets a name unique to this run: `wg show relay-PID` finds it.
RELAY_NAME="relay-$$"

say "building the network: phone -- relay (namespaces $PFX-*)"
say_netstack
add_ns "$NS_PHONE"
add_ns "$NS_RELAY"
link "$NS_PHONE" p-relay "$PHONE_IP/24" "$NS_RELAY" r-phone "$RELAY_PUBLIC_IP/24"

has_command init || fail "this pinhole has no 'init' command"
has_command add-peer || fail "this pinhole has no 'add-peer' command; the story cannot be told without it"

PAIR="$WORK/pair"
say "pinhole init --endpoint $RELAY_PUBLIC_IP:$WG_PORT --forward $PUBLIC_PORT:127.0.0.1:$SERVICE_PORT, then the relay's config is $RELAY_NAME.toml"
out=$("$PINHOLE" init --endpoint "$RELAY_PUBLIC_IP:$WG_PORT" \
    --forward "$PUBLIC_PORT:127.0.0.1:$SERVICE_PORT" --out "$PAIR" 2>&1) || fail "pinhole init failed: $out"
RELAY_CONF="$PAIR/$RELAY_NAME.toml"
mv "$PAIR/relay.toml" "$RELAY_CONF"
use_netstack "$RELAY_CONF" relay
cat >>"$RELAY_CONF" <<EOF

# A page on the relay itself, for peers inside the overlay.
[[expose]]
name = "relay-page"
listen = "$OVERLAY_RELAY:80"
to = "127.0.0.1:$SERVICE_PORT"
EOF

say "on the relay: its page on 127.0.0.1:$SERVICE_PORT and pinhole up"
web_service page "$NS_RELAY" 127.0.0.1 "$SERVICE_PORT"
pinhole_up relay "$NS_RELAY" "$RELAY_CONF" -v
wait_relay_ready relay 10
if [[ -S /var/run/wireguard/$RELAY_NAME.sock ]]; then
    pass "the relay answers UAPI on /var/run/wireguard/$RELAY_NAME.sock"
else
    wait_for 5 "the relay's UAPI socket /var/run/wireguard/$RELAY_NAME.sock" test -S "/var/run/wireguard/$RELAY_NAME.sock"
fi

say "pinhole add-peer -c $RELAY_NAME.toml --name phone --wg --endpoint $RELAY_PUBLIC_IP:$WG_PORT"
comments_before=$(grep -c '^ *#' "$RELAY_CONF" || true)
"$PINHOLE" add-peer -c "$RELAY_CONF" --name phone --wg --endpoint "$RELAY_PUBLIC_IP:$WG_PORT" \
    >"$WORK/phone.conf" 2>"$WORK/add-peer.log" || fail "pinhole add-peer failed: $(cat "$WORK/add-peer.log")"
sed 's/PrivateKey = .*/PrivateKey = (hidden)/; s/^/      | /' "$WORK/phone.conf"
if ! grep -q '^\[Interface\]' "$WORK/phone.conf" || ! grep -q '^\[Peer\]' "$WORK/phone.conf"; then
    fail "add-peer --wg did not print a wg-quick config: $(cat "$WORK/phone.conf")"
fi
pass "add-peer printed a wg-quick config"
grep -q 'name = "phone"' "$RELAY_CONF" || fail "add-peer did not append the phone to $RELAY_NAME.toml"
assert_eq 600 "$(stat -c %a "$RELAY_CONF")" "$RELAY_NAME.toml is still mode 0600"
comments_after=$(grep -c '^ *#' "$RELAY_CONF" || true)
((comments_after >= comments_before)) || fail "add-peer lost comments: $comments_before before, $comments_after after"
pass "the phone was appended to $RELAY_NAME.toml, comments kept ($comments_before -> $comments_after)"
out=$("$PINHOLE" check -c "$RELAY_CONF" 2>&1) || fail "$RELAY_NAME.toml no longer passes pinhole check: $out"

say "the phone app: wireguard-go, configured from that file (wg-quick's own lines applied by hand)"
# wg-quick keys that `wg setconf` does not know: Address and MTU are applied with ip; DNS has
# nothing to do here (the phone resolves nothing in this story).
conf_value() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$WORK/phone.conf" | head -n 1; }
addresses=$(conf_value Address)
mtu=$(conf_value MTU)
allowed=$(conf_value AllowedIPs)
[[ -n $addresses ]] || fail "the phone's config has no Address"
[[ -n $allowed ]] || fail "the phone's config has no AllowedIPs"
note "Address = $addresses; AllowedIPs = $allowed; MTU = ${mtu:-(none)}; DNS = $(conf_value DNS)"
grep -Ev '^[[:space:]]*(Address|DNS|MTU|Table|PreUp|PostUp|PreDown|PostDown|SaveConfig)[[:space:]]*=' \
    "$WORK/phone.conf" >"$WORK/phone.setconf"
chmod 600 "$WORK/phone.setconf"
phone_v4=$(tr ',' '\n' <<<"$addresses" | tr -d ' ' | grep -v ':' | head -n 1)
[[ -n $phone_v4 ]] || fail "the phone's config has no IPv4 Address: $addresses"
wireguard_go_up wg-phone "$NS_PHONE" "$WG_IF_PHONE" "$phone_v4" "$WORK/phone.setconf"
[[ -z $mtu ]] || ip -n "$NS_PHONE" link set "$WG_IF_PHONE" mtu "$mtu"
for cidr in $(tr ',' ' ' <<<"$allowed"); do
    [[ $cidr == *:* ]] && continue # no IPv6 address on this phone
    ip -n "$NS_PHONE" route replace "$cidr" dev "$WG_IF_PHONE"
done
phone_pub=$(sed -n 's/^[[:space:]]*PrivateKey[[:space:]]*=[[:space:]]*//p' "$WORK/phone.conf" | wg pubkey)

say "before the reload, the relay does not know the phone: no handshake"
handshake() {
    in_ns "$NS_PHONE" wg show "$WG_IF_PHONE" latest-handshakes | awk '{exit !($2 > 0)}'
}
in_ns "$NS_PHONE" ping -c1 -W1 "$OVERLAY_RELAY" >/dev/null 2>&1 || true # makes wireguard-go try
if try_for 3 handshake; then
    fail "the phone completed a handshake before the relay was reloaded"
fi
pass "no handshake while the phone is only in the file"

say "pinhole reload -c $RELAY_NAME.toml"
reload_at=$(now_ms)
if has_command reload; then
    out=$("$PINHOLE" reload -c "$RELAY_CONF" 2>&1) || fail "pinhole reload failed: $out"
    note "reload: $out"
else
    skip_step "pinhole reload" "this binary has no 'reload' command; sending SIGHUP instead"
    kill -HUP "${PID_OF[relay]}"
fi
relay_pid=${PID_OF[relay]}

say "the phone completes a handshake with the relay"
in_ns "$NS_PHONE" ping -c1 -W1 "$OVERLAY_RELAY" >/dev/null 2>&1 || true
wait_for 15 "wg show on the phone to report a handshake" handshake
hs_ms=$(($(now_ms) - reload_at))
pass "handshake done $(fmt_ms "$hs_ms") s after the reload"
assert_eq "$relay_pid" "${PID_OF[relay]}" "the relay is the same process (reloaded, not restarted)"

if try_for 5 in_ns "$NS_PHONE" ping -c1 -W1 "$OVERLAY_RELAY"; then
    pass "the phone pings the relay's overlay address $OVERLAY_RELAY"
else
    fail "the phone cannot ping $OVERLAY_RELAY over the tunnel"
fi
got=$(in_ns "$NS_PHONE" curl -fsS --max-time 5 "http://$OVERLAY_RELAY/" 2>&1) ||
    fail "the phone could not reach the relay's exposed page at http://$OVERLAY_RELAY/: $got"
assert_eq "$HELLO" "$got" "the phone reached the relay's expose $OVERLAY_RELAY:80 over the tunnel"

say "wg show $RELAY_NAME (the relay's UAPI socket) lists the phone"
shown=$(wg show "$RELAY_NAME" 2>&1) || fail "wg show $RELAY_NAME failed: $shown"
sed 's/^/      | /' <<<"$shown"
assert_contains "$shown" "peer: $phone_pub" "wg show lists the phone's public key"
hs=$(wg show "$RELAY_NAME" latest-handshakes | awk -v k="$phone_pub" '$1 == k {print $2}')
((${hs:-0} > 0)) || fail "wg show $RELAY_NAME reports no handshake with the phone"
pass "wg show reports the phone's handshake at $hs"

echo "MEASURED phone_handshake_after_reload=$(fmt_ms "$hs_ms")s"
pass "a stock WireGuard client from add-peer joined the running relay"
