#!/bin/sh
# Start a reference IRC server for scripts/bench.py --attach, on 127.0.0.1,
# on a free port, as user irc, with the configuration beside this script.
#
#   scripts/reference/run.sh ngircd|inspircd DIR
#
# DIR (made anew; must not exist or be empty) gets the written configuration,
# the server's log and its console output.  Prints "PORT PID" once the
# server listens; stop it with `kill PID`.  Must be started as root: the
# server runs as irc, as forkchat-server started as root runs as nobody.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
case "${1:-}" in
    ngircd|inspircd) kind=$1 ;;
    *) echo "usage: $0 ngircd|inspircd DIR" >&2; exit 2 ;;
esac
dir=${2:?usage: $0 ngircd|inspircd DIR}
if [ "$(id -u)" != 0 ]; then
    echo "$0: must be run as root (it starts $kind as user irc)" >&2; exit 2
fi
if [ ! -x "/usr/sbin/$kind" ]; then
    echo "$0: /usr/sbin/$kind is not installed (Debian: apt-get install $kind)" >&2; exit 2
fi
# The path is written into the configuration (by sed, into quoted values):
# letters, digits and . _ - + / only, or it would be written wrong
case $dir in /*) whole=$dir ;; *) whole=$(pwd)/$dir ;; esac
case $whole in
    *[!A-Za-z0-9._/+-]*)
        echo "$0: $whole: only letters, digits and . _ - + / can be written into $kind's configuration" >&2
        exit 2 ;;
esac
if [ -e "$dir" ] && { [ ! -d "$dir" ] || [ -n "$(ls -A "$dir")" ]; }; then
    echo "$0: $dir exists and is not an empty directory" >&2; exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# A port nothing listens on now (neither server can be told to bind port 0).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

sed -e "s/@PORT@/$port/" -e "s#@DIR@#$dir#g" "$here/$kind.conf" > "$dir/$kind.conf"
echo bench > "$dir/motd"
mkdir "$dir/conf.d"
chown -R irc:irc "$dir"
if ! setpriv --reuid=irc --regid=irc --init-groups test -r "$dir/$kind.conf"; then
    echo "$0: user irc cannot reach $dir (a parent directory is closed to it)" >&2; exit 2
fi

cd "$dir"
case $kind in
    # ngIRCd drops to ServerUID itself: started as root, it serves as irc.
    ngircd) setsid /usr/sbin/ngircd -n -f "$dir/ngircd.conf" > "$dir/console" 2>&1 < /dev/null & ;;
    # InspIRCd will not start as root: setpriv execs it as irc (same pid).
    inspircd) setsid setpriv --reuid=irc --regid=irc --init-groups \
        /usr/sbin/inspircd --config "$dir/inspircd.conf" --nofork --nopid \
        > "$dir/console" 2>&1 < /dev/null & ;;
esac
pid=$!
# In a session of its own, the server does not get the terminal's Ctrl+C:
# stopped here until its pid is printed (compare.sh stops it after that)
trap 'kill "$pid" 2> /dev/null; exit 130' INT
trap 'kill "$pid" 2> /dev/null; exit 143' TERM
trap 'kill "$pid" 2> /dev/null; exit 129' HUP

# Listening there, and the listener is this server's: another process may
# have taken the port between the choice above and the server's bind.
hexport=$(printf '%04X' "$port")
listening() {
    inode=$(awk -v at="0100007F:$hexport" '$2 == at && $4 == "0A" { print $10; exit }' \
        /proc/net/tcp)
    [ -n "$inode" ] && ls -l "/proc/$pid/fd" 2> /dev/null | grep -q "socket:\[$inode\]"
}
tries=0
until listening; do
    tries=$((tries + 1))
    if [ $tries -gt 100 ] || ! kill -0 "$pid" 2> /dev/null; then
        echo "$0: $kind did not start listening on 127.0.0.1:$port:" >&2
        tail -n 20 "$dir/console" >&2
        kill "$pid" 2> /dev/null || true
        exit 1
    fi
    sleep 0.1
done
trap - INT TERM HUP
echo "$port $pid"
