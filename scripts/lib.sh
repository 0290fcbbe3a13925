# Shared by the scripts: install the extension into Debian's PostgreSQL 15.
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

# install_extension [--release]: builds and copies pgaudit_siem into PostgreSQL's dirs.
# cargo-pgrx copies the upgrade scripts (sql/pgaudit_siem--A--B.sql); the frozen install
# scripts of released versions (sql/pgaudit_siem--A.sql) go too, so the upgrade test can
# create the extension at an old version.
install_extension() {
  local sudo_flag=() sudo=()
  [ "$(id -u)" -eq 0 ] || { sudo_flag=(--sudo); sudo=(sudo); }
  cargo pgrx install --pg-config "$PG_CONFIG" "${sudo_flag[@]}" "$@"
  local f
  for f in sql/pgaudit_siem--*.sql; do
    case "$(basename "$f")" in
      *--*--*) ;;
      *) "${sudo[@]}" install -m 0644 "$f" "$("$PG_CONFIG" --sharedir)/extension/" ;;
    esac
  done
}
