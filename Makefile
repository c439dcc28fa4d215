# tenant_router — PGXS build.
#
#   make              build the extension
#   make install      install it into the PostgreSQL found by PG_CONFIG
#   make demo         install missing Debian packages, build, install, start a
#                     local coordinator + two shards + Redis and show routing
#   make demo-stop    stop the demo servers
#   make test         install missing packages, build, install, run every test
#   make installcheck run every test against the extension already installed
#   make deps         install the missing Debian packages only
#   make bench        run the benchmarks in bench/ (routing cache, Redis
#                     latency, throughput against direct and postgres_fdw,
#                     statements over several shards)

EXTENSION   = tenant_router
MODULE_big  = tenant_router
DATA        = $(wildcard tenant_router--*.sql)
DOCS        = README.md

SRCS        = $(sort $(wildcard src/*.c src/*/*.c))
OBJS        = $(SRCS:.c=.o)

PG_CONFIG  ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/src/include -I$(shell $(PG_CONFIG) --includedir)
# -Wextra minus what PostgreSQL's own headers and macros trip (unused
# parameters of callbacks, PG_TRY's locals, signed/unsigned in inline code).
# TR_EXTRA_CFLAGS: `make test` adds -DUSE_ASSERT_CHECKING, so that the suite
# runs with the extension's assertions on (as pgvector's CI does).
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter \
              -Wno-missing-field-initializers -Wno-sign-compare -Wno-clobbered \
              $(TR_EXTRA_CFLAGS)
SHLIB_LINK  = -L$(shell $(PG_CONFIG) --libdir) -lpq -lhiredis

# Tests: `make test` (scripts/test.sh) runs pg_regress (sql/, expected/),
# isolation specs (specs/) and TAP tests (test/t/) against servers it starts
# itself; PGXS's own installcheck, which expects one running server, is
# replaced by the same suite run on the extension already installed.
NO_INSTALLCHECK = 1

# rebuild a .c file when a header it includes changes (.deps/)
override autodepend = yes

# The script targets install PostgreSQL themselves when it is missing, so
# they must not need PGXS to be there already.
SCRIPT_TARGETS = deps demo demo-stop test installcheck bench
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
else ifneq ($(filter-out $(SCRIPT_TARGETS),$(or $(MAKECMDGOALS),all)),)
$(error PGXS not found: install postgresql-server-dev-15 (make deps does))
endif

.PHONY: $(SCRIPT_TARGETS)

deps:
	@scripts/install-deps.sh

demo:
	@scripts/demo.sh start

demo-stop:
	@scripts/demo.sh stop

test:
	@scripts/test.sh

installcheck:
	@scripts/test.sh --no-build

bench:
	@bench/route_cache.sh && bench/topology_latency.sh && bench/run.sh && bench/multi_shard.sh && bench/event_flood.sh
