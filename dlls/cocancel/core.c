/*
 * The platform-free core of cocancel: the call and run state machines, the
 * cancel-object stack, the thread table.  See core.h.
 */

#include <stdlib.h>
#include "core.h"

void cc_call_init(struct cc_call *call)
{
    __atomic_store_n(&call->word, CC_IDLE, __ATOMIC_RELEASE);
}

static int cc_call_word(const struct cc_call *call)
{
    return __atomic_load_n(&call->word, __ATOMIC_ACQUIRE);
}

enum cc_state cc_call_state(const struct cc_call *call)
{
    return cc_call_word(call) & CC_CALL_STATE_MASK;
}

int cc_call_cancellable(const struct cc_call *call)
{
    return (cc_call_word(call) & CC_CALL_CANCELLABLE) != 0;
}

/*
 * One edge of an operation on a call: from each state, the state it goes
 * to (CC_STAY: none) and what the operation answers.  Every operation is a
 * table of these, applied by cc_call_step() in one compare-and-swap, so
 * concurrent operations each see one consistent state.
 */
#define CC_STAY (-1)

struct cc_edge
{
    signed char to;
    unsigned char status;
    unsigned char needs_cancellable;    /* CC_E_DISABLED unless the call was made cancellable */
};

#define CC_STATES (CC_COMPLETE + 1)

/* Applies edges[state]; a move into CC_PENDING starts a call and replaces the flags with 'flags'. */
static enum cc_status cc_call_step(struct cc_call *call, const struct cc_edge edges[CC_STATES], int flags)
{
    int word = cc_call_word(call);

