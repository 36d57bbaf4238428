#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs the real SMTP
# peers the tests drive (swaks, Postfix's smtp-source/smtp-sink, msmtp,
# curl, Python), then vets, tests with -race and cross-builds.
set -euo pipefail
cd "$(dirname "$0")/.."

need_install=0
for t in swaks /usr/sbin/smtp-source /usr/sbin/smtp-sink msmtp curl /usr/bin/python3 openssl ip nsenter; do
  command -v "$t" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" = 1 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  # Installing postfix must not start a system MTA or ask questions.
  echo 'exit 101' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    swaks postfix msmtp curl python3 openssl ca-certificates iproute2 util-linux >/dev/null
fi

# Exim is the one client here that sends BDAT (RFC 3030 CHUNKING). Its
# package would replace Postfix (each is the system MTA), so its binary is
# unpacked into a directory of its own instead of installed; it needs its
# libraries and the system user it was built to run as.
EXIM_DIR=${SMTPKIT_EXIM_DIR:-/opt/smtpkit-test/exim}
if [ ! -x "$EXIM_DIR/usr/sbin/exim4" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    libgnutls-dane0 libgnutls30 libidn12 libidn2-0 libnsl2 libpcre2-8-0 libdb5.3 libcrypt1 >/dev/null
  exim_tmp=$(mktemp -d)
  chmod 755 "$exim_tmp"
  (cd "$exim_tmp" && apt-get download -qq exim4-daemon-light 2>/dev/null)
  $SUDO mkdir -p "$EXIM_DIR"
  $SUDO dpkg -x "$exim_tmp"/exim4-daemon-light_*.deb "$EXIM_DIR"
  rm -rf "$exim_tmp"
fi
id Debian-exim >/dev/null 2>&1 || ${SUDO:-} useradd --system --no-create-home --shell /usr/sbin/nologin Debian-exim
export SMTPKIT_EXIM="$EXIM_DIR/usr/sbin/exim4"

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== go mod tidy check"
cp go.mod /tmp/go.mod.bak; cp go.sum /tmp/go.sum.bak
go mod tidy
if ! diff -q go.mod /tmp/go.mod.bak >/dev/null || ! diff -q go.sum /tmp/go.sum.bak >/dev/null; then
  echo "go.mod/go.sum not tidy"; cp /tmp/go.mod.bak go.mod; cp /tmp/go.sum.bak go.sum; exit 1
fi
echo "== cross builds (windows, darwin)"
GOOS=windows GOARCH=amd64 go build ./...
GOOS=darwin GOARCH=arm64 go build ./...
echo "== go test -race (real peers required)"
SMTPKIT_REQUIRE_PEERS=1 go test -race -count=1 -timeout 30m ./... 2>&1 | tee /tmp/smtpkit-test.log
