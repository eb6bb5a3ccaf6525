# The machine's own Debian mirror, for the suites kql's tests add (backports,
# bullseye) and the fresh-machine root; never a host written into the repo.
# Sourced by tests/setup.sh and tests/fresh/run.sh.
#
#   debian_mirror            the Debian URI (deb822 debian.sources, else sources.list)
#   debian_mirror security   the Debian-security URI
debian_mirror() {
    local want=${1:-debian} uri op='!~' suite='^bookworm(-updates)?$'
    if [ "$want" = security ]; then op='~'; suite='^bookworm-security$'; fi
    uri=$(awk "/^URIs:/ && \$2 $op /security/ {print \$2; exit}" \
              /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk -v s="$suite" '$1 == "deb" && $3 ~ s {print $2; exit}' \
                               /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$uri" ] || { echo "cannot find the machine's Debian $want mirror in /etc/apt" >&2; return 1; }
    echo "$uri"
}