    for (;;)
    {
        const struct cc_edge *edge = &edges[word & CC_CALL_STATE_MASK];
        int next;

        if (edge->needs_cancellable && !(word & CC_CALL_CANCELLABLE)) return CC_E_DISABLED;
        if (edge->to == CC_STAY) return edge->status;
        next = (edge->to == CC_PENDING ? flags : word & ~CC_CALL_STATE_MASK) | edge->to;
        if (__atomic_compare_exchange_n(&call->word, &word, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return edge->status;
    }
}

enum cc_status cc_call_begin(struct cc_call *call, int cancellable)
{
    static const struct cc_edge begin[CC_STATES] =
    {
        [CC_IDLE]       = { CC_PENDING,  CC_OK },
        [CC_PENDING]    = { CC_STAY,     CC_E_PENDING },
        [CC_CANCELLING] = { CC_STAY,     CC_E_PENDING },
        [CC_CANCELLED]  = { CC_STAY,     CC_E_PENDING },
        [CC_COMPLETE]   = { CC_STAY,     CC_E_PENDING },
    };

    return cc_call_step(call, begin, cancellable ? CC_CALL_CANCELLABLE : 0);
}

enum cc_status cc_call_cancel(struct cc_call *call, int grace)
{
    static const struct cc_edge cancel_now[CC_STATES] =
    {
        [CC_IDLE]       = { CC_STAY,      CC_E_COMPLETE },
        [CC_PENDING]    = { CC_CANCELLED, CC_OK, 1 },
        /* A second request without grace abandons the call at once. */
        [CC_CANCELLING] = { CC_CANCELLED, CC_OK },
        /* "The call was already canceled" (CoCancelCall's documentation). */
        [CC_CANCELLED]  = { CC_STAY,      CC_E_CANCELLED },
        [CC_COMPLETE]   = { CC_STAY,      CC_E_COMPLETE },
    };
    static const struct cc_edge cancel_with_grace[CC_STATES] =
    {
        [CC_IDLE]       = { CC_STAY,       CC_E_COMPLETE },
        [CC_PENDING]    = { CC_CANCELLING, CC_OK, 1 },
        [CC_CANCELLING] = { CC_STAY,       CC_E_CANCELLED },
        [CC_CANCELLED]  = { CC_STAY,       CC_E_CANCELLED },
        [CC_COMPLETE]   = { CC_STAY,       CC_E_COMPLETE },
    };

    return cc_call_step(call, grace ? cancel_with_grace : cancel_now, 0);
}

enum cc_status cc_call_abort(struct cc_call *call)
{
    static const struct cc_edge abort_call[CC_STATES] =
    {
        [CC_IDLE]       = { CC_STAY,      CC_E_COMPLETE },
        [CC_PENDING]    = { CC_CANCELLED, CC_OK },
        [CC_CANCELLING] = { CC_CANCELLED, CC_OK },
        [CC_CANCELLED]  = { CC_STAY,      CC_OK },
        [CC_COMPLETE]   = { CC_STAY,      CC_E_COMPLETE },
    };

    return cc_call_step(call, abort_call, 0);
}

enum cc_status cc_call_expire(struct cc_call *call)
{
    static const struct cc_edge expire[CC_STATES] =
    {
        [CC_IDLE]       = { CC_STAY,      CC_E_COMPLETE },
        [CC_PENDING]    = { CC_STAY,      CC_E_COMPLETE },
        [CC_CANCELLING] = { CC_CANCELLED, CC_OK },
        [CC_CANCELLED]  = { CC_STAY,      CC_OK },
        [CC_COMPLETE]   = { CC_STAY,      CC_E_COMPLETE },
    };

    return cc_call_step(call, expire, 0);
}

enum cc_status cc_call_complete(struct cc_call *call)
{
    static const struct cc_edge complete[CC_STATES] =
    {
        [CC_IDLE]       = { CC_STAY,     CC_E_COMPLETE },
        [CC_PENDING]    = { CC_COMPLETE, CC_OK },
        [CC_CANCELLING] = { CC_COMPLETE, CC_OK },
        [CC_CANCELLED]  = { CC_STAY,     CC_E_CANCELLED },
        [CC_COMPLETE]   = { CC_STAY,     CC_E_COMPLETE },
    };

    return cc_call_step(call, complete, 0);
}

enum cc_status cc_call_finish(struct cc_call *call)
{
    static const struct cc_edge finish[CC_STATES] =
    {
        [CC_IDLE]       = { CC_STAY, CC_E_COMPLETE },
        [CC_PENDING]    = { CC_STAY, CC_E_PENDING },
        [CC_CANCELLING] = { CC_STAY, CC_E_PENDING },
        [CC_CANCELLED]  = { CC_IDLE, CC_E_CANCELLED },
        [CC_COMPLETE]   = { CC_IDLE, CC_OK },
    };

    return cc_call_step(call, finish, 0);
}

enum cc_status cc_call_test(const struct cc_call *call)
{
    enum cc_state state = cc_call_state(call);

    if (state == CC_CANCELLING || state == CC_CANCELLED) return CC_E_CANCELLED;
    return CC_E_PENDING;
}

unsigned int cc_seconds_to_ms(unsigned long seconds)
{
    /* 0xffffffff is INFINITE; a finite request must stay finite. */
    const unsigned int limit = 0xfffffffeu;

    if (seconds >= limit / 1000) return limit;
    return (unsigned int)seconds * 1000;
}

/* Which phases each phase may move to (see core.h). */
static const unsigned int cc_run_edges[CC_RUN_PHASES] =
{
    [CC_RUN_MARSHALING] = CC_RUN_BIT(CC_RUN_BUFFERED) | CC_RUN_BIT(CC_RUN_DONE),
    [CC_RUN_BUFFERED]   = CC_RUN_BIT(CC_RUN_SENDING) | CC_RUN_BIT(CC_RUN_DONE),
    [CC_RUN_SENDING]    = CC_RUN_BIT(CC_RUN_PARKED) | CC_RUN_BIT(CC_RUN_RECEIVED) | CC_RUN_BIT(CC_RUN_DONE),
    [CC_RUN_PARKED]     = CC_RUN_BIT(CC_RUN_SENDING) | CC_RUN_BIT(CC_RUN_WAITING) | CC_RUN_BIT(CC_RUN_RECEIVED),
    [CC_RUN_WAITING]    = CC_RUN_BIT(CC_RUN_PARKED) | CC_RUN_BIT(CC_RUN_RECEIVED),
    [CC_RUN_RECEIVED]   = CC_RUN_BIT(CC_RUN_DONE),
    [CC_RUN_DONE]       = 0,
};

static int cc_run_word(const struct cc_run *run)
{
    return __atomic_load_n(&run->word, __ATOMIC_ACQUIRE);
}

void cc_run_init(struct cc_run *run, enum cc_run_phase phase, int flags)
{
    __atomic_store_n(&run->word, (flags & ~CC_RUN_PHASE_MASK) | phase, __ATOMIC_RELEASE);
}

enum cc_run_phase cc_run_phase(const struct cc_run *run)
{
    return cc_run_word(run) & CC_RUN_PHASE_MASK;
}

int cc_run_test(const struct cc_run *run, int flags)
{
    return (cc_run_word(run) & flags) != 0;
}

void cc_run_set(struct cc_run *run, int flags)
{
    __atomic_fetch_or(&run->word, flags & ~CC_RUN_PHASE_MASK, __ATOMIC_ACQ_REL);
}

void cc_run_clear(struct cc_run *run, int flags)
{
    __atomic_fetch_and(&run->word, ~(flags & ~CC_RUN_PHASE_MASK), __ATOMIC_ACQ_REL);
}

int cc_run_move(struct cc_run *run, unsigned int from, enum cc_run_phase to)
{
    int word = cc_run_word(run);

    if ((unsigned int)to >= CC_RUN_PHASES) return -1;
    for (;;)
    {
        unsigned int phase = word & CC_RUN_PHASE_MASK;

        if (phase >= CC_RUN_PHASES || !(from & CC_RUN_BIT(phase)) || !(cc_run_edges[phase] & CC_RUN_BIT(to)))
            return -1;
        if (__atomic_compare_exchange_n(&run->word, &word, (word & ~CC_RUN_PHASE_MASK) | to, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return 0;
    }
}

void cc_stack_init(struct cc_stack *stack)
{
    stack->items = NULL;
    stack->count = stack->capacity = 0;
}

int cc_stack_push(struct cc_stack *stack, void *item)
{
    if (stack->count == stack->capacity)
    {
        size_t capacity = stack->capacity ? stack->capacity * 2 : 4;
        void **items;

        if (capacity > ((size_t)-1) / sizeof(*items)) return -1;
        if (!(items = realloc(stack->items, capacity * sizeof(*items)))) return -1;
        stack->items = items;
        stack->capacity = capacity;
    }
    stack->items[stack->count++] = item;
    return 0;
}

void *cc_stack_pop(struct cc_stack *stack)
{
    if (!stack->count) return NULL;
    return stack->items[--stack->count];
}

void *cc_stack_top(const struct cc_stack *stack)
{
    if (!stack->count) return NULL;
    return stack->items[stack->count - 1];
}

void cc_stack_free(struct cc_stack *stack)
{
    free(stack->items);
    cc_stack_init(stack);
}

static size_t cc_bucket(unsigned long tid)
{
    /* Thread ids are multiples of 4 on Windows and Wine; drop those bits. */
    return (size_t)((tid >> 2) ^ (tid >> 9)) % CC_THREAD_BUCKETS;
}

void cc_table_init(struct cc_thread_table *table)
{
    size_t i;

    for (i = 0; i < CC_THREAD_BUCKETS; i++) table->buckets[i] = NULL;
    table->count = 0;
}

int cc_table_insert(struct cc_thread_table *table, struct cc_thread_node *node)
{
    size_t bucket = cc_bucket(node->tid);

    if (cc_table_find(table, node->tid)) return -1;
    node->next = table->buckets[bucket];
    table->buckets[bucket] = node;
    table->count++;
    return 0;
}

struct cc_thread_node *cc_table_find(const struct cc_thread_table *table, unsigned long tid)
{
    struct cc_thread_node *node;

    for (node = table->buckets[cc_bucket(tid)]; node; node = node->next)
        if (node->tid == tid) return node;
    return NULL;
}

int cc_table_remove(struct cc_thread_table *table, struct cc_thread_node *node)
{
    struct cc_thread_node **link;

    for (link = &table->buckets[cc_bucket(node->tid)]; *link; link = &(*link)->next)
    {
        if (*link != node) continue;
        *link = node->next;
        node->next = NULL;
        table->count--;
        return 0;
    }
    return -1;
}
