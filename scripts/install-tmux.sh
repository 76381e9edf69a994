#!/usr/bin/env bash
# install-tmux.sh — tmux, for the test that runs `hazardctl status` as an operator sees it (capture-pane).
# Idempotent: does nothing when tmux is already there. Needs root (or sudo) to install.
set -euo pipefail
if command -v tmux >/dev/null; then
  echo "install-tmux: tmux already installed"
  exit 0
fi
SUDO=""
[[ "$(id -u)" == 0 ]] || SUDO=sudo
echo "install-tmux: apt-get install tmux"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq tmux >/dev/null
command -v tmux >/dev/null || { echo "install-tmux: ERROR: tmux still missing after apt-get" >&2; exit 1; }
echo "install-tmux: ok"
