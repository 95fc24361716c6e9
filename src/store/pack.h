/* Small finished queries packed as records in shared append-only files, instead of a
 * directory, meta.json and result.bin each (docs/design.md, "Small results").
 *
 * On ext4 each new inode costs CPU in the creating thread and in writeback; a query that
 * answers one row paid three. A record holds a query's final meta.json text and its whole
 * result (the DAPIRES2 image of store/result.h), so packing one costs a pwrite into a file
 * that already exists. The records go to "pack" files in the queries directory, .pack-<n>:
 * each process appends to a new one (never to a file a previous process may have left torn),
 * and starts another when it reaches PACK_FILE_MAX bytes.
 *
 * Record (little-endian), 8-byte aligned:
 *   magic u32 ("DQP1" live, "DQPX" removed), slug_len u32, meta_len u32, 0 u32,
 *   result_len u64, checksum u64 (over the header's bytes 4..24 and the payload);
 *   payload: slug, meta text, zeros to a multiple of 8, result, zeros to a multiple of 8.
 * A record is removed by overwriting its magic (4 bytes: one write of one sector); a file
 * whose records are all removed is deleted. Neither is fsynced, like the removal of a
 * query's files: the creation log's checkpoint (syncfs) makes them durable.
 *
 * Durability: nothing here is fsynced when written (but store_pack_remove with sync). A
 * packed query's creation record in the creation log keeps it until a checkpoint, whose
 * syncfs makes its record durable first. A start reads each file up to its first torn or
 * damaged record; such a query's creation record then makes it run again, as a torn
 * result.bin does. When two live records name the same slug (a crash between writing the
 * newer one and removing the older), the later one wins. Thread-safe (one lock). */
#ifndef DAPI_STORE_PACK_H
#define DAPI_STORE_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "dapi/err.h"
#include "store/result.h"

/* Results up to this many bytes (the DAPIRES2 image) are packed. */
#define DAPI_PACK_RESULT_MAX (64u << 10)

struct store_pack;

/* Opens the pack files of directory dir: reads every record back (removing the files that
 * hold none). Returns 0 or an errno value. */
int store_pack_open(struct store_pack **out, const char *dir);
void store_pack_close(struct store_pack *p);

/* Calls fn for each live record, in the order they were written: slug, its meta.json text and
 * its result's bytes (rlen 0: none), read, not mapped, and borrowed for the call (a start
 * with millions of records maps none of them: store_pack_map does, when one is used). */
typedef void (*store_pack_each_fn)(void *arg, const char *slug, const char *meta, size_t mlen,
                                   const void *result, size_t rlen);
void store_pack_each(struct store_pack *p, store_pack_each_fn fn, void *arg);

/* Appends slug's record (result: NULL and rlen 0 for none) and removes its earlier one, if
 * any. *mapped (if not NULL) gets the result mapped from the record. Returns 0 or an errno
 * value (ENOSPC, EDQUOT: the disk is full). */
int store_pack_put(struct store_pack *p, const char *slug, const char *meta, size_t mlen,
                   const void *result, size_t rlen, struct dapi_result **mapped);
/* Whether slug has a live record. */
int store_pack_has(struct store_pack *p, const char *slug);
/* The result of slug's record, mapped now (a reference for the caller to close), or NULL
 * (no such record, none with a result, or it cannot be mapped). */
struct dapi_result *store_pack_map(struct store_pack *p, const char *slug);
/* Removes slug's record (sync: durably, fdatasync before returning). Returns 1 if it had
 * one, 0 if not, or a negated errno value if the removal could not be written. */
int store_pack_remove(struct store_pack *p, const char *slug, int sync);
/* Compaction: the pack file (never the newest) whose live records take at most a quarter of
 * its bytes, and that has the most bytes to free, has them copied to the newest file, which
 * is then fdatasynced; then the file is deleted. So the pack files never hold more than four
 * times the bytes of their live records, plus the newest file. fn (if not NULL) gets each
 * moved record's slug and result, mapped from its new place (a reference for fn to keep or
 * close; NULL if it has none or could not be mapped): the old file's blocks are freed once
 * nothing maps them. One file per call. Returns the bytes freed (0: no file to compact), or
 * a negated errno value (the copies made stand; the file is deleted by a later call). */
/* Whether a file qualifies for store_pack_compact. */
int store_pack_sparse(struct store_pack *p);
typedef void (*store_pack_moved_fn)(void *arg, const char *slug, struct dapi_result *result);
int64_t store_pack_compact(struct store_pack *p, store_pack_moved_fn fn, void *arg);
/* How many live records and pack files there are (for tests and metrics). */
void store_pack_counts(struct store_pack *p, uint64_t *records, uint64_t *files);
/* How many records compactions have looked at so far (for tests: a compaction reads its
 * file's live records, never the whole index). */
uint64_t store_pack_visits(struct store_pack *p);
/* The pack files, and the bytes of their records: the live ones', and all (removed ones
 * included), read together (for metrics). */
void store_pack_usage(struct store_pack *p, uint64_t *files, uint64_t *live, uint64_t *total);

#endif
