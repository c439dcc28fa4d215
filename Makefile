# tenant_router — PGXS build.
#
#   make              build the extension
#   make install      install it into the PostgreSQL found by PG_CONFIG
#   make demo         install missing Debian packages, build, install, start a
#                     local coordinator + two shards + Redis and show routing
#   make demo-stop    stop the demo servers
#   make test         install missing packages, build, install, run every test
#   make bench        run the benchmarks in bench/

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
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter \
              -Wno-missing-field-initializers -Wno-sign-compare -Wno-clobbered
SHLIB_LINK  = -L$(shell $(PG_CONFIG) --libdir) -lpq -lhiredis

# pg_regress: SQL behaviour on a coordinator with two shards and Redis, all
# started by test/harness.sh (see test/README.md).
REGRESS     = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=tenant_router

TAP_TESTS   = 1
PROVE_TESTS = test/t/*.pl
PROVE_FLAGS = -I $(srcdir)/test/perl

# rebuild a .c file when a header it includes changes (.deps/)
override autodepend = yes

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: demo demo-stop test bench deps

deps:
	@scripts/install-deps.sh

demo:
	@scripts/demo.sh start

demo-stop:
	@scripts/demo.sh stop

test:
	@scripts/test.sh

bench:
	@bench/run.sh
