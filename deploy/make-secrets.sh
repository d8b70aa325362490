#!/usr/bin/env bash
# Writes everything secret that deploy/docker-compose.yml (and, via kubectl, deploy/k8s) needs into
# deploy/secrets/ (git-ignored): tokens, a throw-away TLS CA with certificates, S3 and Grafana passwords.
# Existing files are kept, so running it again only fills in what is missing (e.g. after adding a site).
#
#   deploy/make-secrets.sh                              # sites site-a and site-b, admin "admin"
#   deploy/make-secrets.sh --sites "site-a site-b site-c" --admins "alice"
#   deploy/make-secrets.sh --dir /secure/place --coordinator-san DNS:transplant.example.org
#
# Tokens come from `python -m coordinator token new` (it prints the token once and keeps only its
# sha256 in auth.json; they expire after 365 days: rotate them as deploy/README.md says). PYTHON picks the interpreter with the project installed (default: .venv/bin/python
# of this checkout, else python3). The CA is for trying things out: in production, issue the certificates
# from your own CA and put them under the same names.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
dir="$here/secrets"
sites="site-a site-b"
admins="admin"
coordinator_sans="DNS:coordinator,DNS:coordinator.transplant.svc,DNS:coordinator.transplant.svc.cluster.local,DNS:localhost,IP:127.0.0.1"
days=397
force=0

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir=$2; shift 2 ;;
        --sites) sites=$2; shift 2 ;;
        --admins) admins=$2; shift 2 ;;
        --coordinator-san) coordinator_sans="$coordinator_sans,$2"; shift 2 ;;
        --days) days=$2; shift 2 ;;
        --force) force=1; shift ;;   # start over: delete everything in --dir first
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 2; }

umask 077
mkdir -p "$dir"
chmod 700 "$dir"   # the directory guards the files; see below for their own mode
if [ "$force" = 1 ]; then
    find "$dir" -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
fi
cd "$dir"

random() { openssl rand -hex "${1:-32}"; }
write() {  # write NAME from stdin unless it exists
    if [ -e "$1" ]; then cat >/dev/null; echo "kept     $1"; else cat >"$1"; echo "wrote    $1"; fi
}

# Object store: MinIO's root account (used only to create the bucket and the user) and the
# coordinator's own S3 user (TRANSPLANT_S3_ACCESS_KEY / TRANSPLANT_S3_SECRET_KEY).
printf 'transplant-root' | write minio_root_user
random 24 | tr -d '\n' | write minio_root_password
printf 'transplant' | write s3_access_key
random 24 | tr -d '\n' | write s3_secret_key
random 16 | tr -d '\n' | write grafana_admin_password

# The coordinator's secret. It never leaves the coordinator: when it calls a site's Evaluate it presents a
# credential derived for that site alone (coordinator/site_identity.py: base64url(HMAC-SHA256(secret,
# "transplant/site-evaluate/v1/" + site id)), no padding), and each site holds only that credential's sha256,
# coordinator_token.SITE.sha256 (`python -m coordinator token site-credential` prints the same).
random 32 | tr -d '\n' | write coordinator_token
site_credential_sha256() {  # SITE -> coordinator_token.SITE.sha256
    local out="coordinator_token.$1.sha256" credential
    if [ -e "$out" ] && [ ! coordinator_token -nt "$out" ]; then echo "kept     $out"; return; fi
    credential=$(printf '%s' "transplant/site-evaluate/v1/$1" \
        | openssl dgst -sha256 -mac HMAC -macopt "key:$(cat coordinator_token)" -binary | openssl base64 -A \
        | tr '+/' '-_' | tr -d '=')
    printf '%s' "$credential" | openssl dgst -sha256 -r | cut -d" " -f1 | tr -d '\n' > "$out"
    echo "wrote    $out"
}
for s in $sites; do site_credential_sha256 "$s"; done

# Site and admin tokens: only their hashes go into auth.json.
[ -e auth.json ] || printf '{"admins": {}, "sites": {}}\n' > auth.json
new_token() {  # ROLE NAME [--host H ...] -> NAME.token
    local role=$1 name=$2 out
    shift 2
    if [ -e "$name.token" ]; then echo "kept     $name.token"; return; fi
    out=$(cd "$root" && "$PYTHON" -m coordinator token new --auth-file "$dir/auth.json" --role "$role" --name "$name" "$@")
    # The token is the last word printed.
    printf '%s' "$(printf '%s\n' "$out" | awk 'NF { last = $NF } END { print last }')" > "$name.token"
    [ -s "$name.token" ] || { echo "no token printed by 'coordinator token new' for $name" >&2; exit 1; }
    echo "wrote    $name.token (its sha256 is in auth.json)"
}
# A site may announce only the hosts registered with its token: its compose and in-cluster Service names.
for s in $sites; do
    new_token site "$s" --host "$s" --host "$s.transplant.svc" --host "$s.transplant.svc.cluster.local"
done
for a in $admins; do new_token admin "$a"; done

# TLS: a throw-away CA, a server certificate for the coordinator, one certificate per site (server for
# Evaluate, client towards the coordinator) and one client certificate per admin.
if [ ! -e ca.crt ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days "$days" \
        -keyout ca.key -out ca.crt -subj "/CN=network-transplanting throw-away CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    echo "wrote    ca.crt, ca.key (keep ca.key off every server)"
fi
cert() {  # NAME SANS USAGE
    local name=$1 sans=$2 usage=$3
    if [ -e "$name.crt" ]; then echo "kept     $name.crt"; return; fi
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 \
        -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
        "$usage" "$sans" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days "$days" \
        -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
    echo "wrote    $name.crt, $name.key"
}
cert coordinator "$coordinator_sans" serverAuth,clientAuth
for s in $sites; do
    cert "$s" "DNS:$s,DNS:$s.transplant.svc,DNS:$s.transplant.svc.cluster.local,DNS:localhost,IP:127.0.0.1" \
        serverAuth,clientAuth
done
for a in $admins; do cert "$a" "DNS:$a" clientAuth; done

# Compose bind-mounts each secret file as it is, owner and mode included, and the containers run as
# uid 1000: the files must be readable by others, so the 0700 directory is what keeps them private.
find . -maxdepth 1 -type f ! -name README.md ! -name ca.key ! -name ca.srl -exec chmod 644 {} +
echo "secrets in $dir"
