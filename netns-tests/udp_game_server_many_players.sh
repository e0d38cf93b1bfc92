#!/usr/bin/env bash
# requires: root pinhole ip nft ping python3 wg
# netstacks: userspace tun
#
# Story: a person hosts a UDP game server at home, behind NAT, and the relay's public UDP port
# 27015 leads to it. Twenty-five players join at once from the internet; each one is its own
# session through the relay and the tunnel, so every player gets their own replies and nobody
# else's, datagrams of 1200 bytes arrive whole, and the game server sees one sender per player.
# Then the same for a 3-port range (27020-27022), as game servers and media servers use. And a
# small lobby port with max_sessions = 3 serves three players and drops the rest.
source "$(dirname "$0")/lib.sh"

PLAYERS=25
ROUNDS=4
GAME_PORT=27015
LOBBY_PORT=27016 # max_sessions = 3
LOBBY_MAX=3
RANGE=27020-27022

make_topology
gen_keypair relay
gen_keypair home

say "at home: the game server, a UDP echo on 127.0.0.1:$GAME_PORT-$LOBBY_PORT and 127.0.0.1:$RANGE (replies tagged with its port and the sender it saw)"
start game "$NS_HOME" python3 "$NT_DIR/tools/udp_echo.py" 127.0.0.1 "$GAME_PORT-$LOBBY_PORT"
start game-range "$NS_HOME" python3 "$NT_DIR/tools/udp_echo.py" 127.0.0.1 "$RANGE"
wait_for 10 "the game server to bind udp/$GAME_PORT at home" listening "$NS_HOME" udp "$GAME_PORT"
wait_for 10 "the game server to bind udp/27022 at home" listening "$NS_HOME" udp 27022

say "on the relay: public udp/$GAME_PORT, udp/$LOBBY_PORT (at most $LOBBY_MAX sessions) and udp/$RANGE, forwarded to the home's overlay address"
{
    relay_config_head "relay: the world's players reach the game server through here."
    cat <<EOF
[[forward]]
name = "game"
protocol = "udp"
listen = "0.0.0.0:$GAME_PORT"
to = "$OVERLAY_HOME:$GAME_PORT"

[[forward]]
name = "lobby"
protocol = "udp"
listen = "0.0.0.0:$LOBBY_PORT"
to = "$OVERLAY_HOME:$LOBBY_PORT"
max_sessions = $LOBBY_MAX

[[forward]]
name = "game-range"
protocol = "udp"
listen = "0.0.0.0:$RANGE"
to = "$OVERLAY_HOME:$RANGE"
EOF
} >"$WORK/relay.toml"
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_for 10 "the relay to bind udp/$WG_PORT" listening "$NS_RELAY" udp "$WG_PORT"
wait_for 10 "the relay to bind the public udp/$GAME_PORT" listening "$NS_RELAY" udp "$GAME_PORT"
wait_for 10 "the relay to bind the public udp/27022 (end of the range)" listening "$NS_RELAY" udp 27022

say "at home: pinhole up, exposing the overlay's udp/$GAME_PORT, udp/$LOBBY_PORT and udp/$RANGE as the game server"
{
    home_config_head "home: behind NAT; dials the relay and serves the game over the overlay."
    cat <<EOF
[[expose]]
name = "game"
protocol = "udp"
listen = "$OVERLAY_HOME:$GAME_PORT"
to = "127.0.0.1:$GAME_PORT"

[[expose]]
name = "lobby"
protocol = "udp"
listen = "$OVERLAY_HOME:$LOBBY_PORT"
to = "127.0.0.1:$LOBBY_PORT"

[[expose]]
name = "game-range"
protocol = "udp"
listen = "$OVERLAY_HOME:$RANGE"
to = "127.0.0.1:$RANGE"
EOF
} >"$WORK/home.toml"
started=$(now_ms)
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v

# players N PORTS [more args] : N players from the client namespace against the relay.
players() {
    local n=$1 ports=$2
    shift 2
    in_ns "$NS_CLIENT" python3 "$NT_DIR/tools/udp_players.py" --host "$RELAY_PUBLIC_IP" \
        --ports "$ports" --players "$n" "$@"
}
one_player_answered() { players 1 "$GAME_PORT" --rounds 1 --timeout 1; }

