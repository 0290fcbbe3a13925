# Shared by the scripts: install the extension into Debian's PostgreSQL 15.
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

# install_extension [--release]: builds and copies pgaudit_siem into PostgreSQL's dirs.
install_extension() {
  local sudo_flag=()
  [ "$(id -u)" -eq 0 ] || sudo_flag=(--sudo)
  cargo pgrx install --pg-config "$PG_CONFIG" "${sudo_flag[@]}" "$@"
}
