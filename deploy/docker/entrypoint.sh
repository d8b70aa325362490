#!/bin/sh
# One image, several roles. The first argument picks the role; the rest goes to that program.
#
#   coordinator ARGS...  python -m coordinator ARGS...        (e.g. `coordinator serve --store ...`)
#   site ARGS...         python -m site_agent ARGS...         (e.g. `site run --site-id ...`)
#   admin ARGS...        python -m coordinator.admin ARGS...  (e.g. `admin --coordinator HOST:PORT jobs`)
#   predict ARGS...      python -m coordinator.serving ARGS... (e.g. `predict serve --store URL`)
#   ray-head ARGS...     ray start --head --port=6379 --dashboard-host=0.0.0.0 --block ARGS...
#   ray-worker ARGS...   ray start --block ARGS...            (e.g. `ray-worker --address=ray-head:6379 --num-gpus=1`)
#   anything else        run as a command (`bash`, `python -c ...`, `ray status`)
#
# Secrets from files (docker/compose secrets): for each NAME below, when NAME_FILE is set and NAME is
# not, NAME is exported with the file's content (a trailing newline dropped). The programs themselves
# only read the plain variables.
#
# The coordinator is a Ray *driver*, and a Ray driver attaches to a Ray node on its own host. When
# `coordinator serve` is given `--ray-address HOST:PORT`, this script therefore first joins that cluster
# with a node that offers no CPUs and no GPUs (so no job ever runs next to the coordinator), then starts
# the coordinator, whose `ray.init(address=HOST:PORT)` finds that node. `auto`, `ray://...` or no
# --ray-address start nothing.
set -eu

for name in TRANSPLANT_S3_ACCESS_KEY TRANSPLANT_S3_SECRET_KEY TRANSPLANT_SITE_TOKEN TRANSPLANT_ADMIN_TOKEN \
            TRANSPLANT_COORDINATOR_TOKEN_SHA256; do
    eval "file=\${${name}_FILE:-}; value=\${${name}:-}"
    if [ -n "$file" ] && [ -z "$value" ]; then
        if [ ! -r "$file" ]; then
            echo "entrypoint: ${name}_FILE=$file is not a readable file" >&2
            exit 2
        fi
        value=$(cat "$file")
        export "$name=$value"
    fi
    unset "${name}_FILE" 2>/dev/null || true
done

ray_address() {  # the value of --ray-address in "$@", empty when absent
    while [ $# -gt 0 ]; do
        case "$1" in
            --ray-address=*) echo "${1#--ray-address=}"; return 0 ;;
            --ray-address) echo "${2:-}"; return 0 ;;
        esac
        shift
    done
}

role="${1:-help}"
case "$role" in
    coordinator)
        shift
        address=$(ray_address "$@")
        case "$address" in
            ""|auto|local|ray://*) ;;
            *)
                echo "entrypoint: joining the Ray cluster at $address as a node without CPUs or GPUs" >&2
                ray start --address="$address" --num-cpus=0 --num-gpus=0 --disable-usage-stats
                ;;
        esac
        exec python -m coordinator "$@"
        ;;
    site)
        shift
        exec python -m site_agent "$@"
        ;;
    admin)
        shift
        exec python -m coordinator.admin "$@"
        ;;
    predict)
        shift
        exec python -m coordinator.serving "$@"
        ;;
    ray-head)
        shift
        exec ray start --head --port=6379 --dashboard-host=0.0.0.0 --block "$@"
        ;;
    ray-worker)
        shift
        exec ray start --block "$@"
        ;;
    help|-h|--help)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
        ;;
    *)
        exec "$@"
        ;;
esac
