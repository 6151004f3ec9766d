#!/bin/sh
# Makes a self-signed certificate and its key: DIRECTORY/key.pem and
# DIRECTORY/certificate.pem, valid for a year for every name the example uses —
# 127.0.0.1, ::1, localhost, and the product's hosts chat-staging.localhost and
# chat.localhost — so the same script serves the backend (ssl-cert) and the gateway's
# TLS listeners (gw-cert).
# Usage: sh make-cert.sh [DIRECTORY]   (default: ./ssl-cert)
set -eu
dir="${1:-ssl-cert}"
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 \
  -keyout "$dir/key.pem" -out "$dir/certificate.pem" \
  -subj "/CN=localhost" \
  -addext "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:chat-staging.localhost,DNS:chat.localhost" 2>/dev/null
echo "wrote $dir/key.pem and $dir/certificate.pem"
