/*
 * topology_latency — time from a topology change to the first query, on
 * each coordinator, that routes by it.
 *
 *   topology_latency N MODE REDIS_HOST REDIS_PORT CONNINFO...
 *
 * The coordinators (one CONNINFO each, the first one "A") follow one
 * channel and have a shard "lat" owning 5000001..5000002.  Each change
 * moves its range_end between 5000002 and 5000003:
 *   MODE "sql":     shard_update_range() on A; measured on the others;
 *   MODE "channel": an event PUBLISHed only (seed 000's publisher);
 *   MODE "stream":  an event appended to <channel>:log and published in one
 *                   EVAL;
 * the last two measured on every coordinator.  A session on each polls
 * shard_for(5000003) until it reflects the change.  Prints, over N changes,
 * p50, p95, p99 and max in milliseconds of the time until each coordinator
 * routes by the change, and until all of them do.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#define CHANNEL "db_shard_topology_updates"
#define MAX_COORDS 8

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static int
cmp(const void *a, const void *b)
{
	double		x = *(const double *) a;
	double		y = *(const double *) b;

	return (x > y) - (x < y);
}

static void
report(const char *mode, const char *what, double *lat, int n)
{
	qsort(lat, n, sizeof(double), cmp);
	printf("%-8s %-22s N=%d  p50 %6.1f ms  p95 %6.1f ms  p99 %6.1f ms  max %6.1f ms\n",
		   mode, what, n, lat[n / 2], lat[(int) (n * 0.95)], lat[(int) (n * 0.99)], lat[n - 1]);
}

static PGconn *
connect_db(const char *conninfo)
{
	PGconn	   *conn = PQconnectdb(conninfo);

	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		exit(1);
	}
	return conn;
}

int
main(int argc, char **argv)
{
	int			n;
	const char *mode;
	redisContext *redis;
	PGconn	   *conns[MAX_COORDS];
	int			ncoords;
	int			first;			/* the first coordinator measured */
	double	   *lat[MAX_COORDS];
	double	   *all;
	int			i;
	int			c;

	if (argc < 6 || argc - 5 > MAX_COORDS)
	{
		fprintf(stderr, "usage: %s N sql|channel|stream REDIS_HOST REDIS_PORT CONNINFO...\n", argv[0]);
		return 2;
	}
	n = atoi(argv[1]);
	mode = argv[2];
	redis = redisConnect(argv[3], atoi(argv[4]));
	if (redis == NULL || redis->err)
	{
		fprintf(stderr, "redis: %s\n", redis ? redis->errstr : "out of memory");
		return 1;
	}
	ncoords = argc - 5;
	for (c = 0; c < ncoords; c++)
	{
		conns[c] = connect_db(argv[5 + c]);
		lat[c] = calloc(n, sizeof(double));
	}
	all = calloc(n, sizeof(double));
	first = strcmp(mode, "sql") == 0 ? 1 : 0;

	for (i = 0; i < n; i++)
	{
		int			end = 5000002 + (i + 1) % 2;
		const char *want = end == 5000003 ? "t" : "f";
		int			pending = ncoords - first;
		int			done[MAX_COORDS] = {0};
		char		event[256];
		double		t0;

		snprintf(event, sizeof(event),
				 "{\"op\": \"UPDATE_SHARD_RANGE\", \"payload\": {\"shard_id\": \"lat\", "
				 "\"range_start\": 5000001, \"range_end\": %d}}", end);
		t0 = now_ms();
		if (strcmp(mode, "sql") == 0)
		{
			char		sql[128];
			PGresult   *res;

			snprintf(sql, sizeof(sql), "SELECT shard_update_range('lat', 5000001, %d)", end);
			res = PQexec(conns[0], sql);
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
			{
				fprintf(stderr, "%s", PQerrorMessage(conns[0]));
				return 1;
			}
			PQclear(res);
		}
		else
		{
			redisReply *reply;

			if (strcmp(mode, "stream") == 0)
				reply = redisCommand(redis, "EVAL %s 2 %s %s %s",
									 "redis.call('XADD', KEYS[1], '*', 'event', ARGV[1]) "
									 "return redis.call('PUBLISH', KEYS[2], ARGV[1])",
									 CHANNEL ":log", CHANNEL, event);
			else
				reply = redisCommand(redis, "PUBLISH %s %s", CHANNEL, event);
			if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
			{
				fprintf(stderr, "publish failed\n");
				return 1;
			}
			freeReplyObject(reply);
		}
		while (pending > 0)
		{
			for (c = first; c < ncoords; c++)
			{
				PGresult   *res;

				if (done[c])
					continue;
				res = PQexec(conns[c], "SELECT shard_for(5000003) IS NOT NULL");
				if (PQresultStatus(res) != PGRES_TUPLES_OK)
				{
					fprintf(stderr, "%s", PQerrorMessage(conns[c]));
					return 1;
				}
				if (strcmp(PQgetvalue(res, 0, 0), want) == 0)
				{
					done[c] = 1;
					lat[c][i] = now_ms() - t0;
					pending--;
				}
				PQclear(res);
			}
			if (now_ms() - t0 > 10000)
			{
				fprintf(stderr, "change %d not routed everywhere within 10 s\n", i);
				return 1;
			}
		}
		all[i] = now_ms() - t0;
	}
	for (c = first; c < ncoords; c++)
	{
		char		what[32];

		snprintf(what, sizeof(what), "coordinator %c", 'A' + c);
		report(mode, what, lat[c], n);
	}
	report(mode, first ? "all others" : "all", all, n);
	for (c = 0; c < ncoords; c++)
		PQfinish(conns[c]);
	redisFree(redis);
	return 0;
}
