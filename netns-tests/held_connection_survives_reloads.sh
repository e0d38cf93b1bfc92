#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 wg socat
# netstacks: userspace tun
#
# Story: the relay's owner changes its config while someone is connected. A client holds one
# TCP connection through relay -> home to an echo service and sends a line every 200 ms,
# checking every echo. (a) A new forward is added and `pinhole reload` applies it: the new port
# works and the held connection never misses an echo. (b) A typo breaks relay.toml and SIGHUP is
# sent: the relay keeps running as it was and logs why; `pinhole reload` exits non-zero naming
# the file, the line and the key; the held connection still echoes. The file is restored and
# reloaded, and the held connection is still the same one.
source "$(dirname "$0")/lib.sh"

ECHO_PORT=7000

make_topology
gen_keypair relay
gen_keypair home

say "at home: the web service on 127.0.0.1:$SERVICE_PORT and an echo service on 127.0.0.1:$ECHO_PORT"
web_service web "$NS_HOME" 127.0.0.1 "$SERVICE_PORT"
start echo "$NS_HOME" socat "TCP-LISTEN:$ECHO_PORT,bind=127.0.0.1,reuseaddr,fork" PIPE
wait_for 10 "the echo service at home" listening "$NS_HOME" tcp "$ECHO_PORT"

say "the relay starts with one forward: public tcp/$ECHO_PORT to the home's echo"
# Line 4 is listen_port: the typo below is made there.
cat >"$WORK/relay.toml" <<EOF
# relay: the echo forward carries a connection that must survive every reload.
[interface]
private_key_file = "relay.key"
listen_port = $WG_PORT
address = ["$OVERLAY_RELAY/24"]
$(netstack_lines relay)

[[peer]]
name = "home"
public_key = "$(pub home)"
allowed_ips = ["$OVERLAY_HOME/32"]

[[forward]]
name = "echo"
listen = "0.0.0.0:$ECHO_PORT"
to = "$OVERLAY_HOME:$ECHO_PORT"
EOF
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_for 10 "the relay to listen on tcp/$ECHO_PORT" listening "$NS_RELAY" tcp "$ECHO_PORT"
relay_pid=${PID_OF[relay]}

pinhole_home_config >"$WORK/home.toml"
cat >>"$WORK/home.toml" <<EOF

[[expose]]
name = "echo"
listen = "$OVERLAY_HOME:$ECHO_PORT"
to = "127.0.0.1:$ECHO_PORT"
EOF
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v
echo_works() { in_ns "$NS_CLIENT" python3 "$NT_DIR/tools/echo_client.py" once "$RELAY_PUBLIC_IP" "$ECHO_PORT" --wait 2; }
wait_for 15 "the echo service through the relay" echo_works

say "the client opens one connection and sends a line every 200 ms, checking each echo"
STATE="$WORK/held.state"
start held "$NS_CLIENT" python3 "$NT_DIR/tools/echo_client.py" steady "$RELAY_PUBLIC_IP" "$ECHO_PORT" \
    --every 0.2 --wait 2 --state "$STATE"
echoed() {
    local n
    n=$(sed -n 's/.*echoed=\([0-9]*\).*/\1/p' "$STATE" 2>/dev/null) || true
    echo "${n:-0}"
}
# held_goes_on WHAT : the held connection is alive and echoes 5 more lines from now.
held_goes_on() {
    local what=$1 from
    from=$(echoed)
    wait_for 5 "the held connection to echo 5 more lines ($what)" \
        eval "alive held && (( \$(echoed) >= $from + 5 ))"
    alive held || fail "the held connection broke ($what): $(cat "$STATE")"
    pass "the held connection still echoes, $(echoed) lines so far ($what)"
}
held_goes_on "at the start"

reload() { "$PINHOLE" reload -c "$WORK/relay.toml" 2>&1; }

say "(a) the owner adds a web forward (public tcp/$PUBLIC_PORT) and runs pinhole reload"
cat >>"$WORK/relay.toml" <<EOF

[[forward]]
name = "web"
listen = "0.0.0.0:$PUBLIC_PORT"
to = "$OVERLAY_HOME:$OVERLAY_PORT"
EOF
cp "$WORK/relay.toml" "$WORK/relay.toml.good"
t0=$(now_ms)
out=$(reload) || fail "pinhole reload of a good file failed: $out"
note "pinhole reload took $(fmt_ms $(($(now_ms) - t0))) s and said: $out"
assert_contains "$out" "web" "reload reports the new forward"
wait_for 5 "the relay to listen on the new tcp/$PUBLIC_PORT" listening "$NS_RELAY" tcp "$PUBLIC_PORT"
check_hello
held_goes_on "after the reload that added a forward"

say "(b) a typo breaks relay.toml (listen_port -> listen_prot on line 4) and SIGHUP is sent"
sed -i '4s/^listen_port/listen_prot/' "$WORK/relay.toml"
sed -n 4p "$WORK/relay.toml" | grep -q '^listen_prot = ' || fail "the typo was not made on line 4"
log_lines=$(wc -l <"$WORK/relay.log")
kill -HUP "$relay_pid"
wait_for 5 "the relay to log why it refused the reload" \
    eval "tail -n +$((log_lines + 1)) '$WORK/relay.log' | grep -q listen_prot"
why=$(tail -n +"$((log_lines + 1))" "$WORK/relay.log" | grep -m1 listen_prot)
note "relay log: $why"
assert_alive relay "a broken file must change nothing"
assert_eq "$relay_pid" "${PID_OF[relay]}" "the relay is the same process"
held_goes_on "after SIGHUP with a broken file"

say "pinhole reload with the broken file"
rc=0
out=$(reload) || rc=$?
sed 's/^/      | /' <<<"$out"
((rc != 0)) || fail "pinhole reload exited 0 although relay.toml is broken: $out"
grep -q "relay.toml:4:.*listen_prot" <<<"$out" ||
    fail "pinhole reload (exit $rc) does not point at relay.toml, line 4, key listen_prot: $out"
pass "pinhole reload exits $rc and names the file, line 4 and the key listen_prot"
check_hello
held_goes_on "after pinhole reload refused the broken file"

say "the owner fixes the typo and reloads"
cp "$WORK/relay.toml.good" "$WORK/relay.toml"
out=$(reload) || fail "pinhole reload of the restored file failed: $out"
note "pinhole reload: $out"
check_hello
held_goes_on "after the file was restored and reloaded"

if has_command status; then
    active=$(service_stat "$WORK/relay.toml" forwards echo active)
    total=$(service_stat "$WORK/relay.toml" forwards echo total)
    note "echo forward: active $active, total $total"
    ((active >= 1)) || fail "pinhole status shows no live connection on the echo forward"
fi

say "the client closes its connection"
stop held TERM
summary=$(cat "$STATE")
assert_eq 0 "$STOP_RC" "the held connection never missed an echo ($summary)"
sent=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' "$STATE")
rtt=$(sed -n 's/.*max_rtt_ms=\([0-9.]*\).*/\1/p' "$STATE")
assert_eq "$sent" "$(echoed)" "every one of the $sent lines came back"
assert_eq "$relay_pid" "${PID_OF[relay]}" "the relay was never restarted"
echo "MEASURED held_echoes=$sent max_echo_ms=$rtt"
pass "one connection lived through two reloads, one with a broken file, and missed nothing"
