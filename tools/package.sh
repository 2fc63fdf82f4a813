#!/usr/bin/env bash
# Build the Debian package of resetlab (docs/install.md):
#
#   tools/package.sh           static x86_64 binary + target/debian/resetlab_<version>_amd64.deb
#   tools/package.sh --check   the same, then unpack the .deb (dpkg-deb -x) into target/debian/check/
#                              and check it: the binary is static, stripped, <= 15 MB and runs
#                              (--version agrees with the package version, --sim list), every man page
#                              renders (man -l, groff), the control fields follow Debian's conventions.
#                              Installs man-db (man, groff) with apt-get when they are missing.
#
# The binary: `cargo build --release --target x86_64-unknown-linux-gnu` with crt-static (as
# tools/vm/run.sh builds it, so both share one build), then stripped: the release profile keeps
# line tables (debug = 1) for backtraces in development, which a package does not ship.
# Static (no PT_INTERP, no glibc to match) because Proxmox VE 7 has glibc 2.31 and Debian 12's
# rustc (1.63) cannot build the crate on the host. The .deb is made with dpkg-deb, which every
# Debian has: no cargo-deb to install from crates.io first, no debhelper.
#
# Environment: CARGO (default cargo), SOURCE_DATE_EPOCH (file times in the .deb; default: the last
# commit's time, so that two builds of one commit give the same files).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
triple=x86_64-unknown-linux-gnu
out=$repo/target/debian
max_bytes=$((15 * 1024 * 1024))
check=0

log() { echo "package.sh: $*" >&2; }
die() { echo "package.sh: error: $*" >&2; exit 1; }

case "${1:-}" in
"") ;;
--check) check=1 ;;
-h | --help) sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
*) die "unknown argument $1 (see --help)" ;;
esac

for t in dpkg-deb gzip strip readelf; do
    command -v "$t" >/dev/null || die "$t is missing (dpkg, gzip, binutils)"
done

# --- 1. the binary -------------------------------------------------------------------------------------
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || die "no version in Cargo.toml"
changelog_version=$(sed -n '1s/^resetlab (\([^)]*\)).*/\1/p' packaging/debian/changelog)
[ "$changelog_version" = "$version" ] ||
    die "packaging/debian/changelog's top entry is $changelog_version, Cargo.toml says $version: add an entry"
log "building static resetlab $version (release, $triple)"
# --target keeps build scripts and proc macros dynamic; crt-static applies to the target only.
RUSTFLAGS="-C target-feature=+crt-static" "${CARGO:-cargo}" build --quiet --release --target "$triple" --bin resetlab ||
    die "cargo build failed"
built=${CARGO_TARGET_DIR:-$repo/target}/$triple/release/resetlab

rm -rf "$out/root" "$out/gen"
mkdir -p "$out/root/DEBIAN" "$out/gen"
root=$out/root
# Every file root-owned (dpkg-deb --root-owner-group), modes set here, never from the umask.
install -d -m 0755 "$root/usr/sbin"
strip --strip-all -o "$root/usr/sbin/resetlab" "$built"
chmod 0755 "$root/usr/sbin/resetlab"
bin=$root/usr/sbin/resetlab
! readelf -lW "$bin" | grep -q 'program interpreter' || die "$bin is dynamically linked, not static"
size=$(stat -c %s "$bin")
[ "$size" -le "$max_bytes" ] || die "$bin is $size bytes, more than 15 MB"
said=$("$bin" --version)
case $said in
"resetlab $version ("*")") ;;
*) die "the binary says '$said', the package is $version" ;;
esac
log "$said, $size bytes stripped (from $(stat -c %s "$built"))"

# --- 2. generated files: man pages and completions from the clap definitions ---------------------------
"$bin" generate man "$out/gen/man"
"$bin" generate completions "$out/gen/completions"

epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
gz() { gzip -9 -n -c "$1" >"$2" && chmod 0644 "$2"; }

