#!/usr/bin/env bash
# Installs what the ARM checks need when absent (Debian): cross gcc and C/C++ runtimes for
# aarch64 and armv7, and qemu-user; adds the Rust targets given as arguments.
set -euo pipefail
debs=()
command -v aarch64-linux-gnu-gcc >/dev/null || debs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
[ -e /usr/aarch64-linux-gnu/lib/libstdc++.so.6 ] || debs+=(libstdc++6-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || debs+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v qemu-aarch64 >/dev/null || debs+=(qemu-user)
if [ ${#debs[@]} -gt 0 ]; then
  echo "installing ${debs[*]} (Debian)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${debs[@]}" >/dev/null
fi
[ $# -eq 0 ] || rustup target add "$@" >&2
