# ecp: PGXS build of ecp.so, plus the test and demo entry points.
#
#   make            build ecp.so (only the extension: nothing test-only)
#   make install    install the extension into pg_config's directories
#   make esd        build the Elasticsearch stand-in (test/esd; needs the
#                   test-only packages, e.g. libmicrohttpd)
#   make test       install missing Debian packages, build ecp and the stand-in,
#                   install, run every suite (pg_regress + real-cluster mode
#                   + TAP + stand-in + unit)
#                   as an unprivileged user
#   make demo       throwaway cluster + stand-in + a real sync, with progress
#   make bench      benchmarks against baselines measured in the same run

EXTENSION  = ecp
MODULE_big = ecp
EXT_VERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" ecp.control)
# src/ by process (src/README.md): lib (PostgreSQL-free), common, backend,
# launcher, worker; every folder is on the include path.
SRC_DIRS   = src/lib src/common src/backend src/launcher src/worker
OBJS       = src/module.o $(patsubst %.c,%.o,$(sort $(foreach d,$(SRC_DIRS),$(wildcard $(d)/*.c))))
DATA       = $(sort $(wildcard sql/ecp--*.sql))
PGFILEDESC = "ecp - sync large data sets into Elasticsearch"

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src $(foreach d,$(SRC_DIRS),-I$(srcdir)/$(d)) -DECP_VERSION='"$(EXT_VERSION)"'
# PostgreSQL's own flags stay; ours are added on top. -Wextra's unused-parameter
# fires on every PG_FUNCTION_ARGS function that ignores fcinfo, so that one
# is relaxed; everything else is an error.
PG_CFLAGS  = -Wall -Wextra -Werror -Wno-unused-parameter
SHLIB_LINK = -lcurl -ljansson -lz

# pg_regress runs against a temporary instance with ecp (and pg_cron) preloaded.
REGRESS      = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/ecp--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=./test/regress.conf

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: rebuild every object when a header
# changes, or objects compiled against an old struct layout get linked.
$(OBJS): $(wildcard src/*.h $(foreach d,$(SRC_DIRS),$(d)/*.h))
# ECP_VERSION comes from ecp.control: a new version rebuilds everything.
$(OBJS): ecp.control

# test and demo build the stand-in themselves, after installing the
# packages it needs; bench expects them installed (make test or make demo).
.PHONY: esd test demo bench clean-esd
esd:
	$(MAKE) -C test/esd

test:
	bash test/scripts/run-all.sh

demo:
	bash test/scripts/demo.sh

bench: esd
	bash test/bench/run.sh

clean: clean-esd
clean-esd:
	-$(MAKE) -C test/esd clean
