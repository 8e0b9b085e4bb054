# Shared helpers for .ci/services/*.sh (sourced, not run).
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ ! -f /tmp/.amlrun-apt-updated ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq && touch /tmp/.amlrun-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
