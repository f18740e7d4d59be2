#!/usr/bin/env bash
# Installs the C library built by cargo: the header, the shared library with
# its SONAME symlinks, the static library, a pkg-config file and a CMake
# package. Never runs cargo: build first.
#
#   cargo build --release --lib
#   scripts/install.sh --prefix /usr/local
#
# Installs (LIBDIR = PREFIX/lib unless --libdir):
#   PREFIX/include/kvs_signaling.h
#   LIBDIR/libkvs_signaling.so.X.Y.Z, libkvs_signaling.so.X -> .so.X.Y.Z (the
#     SONAME), libkvs_signaling.so -> .so.X (for -lkvs_signaling)
#   LIBDIR/libkvs_signaling.a                  one object, kvs_ the only globals, no
#                                              bitcode (scripts/static-lib.sh)
#   LIBDIR/pkgconfig/kvs_signaling.pc          pkg-config --cflags --libs kvs_signaling
#                                              (--static: Libs.private)
#   LIBDIR/cmake/kvs_signaling/kvs_signalingConfig.cmake (+ ConfigVersion)
#                                              find_package(kvs_signaling): the
#                                              imported targets kvs_signaling::shared
#                                              and kvs_signaling::static
#
# Options:
#   --prefix DIR       installation prefix (default /usr/local)
#   --libdir DIR       library directory (default PREFIX/lib)
#   --includedir DIR   header directory (default PREFIX/include)
#   --target TRIPLE    install the cross build of `cargo build --release --lib
#                      --target TRIPLE` (default: the host build)
#   --static-libs STR  the native libraries the static library needs (default:
#                      STATIC_LIBS of examples_c/Makefile, the line `cargo rustc
#                      --release --lib --crate-type staticlib -- --print
#                      native-static-libs` prints for the default features)
# Environment: DESTDIR (staged installs: files go to DESTDIR/PREFIX/..., and
# the installed files name PREFIX), CARGO_TARGET_DIR (default target), MAKE,
# LD, OBJCOPY, AR (scripts/static-lib.sh; the cross tools for --target).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MAKE="${MAKE:-make}"

PREFIX=/usr/local
LIBDIR=""
INCLUDEDIR=""
TRIPLE=""
STATIC_LIBS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) PREFIX="${1#*=}"; shift ;;
        --libdir) LIBDIR="${2:?--libdir needs a directory}"; shift 2 ;;
        --libdir=*) LIBDIR="${1#*=}"; shift ;;
        --includedir) INCLUDEDIR="${2:?--includedir needs a directory}"; shift 2 ;;
        --includedir=*) INCLUDEDIR="${1#*=}"; shift ;;
        --target) TRIPLE="${2:?--target needs a target triple}"; shift 2 ;;
        --target=*) TRIPLE="${1#*=}"; shift ;;
        --static-libs) STATIC_LIBS="${2?--static-libs needs a value}"; shift 2 ;;
        --static-libs=*) STATIC_LIBS="${1#*=}"; shift ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
# The installed files name these paths: make them absolute.
abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
PREFIX="$(abs "$PREFIX")"
LIBDIR="$(abs "${LIBDIR:-$PREFIX/lib}")"
INCLUDEDIR="$(abs "${INCLUDEDIR:-$PREFIX/include}")"
DESTDIR="${DESTDIR:-}"

# Cargo resolves a relative CARGO_TARGET_DIR against its working directory;
# the scripts run cargo from the repository root.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BUILT="$TARGET_DIR/${TRIPLE:+$TRIPLE/}release"
SO="$BUILT/libkvs_signaling.so"
A="$BUILT/libkvs_signaling.a"
HEADER="$ROOT/include/kvs_signaling.h"
for f in "$SO" "$A" "$HEADER"; do
    [ -f "$f" ] || { echo "install.sh: $f not found; build first: cargo build --release --lib${TRIPLE:+ --target $TRIPLE}" >&2; exit 1; }
done

# The version: Cargo.toml's [package] version, which the header's
# KVS_VERSION_* macros repeat (tests/header.rs checks they agree).
VERSION="$(awk '/^\[/ { pkg = ($0 == "[package]") } pkg && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)"
[[ "$VERSION" =~ ^([0-9]+)\.[0-9]+\.[0-9]+$ ]] || { echo "install.sh: no X.Y.Z version in Cargo.toml (got '$VERSION')" >&2; exit 1; }
MAJOR="${BASH_REMATCH[1]}"
for part in MAJOR MINOR PATCH; do
    grep -q "^#define KVS_VERSION_$part " "$HEADER" || { echo "install.sh: KVS_VERSION_$part missing from $HEADER" >&2; exit 1; }
done
header_version="$(awk '$1 == "#define" && $2 ~ /^KVS_VERSION_(MAJOR|MINOR|PATCH)$/ { v[$2] = $3 }
    END { print v["KVS_VERSION_MAJOR"] "." v["KVS_VERSION_MINOR"] "." v["KVS_VERSION_PATCH"] }' "$HEADER")"
if [ "$header_version" != "$VERSION" ]; then
    echo "install.sh: the header says $header_version, Cargo.toml $VERSION (rebuild the header)" >&2
    exit 1
fi

# The SONAME build.rs gave the library (readelf reads any ELF, cross builds too).
SONAME="$(readelf -d "$SO" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')"
if [ "$SONAME" != "libkvs_signaling.so.$MAJOR" ]; then
    echo "install.sh: $SO has SONAME '$SONAME', want libkvs_signaling.so.$MAJOR (rebuild it)" >&2
    exit 1
