#!/bin/sh
# The official redis image's entrypoint, reduced: options alone mean `redis-server OPTIONS`;
# redis-server gets protected mode off (the official image compiles that default in) and runs as
# the redis user, owning /data.
set -eu

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = redis-server ]; then
    shift
    # A config file must stay the first argument; an explicit --protected-mode later still wins.
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
        conf="$1"
        shift
        set -- redis-server "$conf" --protected-mode no "$@"
    else
        set -- redis-server --protected-mode no "$@"
    fi
    if [ "$(id -u)" = 0 ]; then
        find . \! -user redis -exec chown redis '{}' +
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi

exec "$@"
