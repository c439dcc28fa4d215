/*-------------------------------------------------------------------------
 *
 * snapshot.h
 *	  The topology of this coordinator's catalog as one JSON document, and
 *	  the catalog made to match such a document.
 *
 *-------------------------------------------------------------------------
 */
#ifndef TENANT_ROUTER_SNAPSHOT_H
#define TENANT_ROUTER_SNAPSHOT_H

/* the catalog's place in the order, and its topology there */
typedef struct LocalTopology
{
	char	   *epoch;			/* NULL: not in a log yet */
	char	   *position;
	char	   *topology;		/* JSON, if asked for */
	char	   *digest;			/* md5 of topology, if asked for */
} LocalTopology;

/* what an adoption changed */
typedef struct AdoptCounts
{
	int64		removed;		/* rows of the catalog that the snapshot does not have */
	int64		added;			/* rows of the snapshot that the catalog did not have */
} AdoptCounts;

extern LocalTopology *SnapshotLocal(bool with_topology);
extern AdoptCounts SnapshotAdopt(const char *epoch, const char *position, const char *topology);
extern void SnapshotJoin(const char *epoch, const char *position);

#endif
