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

# cri_proto ROOT: the directory of the CRI API's proto, as the k8s-cri crate the tests use ships
# it (for the Python gRPC stubs of the CRI benchmarks).
cri_proto() {
    (cd "$1" && cargo metadata --format-version 1 --quiet |
        python3 -c 'import json, os, sys
p = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "k8s-cri"][0]
print(os.path.join(os.path.dirname(p["manifest_path"]), "proto"))')
}

# cri_python: grpcio and its protoc, for the CRI benchmarks' client.
cri_python() {
    python3 -c 'import grpc, grpc_tools' 2>/dev/null ||
        python3 -m pip install --quiet grpcio==1.85.4 grpcio-tools==1.85.4
}
