# Sourced by the benchmark scripts.
# install_missing PKG...: installs the Debian packages given (as root, or through sudo); nothing
# when none is given.
install_missing() {
    [ $# -gt 0 ] || return 0
    local as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "$@"
}
