/*
 * The platform-free core of cocancel: call state machine, cancel-object
 * stack, thread table.  See core.h.
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

/* Moves from the state in *word to state 'to', keeping the flags; on failure
 * *word is refreshed with the current word. */
static int cc_call_move(struct cc_call *call, int *word, enum cc_state to)
{
    int next = (*word & ~CC_CALL_STATE_MASK) | to;

    return __atomic_compare_exchange_n(&call->word, word, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

enum cc_status cc_call_begin(struct cc_call *call, int cancellable)
{
    int word = cc_call_word(call);

    while ((word & CC_CALL_STATE_MASK) == CC_IDLE)
    {
        int next = CC_PENDING | (cancellable ? CC_CALL_CANCELLABLE : 0);

        if (__atomic_compare_exchange_n(&call->word, &word, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return CC_OK;
    }
    return CC_E_PENDING;
}

enum cc_status cc_call_cancel(struct cc_call *call, int grace)
{
    int word = cc_call_word(call);

    for (;;)
    {
        switch (word & CC_CALL_STATE_MASK)
        {
        case CC_CANCELLED:
            return CC_OK;
        case CC_PENDING:
            if (!(word & CC_CALL_CANCELLABLE)) return CC_E_DISABLED;
            if (cc_call_move(call, &word, grace ? CC_CANCELLING : CC_CANCELLED)) return CC_OK;
            break;
        case CC_CANCELLING:
            /* A second request without grace abandons the call at once. */
            if (grace || cc_call_move(call, &word, CC_CANCELLED)) return CC_OK;
            break;
        default:
            return CC_E_COMPLETE;
        }
    }
}

enum cc_status cc_call_abort(struct cc_call *call)
{
    int word = cc_call_word(call);

    for (;;)
    {
        switch (word & CC_CALL_STATE_MASK)
        {
        case CC_CANCELLED:
            return CC_OK;
        case CC_PENDING:
        case CC_CANCELLING:
            if (cc_call_move(call, &word, CC_CANCELLED)) return CC_OK;
            break;
        default:
            return CC_E_COMPLETE;
        }
    }
}

enum cc_status cc_call_expire(struct cc_call *call)
{
    int word = cc_call_word(call);

    for (;;)
    {
        switch (word & CC_CALL_STATE_MASK)
        {
        case CC_CANCELLED:
            return CC_OK;
        case CC_CANCELLING:
            if (cc_call_move(call, &word, CC_CANCELLED)) return CC_OK;
            break;
        default:
            return CC_E_COMPLETE;
        }
    }
}

enum cc_status cc_call_complete(struct cc_call *call)
{
    int word = cc_call_word(call);

    for (;;)
    {
        switch (word & CC_CALL_STATE_MASK)
        {
        case CC_PENDING:
        case CC_CANCELLING:
            if (cc_call_move(call, &word, CC_COMPLETE)) return CC_OK;
            break;
        case CC_CANCELLED:
            return CC_E_CANCELLED;
        default:
            return CC_E_COMPLETE;
        }
    }
}

enum cc_status cc_call_finish(struct cc_call *call)
{
    int word = cc_call_word(call);

    for (;;)
    {
        switch (word & CC_CALL_STATE_MASK)
        {
        case CC_COMPLETE:
            if (cc_call_move(call, &word, CC_IDLE)) return CC_OK;
            break;
        case CC_CANCELLED:
            if (cc_call_move(call, &word, CC_IDLE)) return CC_E_CANCELLED;
            break;
        case CC_PENDING:
        case CC_CANCELLING:
            return CC_E_PENDING;
        default:
            return CC_E_COMPLETE;
        }
    }
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
