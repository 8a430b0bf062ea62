#!/usr/bin/env bash
# Writes a self-signed certificate for trying the nginx front: nginx/self-signed.sh DIR [NAME]
# makes DIR/fullchain.pem and DIR/privkey.pem for NAME (default localhost), valid 30 days.
# Browsers will warn; for anything real use a CA-issued certificate (certbot, your cloud's CA).
set -euo pipefail
dir=${1:?usage: self-signed.sh DIR [NAME]}
name=${2:-localhost}
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$name" \
  -addext "subjectAltName=DNS:$name,IP:127.0.0.1,IP:::1" \
  -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem" 2>/dev/null
chmod 600 "$dir/privkey.pem"
echo "wrote $dir/fullchain.pem and $dir/privkey.pem for $name"
