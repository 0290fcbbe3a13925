#!/usr/bin/env bash
# Builds the Debian package: target/debian/postgresql-15-pgaudit-siem_<version>_amd64.deb
# with the library, control file, install and upgrade scripts, the local receiver and
# the chain verifier (/usr/bin/pgaudit_siem_receiver, /usr/bin/pgaudit_siem_verify),
# README and licence. Install it with `apt install ./postgresql-15-pgaudit-siem_*.deb`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
source scripts/lib.sh

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
name=postgresql-15-pgaudit-siem
root="target/debian/${name}_${version}_${arch}"
rm -rf "$root"
mkdir -p "$root"

# The library, control file and install script, as cargo-pgrx lays them out.
cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$root" >&2
libdir=$("$PG_CONFIG" --pkglibdir)
extdir="$("$PG_CONFIG" --sharedir)/extension"
test -f "$root$libdir/pgaudit_siem.so"
test -f "$root$extdir/pgaudit_siem--${version}.sql"
# Upgrade scripts from every released version (cargo-pgrx copies only those it finds
# for `install`; package them explicitly).
for f in sql/pgaudit_siem--*--*.sql; do
  install -m 0644 "$f" "$root$extdir/"
done

# The local receiver and the verifier.
cargo build --release -p pgaudit_siem_tests --bin siem_receiver --bin pgaudit_siem_verify >&2
install -D -m 0755 target/release/siem_receiver "$root/usr/bin/pgaudit_siem_receiver"
install -D -m 0755 target/release/pgaudit_siem_verify "$root/usr/bin/pgaudit_siem_verify"

doc="$root/usr/share/doc/$name"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 LICENSE "$doc/copyright"

installed_kb=$(du -sk "$root" | cut -f1)
mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: pgaudit_siem developers <pgaudit-siem@localhost>
Installed-Size: $installed_kb
Depends: postgresql-15, libc6, libgcc-s1
Section: database
Priority: optional
Homepage: https://localhost/pgaudit_siem
Description: pgAudit-compatible audit logging with SIEM delivery for PostgreSQL 15
 Session and object audit logging identical to pgAudit 1.7, delegated configuration,
 table change capture into a transactional outbox, and delivery of change events and
 of the session-audit trail to a SIEM (JSON, NDJSON, Splunk HEC, OpenSearch bulk) with
 a tamper-evident hash chain. Add pgaudit_siem to shared_preload_libraries, restart,
 then CREATE EXTENSION pgaudit_siem.
CONTROL
find "$root" -type d -exec chmod 0755 {} +
deb="target/debian/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >&2
echo "$deb"
