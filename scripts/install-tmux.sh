#!/usr/bin/env bash
# install-tmux.sh — tmux, for the test that runs `hazardctl status` as an operator sees it (capture-pane).
# Idempotent: does nothing when tmux is already there. Needs root (or sudo) to install.
set -euo pipefail
if command -v tmux >/dev/null; then
  echo "install-tmux: tmux already installed"
  exit 0
fi
source "$(dirname "$0")/apt.sh"
apt_install install-tmux --recommends tmux
command -v tmux >/dev/null || { echo "install-tmux: ERROR: tmux still missing after apt-get" >&2; exit 1; }
echo "install-tmux: ok"