say "a first player knocks until the game answers through the relay"
wait_for 15 "a reply from the game server through the relay" one_player_answered
pass "first reply $(fmt_ms $(($(now_ms) - started))) s after the home started"

# play N PORTS LABEL : N players, ROUNDS rounds of 1200-byte datagrams, every check asserted.
play() {
    local n=$1 ports=$2 label=$3 out rc=0 t0 ms
    t0=$(now_ms)
    out=$(players "$n" "$ports" --rounds "$ROUNDS" --size 1200 --timeout 5 2>&1) || rc=$?
    ms=$(($(now_ms) - t0))
    ((rc == 0)) || fail "$label: not every player got their own replies (exit $rc):
$out"
    local datagrams replies crosstalk senders resent rtt nports
    datagrams=$(sed -n 's/^datagrams=//p' <<<"$out")
    replies=$(sed -n 's/^replies=//p' <<<"$out")
    crosstalk=$(sed -n 's/^crosstalk=//p' <<<"$out")
    senders=$(sed -n 's/^server_senders=//p' <<<"$out")
    resent=$(sed -n 's/^resent=//p' <<<"$out")
    rtt=$(sed -n 's/^max_rtt_ms=//p' <<<"$out")
    nports=$(sed -n 's/^ports=//p' <<<"$out")
    assert_eq "$datagrams" "$replies" "$label: all $datagrams datagrams (1200 bytes each) came back whole to the player who sent them"
    assert_eq 0 "$crosstalk" "$label: no player received another player's datagram"
    assert_eq $((n * nports)) "$senders" "$label: the game server saw one sender per player and port ($n x $nports sessions)"
    note "$label: $n players x $nports port(s) x $ROUNDS rounds in $(fmt_ms "$ms") s, max round trip $rtt ms, $resent resent"
    LAST_RTT=$rtt
}

say "$PLAYERS players join udp/$GAME_PORT at once, each from their own socket"
play "$PLAYERS" "$GAME_PORT" "one port"
rtt_one=$LAST_RTT

say "$PLAYERS players on the 3-port range $RANGE (each player talks to every port)"
play "$PLAYERS" "$RANGE" "port range"
rtt_range=$LAST_RTT

say "5 players try the lobby (max_sessions = $LOBBY_MAX on the relay)"
out=$(players 5 "$LOBBY_PORT" --rounds 1 --timeout 2 --partial 2>&1) || fail "the lobby mixed up players' replies: $out"
served=$(sed -n 's/^players_served=//p' <<<"$out")
assert_eq "$LOBBY_MAX" "$served" "the lobby served exactly $LOBBY_MAX players; the others' datagrams were dropped"
assert_eq 0 "$(sed -n 's/^crosstalk=//p' <<<"$out")" "no lobby player received another's datagram"

if has_command status; then
    say "pinhole status on the relay counts the players' sessions"
    active=$(service_stat "$WORK/relay.toml" forwards game active)
    total=$(service_stat "$WORK/relay.toml" forwards game total)
    ((active >= PLAYERS)) || fail "the relay's game forward shows $active live sessions; $PLAYERS players are still within the idle timeout"
    pass "the relay's game forward holds $active live sessions ($total in all)"
    active_range=$(service_stat "$WORK/relay.toml" forwards game-range active)
    ((active_range >= PLAYERS)) || fail "the relay's game-range forward shows $active_range live sessions, expected at least $PLAYERS"
    pass "the relay's game-range forward holds $active_range live sessions"
    lobby_active=$(service_stat "$WORK/relay.toml" forwards lobby active)
    lobby_refused=$(service_stat "$WORK/relay.toml" forwards lobby refused)
    assert_eq "$LOBBY_MAX" "$lobby_active" "the lobby holds $LOBBY_MAX sessions"
    note "the lobby counts $lobby_refused refused datagrams/sessions"
else
    skip_step "session counts from pinhole status" "this binary has no 'status' command"
fi

assert_alive relay
assert_alive home
echo "MEASURED players=$PLAYERS rtt_max_ms=$rtt_one range_rtt_max_ms=$rtt_range"
pass "a UDP game server at home served $PLAYERS players through the relay, each with their own replies"
