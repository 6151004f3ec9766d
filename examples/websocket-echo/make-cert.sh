#!/bin/sh
# Makes a self-signed certificate for the example backend: ssl-cert/key.pem and
# ssl-cert/certificate.pem (valid for 127.0.0.1, ::1 and localhost).
# Usage: sh make-cert.sh [DIRECTORY]   (default: ./ssl-cert)
set -eu
dir="${1:-ssl-cert}"
mkdir -p "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 \
  -keyout "$dir/key.pem" -out "$dir/certificate.pem" \
  -subj "/CN=localhost" \
  -addext "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" 2>/dev/null
echo "wrote $dir/key.pem and $dir/certificate.pem"
