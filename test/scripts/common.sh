# Sourced by the test and demo scripts: where PostgreSQL's tools live.
PG_CONFIG=${PG_CONFIG:-pg_config}
PG_BINDIR=$("$PG_CONFIG" --bindir)
PGXS_DIR=$(dirname "$("$PG_CONFIG" --pgxs)")/../..
PGXS_DIR=$(cd "$PGXS_DIR" && pwd)
export PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress"
export PATH="$PG_BINDIR:$PATH"
PG_TEST_PERL="$PGXS_DIR/src/test/perl"

# The unprivileged user that runs PostgreSQL when we are root.
ECP_TEST_USER=${ECP_TEST_USER:-postgres}

# Run a command as the unprivileged user when we are root, else as ourselves.
as_test_user() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u "$ECP_TEST_USER" -- env "PATH=$PATH" "PG_REGRESS=$PG_REGRESS" "$@"
	else
		"$@"
	fi
}