install -d -m 0755 "$root/usr/share/man/man8"
for f in "$out"/gen/man/*.8; do gz "$f" "$root/usr/share/man/man8/$(basename "$f").gz"; done
install -D -m 0644 "$out/gen/completions/resetlab.bash" "$root/usr/share/bash-completion/completions/resetlab"
install -D -m 0644 "$out/gen/completions/_resetlab" "$root/usr/share/zsh/vendor-completions/_resetlab"
install -D -m 0644 "$out/gen/completions/resetlab.fish" "$root/usr/share/fish/vendor_completions.d/resetlab.fish"

# --- 3. the shim, tmpfiles.d, documentation -------------------------------------------------------------
install -D -m 0755 tools/pve-hookscript.sh "$root/usr/share/resetlab/pve-hookscript.sh"
install -D -m 0644 packaging/debian/tmpfiles.conf "$root/usr/lib/tmpfiles.d/resetlab.conf"
doc=$root/usr/share/doc/resetlab
install -d -m 0755 "$doc" "$doc/regs"
# Debian policy 12.3: documentation larger than 4 kB is gzipped; the copyright file never is.
for f in README.md docs/*.md; do
    name=$(basename "$f")
    if [ "$(stat -c %s "$f")" -gt 4096 ]; then gz "$f" "$doc/$name.gz"; else install -m 0644 "$f" "$doc/$name"; fi
done
# The register files are embedded in the binary; their text (with every value's source) is the
# documentation of what it reads and writes, and what `--regs DIR` overrides.
for f in regs/*.toml; do gz "$f" "$doc/regs/$(basename "$f").gz"; done
gz packaging/debian/changelog "$doc/changelog.Debian.gz"

# The commit the binary itself names ("commit <hash>[, dirty]" or "unknown commit").
commit=${said#resetlab "$version" (}
commit=${commit%)}
glibc=$(dpkg-query -W -f='${source:Package} ${Version}' libc6-dev 2>/dev/null || echo "the build machine's glibc")
crates=$(cd "$repo" && "${CARGO:-cargo}" tree --quiet -e normal,no-proc-macro --target "$triple" --prefix none -f '{p}: {l}' 2>/dev/null |
    sed 's/ (\*)$//; s/ (proc-macro)//' | sort -u | grep -v '^resetlab ' | sed 's/^/  /') ||
    die "cargo tree failed (the crate list for the copyright file)"
# A DEP-5 text block: one leading space, an empty line as " .".
block() { sed 's/^/ /; s/^ $/ ./' "$1"; }
{
    while IFS= read -r line; do
        case $line in
        @CRATES@) printf '%s\n' "$crates" | sed 's/^/ /' ;;
        @MIT@) block LICENSE-MIT ;;
        @APACHE@) block LICENSE-APACHE ;;
        *) printf '%s\n' "$line" | sed "s/@COMMIT@/$commit/; s/@GLIBC@/$glibc/" ;;
        esac
    done <packaging/debian/copyright.in
} >"$doc/copyright"
chmod 0644 "$doc/copyright"

# --- 4. control, maintainer script, md5sums, the .deb ---------------------------------------------------
install -m 0755 packaging/debian/postinst "$root/DEBIAN/postinst"
installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
# Built-Using: Debian policy 7.8 asks a statically linked binary to name the sources it contains.
built_using=$(dpkg-query -W -f='${source:Package} (= ${source:Version})' libc6-dev 2>/dev/null || true)
{
    echo "Package: resetlab"
    echo "Version: $version"
    echo "Architecture: amd64"
    echo "Maintainer: resetlab developers <resetlab@localhost>"
    echo "Installed-Size: $installed_kb"
    [ -z "$built_using" ] || echo "Built-Using: $built_using"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Description: reset PCI devices from Linux userspace (AMD APU iGPU passthrough)"
    echo " resetlab resets PCI devices that the kernel cannot reset cleanly, first the"
    echo " AMD Radeon 780M iGPU (1002:1900) passed through to Proxmox VE virtual"
    echo " machines (\"the AMD reset bug\"): it lists what can reset each device and what"
    echo " else a reset would hit, runs fallback chains with guards and a journal, and"
    echo " checks a host against the passthrough recipe (resetlab doctor)."
    echo " ."
    echo " As a VM hookscript (resetlab hook install VMID) it asks the guest to release"
    echo " the GPU before a stop, brings missing functions back and resets a device left"
    echo " dirty. The binary is static: it runs on Proxmox VE 7, 8 and 9."
} >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$epoch" {} +
deb=$out/resetlab_${version}_amd64.deb
rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
log "wrote $deb ($(stat -c %s "$deb") bytes)"
[ "$check" = 1 ] || exit 0

# --- 5. --check: unpack and test what a user gets --------------------------------------------------------
need=()
command -v man >/dev/null || need+=(man-db)
command -v groff >/dev/null || need+=(groff-base)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "need root to install ${need[*]} for --check (or install them yourself)"
    log "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "${need[@]}" \
        >"$out/apt.log" 2>&1 || {
        apt-get update -q >>"$out/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "${need[@]}" \
            >>"$out/apt.log" 2>&1 || { tail -n 20 "$out/apt.log" >&2; die "apt-get install ${need[*]} failed"; }
    }
fi
chk=$out/check
rm -rf "$chk"
mkdir -p "$chk"
dpkg-deb -x "$deb" "$chk"
fail=0
bad() { echo "package.sh: check failed: $*" >&2; fail=1; }
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = resetlab ] || bad "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || bad "Version: $(field Version), want $version"
[ "$(field Architecture)" = amd64 ] || bad "Architecture: $(field Architecture)"
[ "$(field Section)" = admin ] || bad "Section: $(field Section)"
[ -z "$(field Depends)" ] || bad "Depends: $(field Depends) (a static binary needs nothing)"
cbin=$chk/usr/sbin/resetlab
! readelf -lW "$cbin" | grep -q 'program interpreter' || bad "$cbin has a program interpreter"
# .debug_gdb_scripts is loaded (SHF_ALLOC) and stays; the debug information and symbols go.
! readelf -SW "$cbin" | grep -Eq '\.(debug_info|debug_line|symtab) ' || bad "$cbin is not stripped"
[ "$(stat -c %s "$cbin")" -le "$max_bytes" ] || bad "$cbin is larger than 15 MB"
v=$("$cbin" --version) || bad "$cbin --version failed"
[ "${v#resetlab "$version" (}" != "$v" ] || bad "--version says '$v', the package is $version"
"$cbin" --sim list >"$chk.list" 2>&1 || bad "$cbin --sim list failed: $(tail -n 3 "$chk.list")"
grep -q 'c5:00.0' "$chk.list" || bad "--sim list shows no c5:00.0"
for f in usr/share/bash-completion/completions/resetlab usr/share/zsh/vendor-completions/_resetlab \
    usr/share/fish/vendor_completions.d/resetlab.fish usr/share/resetlab/pve-hookscript.sh \
    usr/share/doc/resetlab/copyright usr/share/doc/resetlab/changelog.Debian.gz usr/lib/tmpfiles.d/resetlab.conf; do
    [ -s "$chk/$f" ] || bad "no $f"
done
cmp -s "$chk/usr/share/resetlab/pve-hookscript.sh" tools/pve-hookscript.sh || bad "the packaged shim differs from tools/pve-hookscript.sh"
pages=0
for page in "$chk"/usr/share/man/man8/*.8.gz; do
    pages=$((pages + 1))
    name=$(basename "$page" .8.gz)
    zcat "$page" | grep -q "^\.TH $name 8 " || bad "$page has no .TH $name 8 line"
    # groff's own warnings (-ww; -k: preconv for the UTF-8 text, as man-db does), then
    # man-db's view of the page as a user opens it.
    w=$(zcat "$page" | groff -k -man -ww -z -Tutf8 2>&1) || bad "groff failed on $page"
    [ -z "$w" ] || bad "groff warns about $page: $w"
    MANWIDTH=80 man -l "$page" >"$chk.man" 2>&1 </dev/null || bad "man -l $page failed"
    grep -q "$name" "$chk.man" || bad "man -l $page shows no $name"
done
[ "$pages" -gt 1 ] || bad "only $pages man page(s)"
[ "$fail" = 0 ] || die "the package $deb failed its checks"
log "checked $deb: $pages man pages, static binary $("$cbin" --version)"
