#!/usr/bin/env bash
# Installs what the tests run from Debian's registry: for tests/servers.py the RTSP server library, nginx with
# its RTMP module, srt-tools (srt-live-transmit, and libsrt for spgim's srt:// support) and ffmpeg (the
# publisher); GStreamer with its Python plugin loader for the spgimmatte element, and the -ugly (x264enc) and
# -bad (rtmp2sink) plugins that docs/gstreamer.md's pipelines use; Chromium
# and its WebDriver for the preview page's browser tests.
# No service is started: the tests run their own servers on 127.0.0.1 (policy-rc.d refuses starts meanwhile).
set -euo pipefail
PACKAGES=(librtsp-server-perl nginx libnginx-mod-rtmp srt-tools ffmpeg
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav
  gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad
  python3-gst-1.0 gstreamer1.0-python3-plugin-loader
  chromium chromium-driver)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_servers: need root and apt-get to install ${missing[*]}" >&2
  exit 1
fi

guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  guard=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' > "$guard"
  chmod +x "$guard"
fi
trap '[ -n "$guard" ] && rm -f "$guard"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
echo "install_servers: installed ${missing[*]}"
