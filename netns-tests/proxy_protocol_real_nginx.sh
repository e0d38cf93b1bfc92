#!/usr/bin/env bash
# requires: root pinhole ip nft ping curl python3 wg nginx
# netstacks: userspace tun
#
# Story: the home runs a real nginx (Debian's) and wants each visitor's real address in its
# access log, although every connection arrives from Pinhole on 127.0.0.1. The relay's forwards
# send a PROXY protocol header, v1 (text) on public port 8081 and v2 (binary) on 8082; nginx's
# `listen ... proxy_protocol` reads it, and `$proxy_protocol_addr:$proxy_protocol_port` in the
# log is the client's own address and source port. A forward without proxy_protocol (8090)
# tells nginx nothing, and a client that sends its own PROXY header cannot pass as someone else.
#
# nginx runs with its own prefix, config, pid file, logs and temp paths under the work dir: the
# system's nginx (if any) is never touched.
source "$(dirname "$0")/lib.sh"

V1=8081    # public port = overlay port = nginx port, PROXY v1
V2=8082    # ... PROXY v2
PLAIN=8090 # ... no PROXY header

make_topology
gen_keypair relay
gen_keypair home

say "at home: nginx on 127.0.0.1:$V1 and :$V2 (listen ... proxy_protocol) and :$PLAIN (plain)"
NGX="$WORK/nginx"
mkdir -p "$NGX/tmp"
cat >"$NGX/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $NGX/nginx.pid;
error_log $WORK/nginx-error.log info;
events { worker_connections 64; }
http {
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    log_format pp 'port=\$server_port pp_addr=\$proxy_protocol_addr pp_port=\$proxy_protocol_port remote=\$remote_addr status=\$status "\$request"';
    access_log $WORK/nginx-access.log pp;
    default_type text/plain;
    server {
        listen 127.0.0.1:$V1 proxy_protocol;
        location / { return 200 "nginx saw \$proxy_protocol_addr:\$proxy_protocol_port\n"; }
    }
    server {
        listen 127.0.0.1:$V2 proxy_protocol;
        location / { return 200 "nginx saw \$proxy_protocol_addr:\$proxy_protocol_port\n"; }
    }
    server {
        listen 127.0.0.1:$PLAIN;
        location / { return 200 "nginx saw \$remote_addr:\$remote_port\n"; }
    }
}
EOF
nginx -t -p "$NGX" -c "$NGX/nginx.conf" -e "$WORK/nginx-error.log" >>"$WORK/nginx-error.log" 2>&1 ||
    fail "nginx -t refused the test config"
start nginx "$NS_HOME" nginx -p "$NGX" -c "$NGX/nginx.conf" -e "$WORK/nginx-error.log"
for port in $V1 $V2 $PLAIN; do
    wait_for 10 "nginx to listen on 127.0.0.1:$port at home" listening "$NS_HOME" tcp "$port"
done

say "the relay: public $V1 (proxy_protocol v1), $V2 (v2) and $PLAIN (none), all to the home's nginx"
{
    relay_config_head "relay: nginx at home learns each visitor's address from the PROXY header."
    cat <<EOF
[[forward]]
name = "web-v1"
listen = "0.0.0.0:$V1"
to = "$OVERLAY_HOME:$V1"
proxy_protocol = "v1"

[[forward]]
name = "web-v2"
listen = "0.0.0.0:$V2"
to = "$OVERLAY_HOME:$V2"
proxy_protocol = "v2"

[[forward]]
name = "web-plain"
listen = "0.0.0.0:$PLAIN"
to = "$OVERLAY_HOME:$PLAIN"
EOF
} >"$WORK/relay.toml"
pinhole_up relay "$NS_RELAY" "$WORK/relay.toml" -v
wait_for 10 "the relay to bind udp/$WG_PORT" listening "$NS_RELAY" udp "$WG_PORT"

