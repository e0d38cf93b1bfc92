#!/usr/bin/env bash
# requires: pinhole
# netstacks: userspace -- pinhole check on files: no tunnel, so no stack
#
# Story: a person makes the mistakes people make in config files. `pinhole check` refuses each
# one, exits non-zero, and points at the file, the line and the key, so the fix is obvious.
# A good config, and the example configs shipped in configs/, pass.
#
# No namespaces: this story needs neither root nor a network.
source "$(dirname "$0")/lib.sh"

CFG="$WORK/cfg"
mkdir -p "$CFG"
RELAY_KEY=$("$PINHOLE" genkey)
HOME_KEY=$("$PINHOLE" genkey)
HOME_PUB=$("$PINHOLE" pubkey <<<"$HOME_KEY")
OTHER_PUB=$("$PINHOLE" pubkey <<<"$("$PINHOLE" genkey)")

# A good relay config; the mistakes below are small edits of it. Line numbers matter:
#  1 comment, 2 [interface], 3 private_key, 4 listen_port, 5 address, 6 blank,
#  7 [[peer]], 8 name, 9 public_key, 10 allowed_ips, 11 blank,
#  12 [[forward]], 13 name, 14 listen, 15 to
good_config() {
    cat <<EOF
# relay
[interface]
private_key = "$RELAY_KEY"
listen_port = 51820
address = ["10.77.0.1/24"]

[[peer]]
name = "home"
public_key = "$HOME_PUB"
allowed_ips = ["10.77.0.2/32"]

[[forward]]
name = "web"
listen = "0.0.0.0:8080"
to = "10.77.0.2:80"
EOF
}

# A second peer, appended after line 15: lines 16 blank, 17 [[peer]], 18 name, 19 public_key,
# 20 allowed_ips.
second_peer() { # second_peer NAME ALLOWED_IPS
    cat <<EOF

[[peer]]
name = "$1"
public_key = "$OTHER_PUB"
allowed_ips = ["$2"]
EOF
}

# An expose appended after line 15: 16 blank, 17 [[expose]], 18 name, 19 listen, 20 to.
an_expose() { # an_expose LISTEN
    cat <<EOF

[[expose]]
name = "ssh"
listen = "$1"
to = "127.0.0.1:22"
EOF
}

# check_refused NAME "LINE[|LINE...]" KEY ["LINE|..." KEY ...] < config
# The config is refused (exit != 0) and for each (LINE, KEY) one output line starts with
# FILE:LINE: and names KEY.
check_refused() {
    local name=$1
    shift
    local file="$CFG/$name.toml"
    cat >"$file"
    local out rc=0
    out=$("$PINHOLE" check -c "$file" 2>&1) || rc=$?
    if ((rc == 0)); then
        fail "pinhole check accepted $name.toml, which it must refuse. It printed:
$out"
    fi
    while (($# >= 2)); do
        local lines=$1 key=$2
        shift 2
        if ! grep -E "$name\.toml:($lines):[0-9]+:" <<<"$out" | grep -qF -- "$key"; then
            fail "$name.toml: expected a line starting with $name.toml:($lines): that names '$key'; pinhole check (exit $rc) printed:
$out"
        fi
    done
    pass "$name.toml refused (exit $rc): $(grep -E "$name\.toml:[0-9]+:" <<<"$out" | head -n 3 | sed "s|$CFG/||" | paste -sd'|' | sed 's/|/ || /g')"
}

say "a good config passes and says what it would do"
good_config >"$CFG/good.toml"
out=$("$PINHOLE" check -c "$CFG/good.toml" 2>&1) || fail "pinhole check refused a good config:
$out"
assert_contains "$out" "0.0.0.0:8080" "check describes the forward's public listener"
assert_contains "$out" "10.77.0.2:80" "check describes the forward's overlay target"
assert_contains "$out" "home" "check names the peer"

say "a typo in a key name"
good_config | sed 's/^listen_port = /listen_prot = /' | check_refused unknown-key 4 listen_prot

say "a section with the wrong name ([[peers]] instead of [[peer]]): it must not be silently ignored"
good_config | sed 's/^\[\[peer\]\]$/[[peers]]/' | check_refused misplaced-section 7 peers

say "the same key twice in one table"
good_config | sed '4a listen_port = 51821' | check_refused duplicate-key 5 listen_port

say "two peers claim overlapping allowed_ips"
{ good_config; second_peer laptop 10.77.0.0/24; } | check_refused overlapping-allowed-ips '10|20' allowed_ips

say "two peers with the same name"
{ good_config; second_peer home 10.77.0.3/32; } | check_refused duplicate-peer-names 18 name

say "a forward to an overlay address no peer's allowed_ips cover"
good_config | sed 's/^to = "10.77.0.2:80"/to = "10.77.0.9:80"/' | check_refused forward-not-covered 15 to

say "an expose listening on an address that is not this peer's own"
{ good_config; an_expose 10.77.0.9:22; } | check_refused expose-not-own 19 listen

say "a public key that is not a key"
good_config | sed 's|^public_key = .*|public_key = "not-a-key!"|' | check_refused bad-public-key 9 public_key

say "a private key that is too short"
good_config | sed 's|^private_key = .*|private_key = "AAAA"|' | check_refused bad-private-key 3 private_key

say "an all-zero public key (a low-order point: no shared secret)"
good_config | sed "s|^public_key = .*|public_key = \"$(head -c 32 /dev/zero | base64)\"|" |
    check_refused zero-public-key 9 public_key

say "a missing private key file"
good_config | sed 's|^private_key = .*|private_key_file = "missing.key"|' |
    check_refused missing-key-file 3 private_key_file

say "several mistakes at once: every one is listed"
good_config | sed -e 's|^public_key = .*|public_key = "not-a-key!"|' -e 's/^to = "10.77.0.2:80"/to = "10.77.0.9:80"/' |
    check_refused two-mistakes 9 public_key 15 to

say "a private key file readable by others: accepted, with a warning"
(umask 022 && echo "$RELAY_KEY" >"$CFG/relay.key")
chmod 644 "$CFG/relay.key"
good_config | sed 's|^private_key = .*|private_key_file = "relay.key"|' >"$CFG/readable-key.toml"
out=$("$PINHOLE" check -c "$CFG/readable-key.toml" 2>&1) || fail "pinhole check refused a config whose key file is readable by others (a warning was expected):
$out"
grep -qi 'warn' <<<"$out" || fail "no warning for a private key file readable by others; pinhole check printed:
$out"
pass "warned: $(grep -i 'warn' <<<"$out" | head -n 1 | sed "s|$CFG/||")"
chmod 600 "$CFG/relay.key"
out=$("$PINHOLE" check -c "$CFG/readable-key.toml" 2>&1) || fail "pinhole check refused a good config with private_key_file:
$out"
! grep -qi 'warn' <<<"$out" || fail "a warning for a key file of mode 600: $out"
pass "no warning once the key file is mode 600"

say "the example configs shipped in configs/ pass as written"
for example in relay home; do
    out=$("$PINHOLE" check -c "$REPO_DIR/configs/$example.toml" 2>&1) ||
        fail "configs/$example.toml does not pass pinhole check:
$out"
    pass "configs/$example.toml passes"
done

pass "every mistake was refused with its file, line and key"
