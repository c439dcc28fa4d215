/*
 * topology_latency — time from PUBLISH of a topology event to the first
 * query, in another session, that routes by the new topology.
 *
 *   topology_latency CONNINFO REDIS_HOST REDIS_PORT N MODE
 *
 * MODE "channel": the event is PUBLISHed only (seed 000's publisher);
 * MODE "stream": it is appended to <channel>:log and published in one EVAL
 * (the recoverable protocol).  The coordinator must have a shard "lat"
 * owning 5000001..5000002; each event moves its range_end between 5000002
 * and 5000003, and the session polls shard_for(5000003) until it reflects
 * the event.  Prints p50, p95, p99 and max in milliseconds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#define CHANNEL "db_shard_topology_updates"

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

int
main(int argc, char **argv)
{
	PGconn	   *conn;
	redisContext *redis;
	int			n;
	int			i;
	double	   *lat;
	int			stream;

	if (argc != 6)
	{
		fprintf(stderr, "usage: %s CONNINFO REDIS_HOST REDIS_PORT N channel|stream\n", argv[0]);
		return 2;
	}
	n = atoi(argv[4]);
	stream = strcmp(argv[5], "stream") == 0;
	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		return 1;
	}
	redis = redisConnect(argv[2], atoi(argv[3]));
	if (redis == NULL || redis->err)
	{
		fprintf(stderr, "redis: %s\n", redis ? redis->errstr : "out of memory");
		return 1;
	}
	lat = calloc(n, sizeof(double));

	for (i = 0; i < n; i++)
	{
		int			end = 5000002 + (i + 1) % 2;
		const char *want = end == 5000003 ? "t" : "f";
		char		event[256];
		redisReply *reply;
		double		t0;
		long		polls = 0;

		snprintf(event, sizeof(event),
				 "{\"op\": \"UPDATE_SHARD_RANGE\", \"payload\": {\"shard_id\": \"lat\", "
				 "\"range_start\": 5000001, \"range_end\": %d}}", end);
		t0 = now_ms();
		if (stream)
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
		for (;;)
		{
			PGresult   *res = PQexec(conn, "SELECT shard_for(5000003) IS NOT NULL");
			int			done;

			if (PQresultStatus(res) != PGRES_TUPLES_OK)
			{
				fprintf(stderr, "%s", PQerrorMessage(conn));
				return 1;
			}
			done = strcmp(PQgetvalue(res, 0, 0), want) == 0;
			PQclear(res);
			polls++;
			if (done)
				break;
			if (now_ms() - t0 > 10000)
			{
				fprintf(stderr, "event %d not applied within 10 s\n", i);
				return 1;
			}
		}
		lat[i] = now_ms() - t0;
	}
	qsort(lat, n, sizeof(double), cmp);
	printf("%-8s N=%d  p50 %.1f ms  p95 %.1f ms  p99 %.1f ms  max %.1f ms\n", argv[5], n,
		   lat[n / 2], lat[(int) (n * 0.95)], lat[(int) (n * 0.99)], lat[n - 1]);
	PQfinish(conn);
	redisFree(redis);
	return 0;
}