say "at home: pinhole up, exposing the three ports to nginx"
{
    home_config_head "home: nginx behind NAT."
    for port in $V1 $V2 $PLAIN; do
        printf '\n[[expose]]\nname = "nginx-%s"\nlisten = "%s:%s"\nto = "127.0.0.1:%s"\n' \
            "$port" "$OVERLAY_HOME" "$port" "$port"
    done
} >"$WORK/home.toml"
pinhole_up home "$NS_HOME" "$WORK/home.toml" -v

# visit PORT LOCAL_PORT : the client's curl to the relay's PORT from its source port LOCAL_PORT.
visit() {
    in_ns "$NS_CLIENT" curl -sS --max-time 5 --local-port "$2" "http://$RELAY_PUBLIC_IP:$1/"
}
# logged PORT LOCAL_PORT : nginx's access log line for that visit (matched on its source port).
logged() {
    grep "^port=$1 .*pp_port=$2 " "$WORK/nginx-access.log"
}
plain_up() { [[ $(in_ns "$NS_CLIENT" curl -fsS --max-time 3 "http://$RELAY_PUBLIC_IP:$PLAIN/") == "nginx saw 127.0.0.1:"* ]]; }
wait_for 15 "nginx at home to answer through the relay" plain_up

# check_version PORT VERSION LOCAL_PORT
check_version() {
    local port=$1 version=$2 lport=$3 body line
    say "PROXY $version: the client (source port $lport) asks the relay's :$port"
    body=$(visit "$port" "$lport" 2>&1) || fail "the request to :$port failed: $body"
    assert_eq "nginx saw $CLIENT_IP:$lport" "$body" "nginx answered with the client's address and port ($version)"
    wait_for 5 "nginx to log the request on :$port" logged "$port" "$lport"
    line=$(logged "$port" "$lport")
    note "access log: $line"
    assert_contains "$line" "pp_addr=$CLIENT_IP pp_port=$lport remote=127.0.0.1 status=200" \
        "nginx's access log shows the public client $CLIENT_IP:$lport behind 127.0.0.1 ($version)"
}
check_version "$V1" v1 40081
check_version "$V2" v2 40082

say "without proxy_protocol, nginx learns nothing about the client"
body=$(visit "$PLAIN" 40090 2>&1) || fail "the request to :$PLAIN failed: $body"
assert_contains "$body" "nginx saw 127.0.0.1:" "nginx sees only Pinhole's 127.0.0.1 on the plain forward"
! grep -q "^port=$PLAIN .*$CLIENT_IP" "$WORK/nginx-access.log" ||
    fail "the client's address reached nginx through a forward without proxy_protocol"
pass "the client's address is nowhere in nginx's log for the plain forward"

say "a client that sends its own PROXY header cannot pass as 192.0.2.66"
in_ns "$NS_CLIENT" timeout 5 bash -c '
    exec 3<>/dev/tcp/'"$RELAY_PUBLIC_IP/$V1"'
    printf "PROXY TCP4 192.0.2.66 198.51.100.1 4444 %s\r\nGET / HTTP/1.0\r\n\r\n" '"$V1"' >&3
    cat <&3' >"$WORK/forged.out" 2>&1 || true
note "the forger got: $(head -n 1 "$WORK/forged.out")"
wait_for 5 "nginx to log the forged request" grep -q "192.0.2.66" "$WORK/nginx-access.log"
! grep -q "pp_addr=192.0.2.66" "$WORK/nginx-access.log" || fail "nginx took the client's forged PROXY header as the real address"
line=$(grep "192.0.2.66" "$WORK/nginx-access.log")
assert_contains "$line" "pp_addr=$CLIENT_IP" "nginx logged the real address; the forged header was only a bad request line"

if has_command status; then
    for name in web-v1 web-v2 web-plain; do
        total=$(service_stat "$WORK/relay.toml" forwards "$name" total)
        ((total >= 1)) || fail "pinhole status counts no connection on forward $name"
    done
    pass "pinhole status counts connections on all three forwards"
fi
assert_alive relay
assert_alive home
echo "MEASURED proxy_v1=ok proxy_v2=ok"
pass "a real nginx at home logged the public client's address from PROXY v1 and v2"
