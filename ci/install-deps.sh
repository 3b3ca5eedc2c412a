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
$SUDO apt-get install -y -q --no-install-recommends \
  qemu-system-x86 qemu-utils busybox-static e2fsprogs kmod cpio xz-utils \
  gcc make libc6-dev pahole bc flex bison libelf-dev libssl-dev patch ca-certificates \
  chromium
