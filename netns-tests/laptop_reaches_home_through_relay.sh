#!/usr/bin/env bash
# requires: root pinhole ip nft ping python3 wg socat
# netstacks: userspace tun
#
# Story: local port mapping through the relay (`ssh -L`, but the far end is behind NAT). The home
# and a laptop out in the world both dial the relay; neither can reach the other. The relay has
# `route_between_peers = true` and opens no public port at all. The laptop's forward of its
# 127.0.0.1:2222 to the home's overlay 10.77.0.2:22 reaches the home's SSH-like service, the
# relay passing the overlay packets from one peer to the other. Turned off with a reload, the
# relay no longer carries them; turned on again, the laptop gets in again.
source "$(dirname "$0")/lib.sh"

NS_LAPTOP=$NS_CLIENT # the laptop sits out in the world, where the client is
OVERLAY_LAPTOP=10.77.0.3
LAPTOP_PORT=2222
HOME_SSH=2200 # the service at home, on 127.0.0.1 only
BANNER="SSH-2.0-home_run$$"

make_topology
gen_keypair relay
gen_keypair home
gen_keypair laptop

say "at home: an SSH-like service on 127.0.0.1:$HOME_SSH (a banner, then it echoes lines)"
start sshd "$NS_HOME" socat "TCP-LISTEN:$HOME_SSH,bind=127.0.0.1,reuseaddr,fork" \
    "SYSTEM:echo $BANNER; exec cat"
wait_for 10 "the service at home" listening "$NS_HOME" tcp "$HOME_SSH"

say "the relay: a hub for its two peers (route_between_peers = true), no forwards at all"
cat >"$WORK/relay.toml" <<EOF
# relay: passes overlay packets between its peers; no public port.
[interface]
private_key_file = "relay.key"
listen_port = $WG_PORT
address = ["$OVERLAY_RELAY/24"]
route_between_peers = true
$(netstack_lines relay)

[[peer]]
name = "home"
public_key = "$(pub home)"
allowed_ips = ["$OVERLAY_HOME/32"]

[[peer]]
name = "laptop"
public_key = "$(pub laptop)"
allowed_ips = ["$OVERLAY_LAPTOP/32"]
EOF
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_for 10 "the relay to bind udp/$WG_PORT" listening "$NS_RELAY" udp "$WG_PORT"

say "at home: pinhole up; the whole overlay is reached through the relay"
cat >"$WORK/home.toml" <<EOF
# home: behind NAT; its SSH is in the overlay at $OVERLAY_HOME:22.
[interface]
private_key = "$(key home)"
address = ["$OVERLAY_HOME/24"]
$(netstack_lines home)

[[peer]]
name = "relay"
public_key = "$(pub relay)"
allowed_ips = ["10.77.0.0/24"]
endpoint = "$RELAY_WAN_IP:$WG_PORT"
persistent_keepalive = 25

[[expose]]
name = "ssh"
listen = "$OVERLAY_HOME:22"
to = "127.0.0.1:$HOME_SSH"
EOF
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v

say "the laptop: pinhole up, 127.0.0.1:$LAPTOP_PORT forwarded to the home's $OVERLAY_HOME:22"
cat >"$WORK/laptop.toml" <<EOF
# laptop: ssh -p $LAPTOP_PORT 127.0.0.1 lands on the home's SSH.
[interface]
private_key = "$(key laptop)"
address = ["$OVERLAY_LAPTOP/24"]
$(netstack_lines laptop)

[[peer]]
name = "relay"
public_key = "$(pub relay)"
allowed_ips = ["10.77.0.0/24"]   # the whole overlay, through the relay
endpoint = "$RELAY_PUBLIC_IP:$WG_PORT"
persistent_keepalive = 25

[[forward]]
name = "home-ssh"
listen = "127.0.0.1:$LAPTOP_PORT"
to = "$OVERLAY_HOME:22"
connect_timeout = "2s"
EOF
pinhole_up laptop "$NS_LAPTOP" "$WORK/laptop.toml" -v
wait_for 10 "the laptop to listen on 127.0.0.1:$LAPTOP_PORT" listening "$NS_LAPTOP" tcp "$LAPTOP_PORT"

public=$(in_ns "$NS_RELAY" ss -Hlnt | wc -l)
assert_eq 0 "$public" "the relay listens on no TCP port at all"

# ssh_session : from the laptop, through 127.0.0.1:2222: print the banner, send a line, print
# its echo. Fails when the banner does not come within 4 s.
ssh_session() {
    in_ns "$NS_LAPTOP" timeout 6 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/'"$LAPTOP_PORT"' || exit 1
        IFS= read -r -t 4 banner <&3 || exit 1
        echo "$banner"
        echo "hello from the laptop" >&3
        IFS= read -r -t 4 reply <&3 || exit 1
        echo "$reply"'
}
laptop_gets_in() { [[ $(ssh_session) == "$BANNER"$'\n'"hello from the laptop" ]]; }

say "the laptop connects to 127.0.0.1:$LAPTOP_PORT"
started=$(now_ms)
wait_for 20 "the home's banner at the laptop, through the relay" laptop_gets_in
pass "banner and echo through laptop -> relay -> home, $(fmt_ms $(($(now_ms) - started))) s after the laptop's forward listened"
got=$(ssh_session) || fail "a second session failed"
assert_eq "$BANNER"$'\n'"hello from the laptop" "$got" "a second session gets the banner and its echo"

# set_routing true|false : edit the relay's config and reload it.
set_routing() {
    sed -i "s/^route_between_peers = .*/route_between_peers = $1/" "$WORK/relay.toml"
    if has_command reload; then
        local out
        out=$("$PINHOLE" reload -c "$WORK/relay.toml" 2>&1) || fail "pinhole reload failed: $out"
        note "pinhole reload: $out"
    else
        skip_step "pinhole reload" "this binary has no 'reload' command; sending SIGHUP instead"
        kill -HUP "${PID_OF[relay]}"
        sleep 1 # SIGHUP gives no answer to wait for
    fi
}

say "the relay's owner turns routing between peers off (route_between_peers = false, pinhole reload)"
set_routing false
refused_ms=$(now_ms)
if ssh_session >/dev/null 2>&1; then
    fail "with route_between_peers = false the laptop still reached the home through the relay"
fi
pass "with routing off the laptop's connection gets no banner (gave up after $(fmt_ms $(($(now_ms) - refused_ms))) s)"
assert_alive relay
assert_alive laptop

say "routing on again (pinhole reload): the laptop gets in without restarting anything"
set_routing true
wait_for 15 "the laptop to reach home again" laptop_gets_in
back=$WAITED_MS
pass "the laptop reached home again $(fmt_ms "$back") s after the reload"
echo "MEASURED route_back_after_reload=$(fmt_ms "$back")s"
pass "a laptop reached a service behind NAT through the relay, with no public port"
