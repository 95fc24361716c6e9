/* Durable creation records with group commit: many threads make their new queries durable
 * with one fdatasync between them.
 *
 * The records go to one log file in the state dir (queries/.log), written in full once when
 * it is made (so that later writes only overwrite allocated blocks: an fdatasync of it then
 * writes those blocks and flushes the disk cache, with no journal commit — it does not wait
 * for other files' dirty data the way an fsync of a new file does on ext4 data=ordered).
 * A thread appends its record and either waits or leaves a callback; a committer thread runs
 * the rounds: one fdatasync for every record appended before the round began. Records
 * appended meanwhile are served by the next round. Rounds never overlap. A round about to
 * start may first wait for creations announced as on their way (store_commit_expect), at
 * most a sync's time, so that fewer rounds serve as many creations.
 *
 * Each record carries its generation and a checksum, so a start reads back exactly the
 * records of the current generations up to the first torn or stale one. The log has two
 * halves, each a generation of its own that begins with a record of its sequence number.
 * When the half being written is full, writing moves to the other half and the checkpointer
 * thread retires the full one: the hook writes what only its records hold, syncfs() makes
 * every file written so far durable, then the half's first record is invalidated. Appenders
 * and rounds go on meanwhile; an appender waits only if the new half fills before that
 * checkpoint ends. A crash in between leaves both halves, and a start reads the older first.
 * At every start that read records back, both halves are checkpointed at once. */
#ifndef DAPI_STORE_COMMIT_H
#define DAPI_STORE_COMMIT_H

#include <stddef.h>
#include <stdint.h>

struct store_commit;

enum store_rec { STORE_REC_CREATED = 1, STORE_REC_REMOVED = 2 };

/* What a round runs on the committer's own (read-only) descriptor of the log: fdatasync by
 * default; tests replace it (count rounds, slow them down, fail them). Returns 0 or an errno
 * value. */
typedef int (*store_commit_sync_fn)(int fd, void *arg);
/* Called once a record is durable (err 0) or its sync failed (an errno value). */
typedef void (*store_commit_done_fn)(void *arg, int err);
/* Called by replay for each record of the current generations, in order. */
typedef void (*store_commit_replay_fn)(void *arg, enum store_rec kind, const char *data,
                                       size_t len);

/* Opens (creating it if needed) the log in directory dir, of size bytes (0: the default,
 * 1 MiB: two halves of 512 KiB); calls fn for each record it holds. The caller then acts on them (restores what a
 * power loss took) and calls store_commit_begin() before adding anything. Returns 0 or
 * an errno value. */
int store_commit_open(struct store_commit **out, const char *dir, size_t size,
                      store_commit_replay_fn fn, void *arg);
void store_commit_close(struct store_commit *c);
/* After open: a checkpoint if records were read back, else just a new generation. */
int store_commit_begin(struct store_commit *c);
/* Checkpoint of both halves, in the calling thread (after the checkpointer's, if one runs):
 * makes every file of the file system durable (syncfs), then starts a new generation at the
 * log's start (earlier records are no longer needed). Returns 0 or an errno. */
int store_commit_checkpoint(struct store_commit *c);
/* Appends a record and, if wait, returns only once it is durable: 0, or the errno value of
 * the failed write or sync (the record may then be lost on a power loss). Without wait, the
 * record's ticket goes to *ticket (if not NULL) for store_commit_when. A record neither
 * waited for nor given a ticket starts no round of its own: the next round's sync (or
 * checkpoint) covers it. */
int store_commit_add(struct store_commit *c, enum store_rec kind, const char *data, size_t len,
                     int wait, uint64_t *ticket);
/* Calls fn(arg, err) once the record of ticket is durable: at once (in this thread) if it is
 * already, else from the committer thread after its round. Ticket 0: at once. */
void store_commit_when(struct store_commit *c, uint64_t ticket, store_commit_done_fn fn,
                       void *arg);
/* Announces a creation on its way to a record (coming 1: a check under way, say), or its
 * arrival (coming 0: its ticket taken, or it left without one; once for each announced).
 * While some announced before it are on their way, a round about to start waits for them,
 * so that they share its sync: at most as long as a round's sync took lately, and max_us
 * (store_commit_set_gather; 0, the default: never). */
void store_commit_expect(struct store_commit *c, int coming);
void store_commit_set_gather(struct store_commit *c, int64_t max_us);
/* Creations announced and not arrived, and rounds that waited for some so far. */
void store_commit_gather_stats(struct store_commit *c, uint64_t *coming, uint64_t *gathered);
/* Returns once every record appended so far is settled and its callback has run. */
void store_commit_drain(struct store_commit *c);
/* How many rounds (syncs) and checkpoints ran so far. */
uint64_t store_commit_rounds(struct store_commit *c);
uint64_t store_commit_checkpoints(struct store_commit *c);
/* What a checkpoint calls before its syncfs: the caller writes to files whatever it still
 * needs of the records the checkpoint is about to drop. Called by the checkpointer thread
 * without the log's lock, while records go on being appended to the other half (every record
 * of the half it retires was appended before the call), or with the lock held by
 * store_commit_checkpoint. fn must not add records. Set before the first add. */
typedef void (*store_commit_hook_fn)(void *arg);
void store_commit_set_hook(struct store_commit *c, store_commit_hook_fn fn, void *arg);
/* Replaces the round's sync (NULL: fdatasync again). Only while no thread waits. */
void store_commit_set_sync(struct store_commit *c, store_commit_sync_fn fn, void *arg);

#endif
