/*
 * The platform-free core of cocancel.
 *
 * Nothing here includes windows.h: these are the data structures and the
 * state machine that decide what every cancellation entry point answers.  The
 * engine maps the status codes to HRESULTs and supplies locking; the host unit
 * tests (tests/unit) exercise this file directly under the sanitizers.
 */

#ifndef COCANCEL_CORE_H
#define COCANCEL_CORE_H

#include <stddef.h>

/* Outcome of a state-machine step, mapped 1:1 to HRESULTs by the engine. */
enum cc_status
{
    CC_OK = 0,         /* S_OK */
    CC_E_PENDING,      /* RPC_S_CALLPENDING: a call is (still) in progress */
    CC_E_COMPLETE,     /* RPC_E_CALL_COMPLETE: no call in progress, or it already finished */
    CC_E_CANCELLED,    /* RPC_E_CALL_CANCELED */
    CC_E_DISABLED,     /* CO_E_CANCEL_DISABLED: the call was made without cancellation enabled */
};

/*
 * Life of one call, shared by the cancel object of a synchronous call and by
 * an asynchronous call object (which runs one call at a time):
 *
 *   IDLE --begin--> PENDING --complete--> COMPLETE --finish--> IDLE
 *                      |                      ^
 *                      | cancel(grace > 0)    | complete (the server made it in time)
 *                      v                      |
 *                  CANCELLING ---------------'
 *                      | expire, or cancel(0)
 *                      v
 *                  CANCELLED --finish--> IDLE   (a late reply is discarded)
 *
 * PENDING --cancel(0)--> CANCELLED directly.  Every transition is one atomic
 * compare-and-swap, so cancel, completion and finish may race from any thread
 * and exactly one of them wins each edge.
 */
enum cc_state
{
    CC_IDLE = 0,
    CC_PENDING,
    CC_CANCELLING,
    CC_CANCELLED,
    CC_COMPLETE,
};

/* The state word holds an enum cc_state and, in CC_CALL_CANCELLABLE, whether
 * cancellation was enabled on the calling thread when the call began; both
 * change together in one atomic step. */
#define CC_CALL_STATE_MASK  0xff
#define CC_CALL_CANCELLABLE 0x100

struct cc_call
{
    int word;           /* accessed only with atomic builtins */
};

void cc_call_init(struct cc_call *call);
enum cc_state cc_call_state(const struct cc_call *call);
int cc_call_cancellable(const struct cc_call *call);
/* IDLE -> PENDING; CC_E_PENDING while an earlier call has not been finished. */
enum cc_status cc_call_begin(struct cc_call *call, int cancellable);
/* A cancel request; grace != 0 gives the server time to finish (CANCELLING). */
enum cc_status cc_call_cancel(struct cc_call *call, int grace);
/* Cancels whatever the flag says (a message filter's PENDINGMSG_CANCELCALL). */
enum cc_status cc_call_abort(struct cc_call *call);
/* The grace period ran out: CANCELLING -> CANCELLED, or CC_E_COMPLETE if the call made it. */
enum cc_status cc_call_expire(struct cc_call *call);
/* The reply arrived: CC_OK if it is to be delivered, CC_E_CANCELLED if it must be discarded. */
enum cc_status cc_call_complete(struct cc_call *call);
/* The caller collects the outcome and the call object becomes reusable. */
enum cc_status cc_call_finish(struct cc_call *call);
/* What ICancelMethodCalls::TestCancel reports. */
enum cc_status cc_call_test(const struct cc_call *call);

/*
 * Life of one run of a call on a worker fiber (runner.c), seen by the fiber
 * and by its thread:
 *
 *   MARSHALING --request filled--> BUFFERED --its SendReceive--> SENDING
 *   SENDING --Wine waits for the reply: the fiber parks--> PARKED
 *   PARKED --resumed, Wine's wait returns--> SENDING
 *   PARKED --resumed to wait itself--> WAITING --abandoned--> PARKED
 *   SENDING, PARKED, WAITING --SendReceive returned--> RECEIVED
 *   MARSHALING, BUFFERED, SENDING, RECEIVED --the body returned--> DONE
 *
 * A proxy method (an asynchronous call) starts in MARSHALING; a task (a
 * synchronous call's SendReceive) starts in SENDING.  The flags beside the
 * phase change from any thread; the phase only on the run's own thread.
 */
