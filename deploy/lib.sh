# Shared by the deploy scripts: messages, root checks, apt, waiting for a port.
say() { printf '[gridflow] %s\n' "$*"; }
die() { printf '[gridflow] ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_port() {  # host port seconds what
  local i
  for ((i = 0; i < $3 * 2; i++)); do port_open "$1" "$2" && return 0; sleep 0.5; done
  die "$4 did not come up on $1:$2 within $3 s"
}
apt_install() {
  is_root || die "need root to install $* (apt-get install -y $*)"
  say "installing $* with apt …"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "$@" >/dev/null
}
