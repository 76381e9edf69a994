# apt.sh — sourced by scripts/install-*.sh: the one way they apt-get install Debian packages.
#
#   source "$(dirname "$0")/apt.sh"
#   apt_install install-foo foo            # without recommended packages
#   apt_install install-foo --recommends foo bar
#
# As root, or through sudo; waits (bounded, 5 min) for another apt run that holds the dpkg lock
# (e.g. a parallel install script); services the packages ship are not started (RUNLEVEL=1: a
# container has no init to run them, and the tests start their own).
apt_install() {
  local name=$1 recommends=--no-install-recommends sudo=""
  shift
  if [[ ${1:-} == --recommends ]]; then recommends=""; shift; fi
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || { echo "$name: ERROR: need root to apt-get install $*" >&2; return 1; }
    sudo=sudo
  fi
  echo "$name: apt-get install $*"
  for _ in $(seq 60); do
    $sudo fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break
    sleep 5
  done
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq $recommends "$@" >/dev/null
}