enum cc_run_phase
{
    CC_RUN_MARSHALING = 0,
    CC_RUN_BUFFERED,
    CC_RUN_SENDING,
    CC_RUN_PARKED,
    CC_RUN_WAITING,
    CC_RUN_RECEIVED,
    CC_RUN_DONE,
    CC_RUN_PHASES
};

#define CC_RUN_BIT(phase)   (1u << (phase))
#define CC_RUN_PHASE_MASK   0xff
#define CC_RUN_REPLIED      0x0100  /* what the parked wait waits for was signalled (and taken) */
#define CC_RUN_DISCARD      0x0200  /* cancelled or abandoned: the reply is not delivered */
#define CC_RUN_HAS_PARKED   0x0400  /* it parked once: the thread went on without it */
#define CC_RUN_INLINE       0x0800  /* resumed to wait for the reply itself */
#define CC_RUN_WATCH        0x1000  /* the pool watches for the reply from the moment it parks */
#define CC_RUN_ACTIVE       0x2000  /* switched to, not yet back */
#define CC_RUN_SENT         0x4000  /* its own request went out */

struct cc_run
{
    int word;           /* phase | flags; accessed only with atomic builtins */
};

void cc_run_init(struct cc_run *run, enum cc_run_phase phase, int flags);
enum cc_run_phase cc_run_phase(const struct cc_run *run);
/* Nonzero if any of flags is set. */
int cc_run_test(const struct cc_run *run, int flags);
void cc_run_set(struct cc_run *run, int flags);
void cc_run_clear(struct cc_run *run, int flags);
/* Moves to 'to' if the phase is one of 'from' (CC_RUN_BIT masks) and the
 * edge exists; 0 on success, -1 (nothing changed) otherwise. */
int cc_run_move(struct cc_run *run, unsigned int from, enum cc_run_phase to);

/* Converts a COM timeout in seconds to milliseconds, saturating below INFINITE. */
unsigned int cc_seconds_to_ms(unsigned long seconds);

/*
 * A thread's stack of cancel objects (CoSetCancelObject pushes, NULL pops;
 * CoGetCancelObject looks at the top).  Items are opaque to the core.
 */
struct cc_stack
{
    void **items;
    size_t count;
    size_t capacity;
};

void cc_stack_init(struct cc_stack *stack);
/* Returns 0, or -1 when memory runs out (the stack is unchanged then). */
int cc_stack_push(struct cc_stack *stack, void *item);
void *cc_stack_pop(struct cc_stack *stack);
void *cc_stack_top(const struct cc_stack *stack);
void cc_stack_free(struct cc_stack *stack);

/*
 * Threads by id: an intrusive hash table so that another thread can find a
 * thread's state (CoCancelCall(tid), CoGetCancelObject(tid)).  The engine
 * embeds a node in each per-thread record and serialises access.
 */
struct cc_thread_node
{
    unsigned long tid;
    struct cc_thread_node *next;
};

#define CC_THREAD_BUCKETS 64

struct cc_thread_table
{
    struct cc_thread_node *buckets[CC_THREAD_BUCKETS];
    size_t count;
};

void cc_table_init(struct cc_thread_table *table);
/* Returns -1 if a node with the same tid is already present. */
int cc_table_insert(struct cc_thread_table *table, struct cc_thread_node *node);
struct cc_thread_node *cc_table_find(const struct cc_thread_table *table, unsigned long tid);
/* Returns 0 if the node was removed, -1 if it was not in the table. */
int cc_table_remove(struct cc_thread_table *table, struct cc_thread_node *node);

#endif /* COCANCEL_CORE_H */