fi
REAL="libkvs_signaling.so.$VERSION"

if [ -z "$STATIC_LIBS" ]; then
    STATIC_LIBS="$("$MAKE" -s --no-print-directory -C examples_c print-static-libs)"
fi

D="$DESTDIR"
install -d "$D$INCLUDEDIR" "$D$LIBDIR/pkgconfig" "$D$LIBDIR/cmake/kvs_signaling"
install -m 644 "$HEADER" "$D$INCLUDEDIR/kvs_signaling.h"
install -m 755 "$SO" "$D$LIBDIR/$REAL"
ln -sfn "$REAL" "$D$LIBDIR/$SONAME"
ln -sfn "$SONAME" "$D$LIBDIR/libkvs_signaling.so"
STATIC_TMP="$(mktemp -d "${TMPDIR:-/tmp}/kvs-install.XXXXXX")"
trap 'rm -rf "$STATIC_TMP"' EXIT
scripts/static-lib.sh "$A" "$STATIC_TMP/libkvs_signaling.a"
install -m 644 "$STATIC_TMP/libkvs_signaling.a" "$D$LIBDIR/libkvs_signaling.a"

# pkg-config: absolute paths under PREFIX (PKG_CONFIG_SYSROOT_DIR handles sysroots).
pc_path() { # pc_path DIR: DIR relative to ${prefix} when it is under it
    case "$1" in
        "$PREFIX") printf '${prefix}\n' ;;
        "$PREFIX"/*) printf '${prefix}/%s\n' "${1#"$PREFIX"/}" ;;
        *) printf '%s\n' "$1" ;;
    esac
}
DESCRIPTION="$(awk '/^\[/ { pkg = ($0 == "[package]") } pkg && $1 == "description" { sub(/^[^"]*"/, ""); sub(/"[^"]*$/, ""); print; exit }' Cargo.toml)"
cat >"$D$LIBDIR/pkgconfig/kvs_signaling.pc" <<EOF
prefix=$PREFIX
libdir=$(pc_path "$LIBDIR")
includedir=$(pc_path "$INCLUDEDIR")

Name: kvs_signaling
Description: $DESCRIPTION
Version: $VERSION
Cflags: -I\${includedir}
Libs: -L\${libdir} -lkvs_signaling
Libs.private: $STATIC_LIBS
EOF

# CMake: paths relative to the config file, so that a sysroot or a moved
# prefix still works.
CMAKE_DIR="$LIBDIR/cmake/kvs_signaling"
REL_INCLUDE="$(realpath -m --relative-to="$CMAKE_DIR" "$INCLUDEDIR")"
REL_LIB="$(realpath -m --relative-to="$CMAKE_DIR" "$LIBDIR")"
cmake_libs=""
for l in $STATIC_LIBS; do cmake_libs+="${cmake_libs:+;}$l"; done
cat >"$D$CMAKE_DIR/kvs_signalingConfig.cmake" <<EOF
# CMake package of kvs_signaling $VERSION (written by scripts/install.sh).
#
#   find_package(kvs_signaling 0.1 REQUIRED)
#   target_link_libraries(app PRIVATE kvs_signaling::shared)   # or ::static

get_filename_component(_kvs_signaling_include "\${CMAKE_CURRENT_LIST_DIR}/$REL_INCLUDE" ABSOLUTE)
get_filename_component(_kvs_signaling_lib "\${CMAKE_CURRENT_LIST_DIR}/$REL_LIB" ABSOLUTE)

if(NOT TARGET kvs_signaling::shared)
  add_library(kvs_signaling::shared SHARED IMPORTED)
  set_target_properties(kvs_signaling::shared PROPERTIES
    IMPORTED_LOCATION "\${_kvs_signaling_lib}/$REAL"
    IMPORTED_SONAME "$SONAME"
    INTERFACE_INCLUDE_DIRECTORIES "\${_kvs_signaling_include}")
endif()

if(NOT TARGET kvs_signaling::static)
  add_library(kvs_signaling::static STATIC IMPORTED)
  set_target_properties(kvs_signaling::static PROPERTIES
    IMPORTED_LOCATION "\${_kvs_signaling_lib}/libkvs_signaling.a"
    IMPORTED_LINK_INTERFACE_LANGUAGES "C"
    INTERFACE_INCLUDE_DIRECTORIES "\${_kvs_signaling_include}"
    # the native libraries the Rust standard library needs
    INTERFACE_LINK_LIBRARIES "$cmake_libs")
endif()

set(kvs_signaling_VERSION "$VERSION")
set(kvs_signaling_INCLUDE_DIRS "\${_kvs_signaling_include}")
unset(_kvs_signaling_include)
unset(_kvs_signaling_lib)
EOF

# Same rule as the SONAME: any $MAJOR.x at least the requested version.
cat >"$D$CMAKE_DIR/kvs_signalingConfigVersion.cmake" <<EOF
# Version of the kvs_signaling CMake package (written by scripts/install.sh):
# compatible with a request for $MAJOR.x up to $VERSION (the SONAME is
# libkvs_signaling.so.$MAJOR).
set(PACKAGE_VERSION "$VERSION")
if(PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(PACKAGE_FIND_VERSION_MAJOR STREQUAL "$MAJOR")
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
else()
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
endif()
EOF

echo "installed kvs_signaling $VERSION into ${D}$PREFIX ($SONAME)"
