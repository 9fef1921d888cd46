/*
 * Host unit tests of cocancel's platform-free core (dlls/cocancel/core.c).
 * Built with -fsanitize=address,undefined by "make check".
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <pthread.h>
#include <cmocka.h>

#include "core.h"

static void begin_pending(struct cc_call *call, int cancellable)
{
    cc_call_init(call);
    assert_int_equal(cc_call_begin(call, cancellable), CC_OK);
    assert_int_equal(cc_call_state(call), CC_PENDING);
}

static void test_call_completes_normally(void **state)
{
    struct cc_call call;

    (void)state;
    begin_pending(&call, 1);
    assert_int_equal(cc_call_test(&call), CC_E_PENDING);
    assert_int_equal(cc_call_complete(&call), CC_OK);
    assert_int_equal(cc_call_state(&call), CC_COMPLETE);
    /* Not yet finished: a new call must wait. */
    assert_int_equal(cc_call_begin(&call, 1), CC_E_PENDING);
    assert_int_equal(cc_call_cancel(&call, 0), CC_E_COMPLETE);
    assert_int_equal(cc_call_finish(&call), CC_OK);
    assert_int_equal(cc_call_state(&call), CC_IDLE);
    /* Reusable after finish; finishing twice reports no call. */
    assert_int_equal(cc_call_finish(&call), CC_E_COMPLETE);
    assert_int_equal(cc_call_begin(&call, 0), CC_OK);
}

static void test_call_idle_answers(void **state)
{
    struct cc_call call;

    (void)state;
    cc_call_init(&call);
    assert_int_equal(cc_call_finish(&call), CC_E_COMPLETE);
    assert_int_equal(cc_call_cancel(&call, 0), CC_E_COMPLETE);
    assert_int_equal(cc_call_complete(&call), CC_E_COMPLETE);
    assert_int_equal(cc_call_expire(&call), CC_E_COMPLETE);
    assert_int_equal(cc_call_test(&call), CC_E_PENDING);
}

static void test_call_cancel_at_once(void **state)
{
    struct cc_call call;

    (void)state;
    begin_pending(&call, 1);
    assert_int_equal(cc_call_cancel(&call, 0), CC_OK);
    assert_int_equal(cc_call_state(&call), CC_CANCELLED);
    assert_int_equal(cc_call_test(&call), CC_E_CANCELLED);
    /* A repeated cancel answers "already cancelled"; Begin is refused until Finish. */
    assert_int_equal(cc_call_cancel(&call, 0), CC_E_CANCELLED);
    assert_int_equal(cc_call_cancel(&call, 2), CC_E_CANCELLED);
    assert_int_equal(cc_call_begin(&call, 1), CC_E_PENDING);
    /* The late reply is to be discarded. */
    assert_int_equal(cc_call_complete(&call), CC_E_CANCELLED);
    assert_int_equal(cc_call_finish(&call), CC_E_CANCELLED);
    assert_int_equal(cc_call_state(&call), CC_IDLE);
    assert_int_equal(cc_call_begin(&call, 1), CC_OK);
}

static void test_call_cancel_disabled(void **state)
{
    struct cc_call call;

    (void)state;
    begin_pending(&call, 0);
    assert_false(cc_call_cancellable(&call));
    assert_int_equal(cc_call_cancel(&call, 0), CC_E_DISABLED);
    assert_int_equal(cc_call_cancel(&call, 5), CC_E_DISABLED);
    assert_int_equal(cc_call_state(&call), CC_PENDING);
    assert_int_equal(cc_call_complete(&call), CC_OK);
    assert_int_equal(cc_call_finish(&call), CC_OK);
    /* The flag belongs to each call, not to the object. */
    assert_int_equal(cc_call_begin(&call, 1), CC_OK);
    assert_true(cc_call_cancellable(&call));
}

static void test_call_grace_server_in_time(void **state)
{
    struct cc_call call;

    (void)state;
    begin_pending(&call, 1);
    assert_int_equal(cc_call_cancel(&call, 1), CC_OK);
    assert_int_equal(cc_call_state(&call), CC_CANCELLING);
    assert_int_equal(cc_call_test(&call), CC_E_CANCELLED);
    /* The server finished within the grace period: the reply is delivered. */
    assert_int_equal(cc_call_complete(&call), CC_OK);
    assert_int_equal(cc_call_expire(&call), CC_E_COMPLETE);
    assert_int_equal(cc_call_finish(&call), CC_OK);
}

static void test_call_grace_expires(void **state)
{
    struct cc_call call;

    (void)state;
    begin_pending(&call, 1);
    assert_int_equal(cc_call_cancel(&call, 3), CC_OK);
    assert_int_equal(cc_call_cancel(&call, 3), CC_E_CANCELLED);
    assert_int_equal(cc_call_state(&call), CC_CANCELLING);
    assert_int_equal(cc_call_finish(&call), CC_E_PENDING);
    assert_int_equal(cc_call_expire(&call), CC_OK);
    assert_int_equal(cc_call_expire(&call), CC_OK);
    assert_int_equal(cc_call_complete(&call), CC_E_CANCELLED);
    assert_int_equal(cc_call_finish(&call), CC_E_CANCELLED);
}

static void test_call_cancel_without_grace_cuts_grace(void **state)
{
    struct cc_call call;

    (void)state;
    begin_pending(&call, 1);
    assert_int_equal(cc_call_cancel(&call, 1), CC_OK);
    assert_int_equal(cc_call_cancel(&call, 0), CC_OK);
    assert_int_equal(cc_call_state(&call), CC_CANCELLED);
}

static void test_call_abort_ignores_flag(void **state)
{
    struct cc_call call;

    (void)state;
    begin_pending(&call, 0);
    assert_int_equal(cc_call_cancel(&call, 0), CC_E_DISABLED);
    assert_int_equal(cc_call_abort(&call), CC_OK);
    assert_int_equal(cc_call_state(&call), CC_CANCELLED);
    assert_int_equal(cc_call_abort(&call), CC_OK);
    assert_int_equal(cc_call_complete(&call), CC_E_CANCELLED);
    assert_int_equal(cc_call_finish(&call), CC_E_CANCELLED);
    assert_int_equal(cc_call_abort(&call), CC_E_COMPLETE);
    begin_pending(&call, 1);
    assert_int_equal(cc_call_complete(&call), CC_OK);
    assert_int_equal(cc_call_abort(&call), CC_E_COMPLETE);
}

struct race
{
    struct cc_call call;
    pthread_barrier_t barrier;
    enum cc_status cancel_status, complete_status;
};

static void *race_cancel(void *arg)
{
    struct race *race = arg;

    pthread_barrier_wait(&race->barrier);
    race->cancel_status = cc_call_cancel(&race->call, 0);
    return NULL;
}

static void *race_complete(void *arg)
{
    struct race *race = arg;

    pthread_barrier_wait(&race->barrier);
    race->complete_status = cc_call_complete(&race->call);
    return NULL;
}

/* Cancel against completion from two threads: exactly one of them wins, and
 * Finish reports the winner's outcome. */
static void test_call_race_cancel_complete(void **state)
{
    unsigned int i, cancelled = 0, completed = 0;
    struct race race;

    (void)state;
    for (i = 0; i < 2000; i++)
    {
        pthread_t a, b;

        begin_pending(&race.call, 1);
        pthread_barrier_init(&race.barrier, NULL, 2);
        pthread_create(&a, NULL, race_cancel, &race);
        pthread_create(&b, NULL, race_complete, &race);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        pthread_barrier_destroy(&race.barrier);
        if (race.cancel_status == CC_OK)
        {
            assert_int_equal(race.complete_status, CC_E_CANCELLED);
            assert_int_equal(cc_call_finish(&race.call), CC_E_CANCELLED);
            cancelled++;
        }
        else
        {
            assert_int_equal(race.cancel_status, CC_E_COMPLETE);
            assert_int_equal(race.complete_status, CC_OK);
            assert_int_equal(cc_call_finish(&race.call), CC_OK);
            completed++;
        }
        assert_int_equal(cc_call_state(&race.call), CC_IDLE);
    }
    assert_int_equal(cancelled + completed, 2000);
}

static void test_seconds_to_ms(void **state)
{
    (void)state;
    assert_int_equal(cc_seconds_to_ms(0), 0);
    assert_int_equal(cc_seconds_to_ms(1), 1000);
    assert_int_equal(cc_seconds_to_ms(4294966), 4294966000u);
    assert_int_equal(cc_seconds_to_ms(4294967), 0xfffffffeu);
    assert_int_equal(cc_seconds_to_ms(0xffffffffu), 0xfffffffeu);
}

static void test_stack(void **state)
{
    struct cc_stack stack;
    int values[100];
    int i;

    (void)state;
    cc_stack_init(&stack);
    assert_null(cc_stack_top(&stack));
    assert_null(cc_stack_pop(&stack));
    for (i = 0; i < 100; i++)
    {
        assert_int_equal(cc_stack_push(&stack, &values[i]), 0);
        assert_ptr_equal(cc_stack_top(&stack), &values[i]);
    }
    assert_int_equal(stack.count, 100);
    for (i = 99; i >= 0; i--) assert_ptr_equal(cc_stack_pop(&stack), &values[i]);
    assert_null(cc_stack_pop(&stack));
    assert_int_equal(cc_stack_push(&stack, NULL), 0);
    assert_int_equal(stack.count, 1);
    cc_stack_free(&stack);
    assert_int_equal(stack.count, 0);
    assert_null(stack.items);
}

static void test_table(void **state)
{
    struct cc_thread_node nodes[300], dup;
    struct cc_thread_table table;
    unsigned long i;

    (void)state;
    cc_table_init(&table);
    assert_null(cc_table_find(&table, 4));
    for (i = 0; i < 300; i++)
    {
        nodes[i].tid = 4 * (i + 1);
        assert_int_equal(cc_table_insert(&table, &nodes[i]), 0);
    }
    assert_int_equal(table.count, 300);
    dup.tid = 8;
    assert_int_equal(cc_table_insert(&table, &dup), -1);
    for (i = 0; i < 300; i++) assert_ptr_equal(cc_table_find(&table, 4 * (i + 1)), &nodes[i]);
    assert_null(cc_table_find(&table, 2));
    assert_null(cc_table_find(&table, 4 * 301));
    /* Remove every other node, then check that the rest are intact. */
    for (i = 0; i < 300; i += 2) assert_int_equal(cc_table_remove(&table, &nodes[i]), 0);
    assert_int_equal(cc_table_remove(&table, &nodes[0]), -1);
    assert_int_equal(table.count, 150);
    for (i = 0; i < 300; i++)
    {
        if (i % 2) assert_ptr_equal(cc_table_find(&table, nodes[i].tid), &nodes[i]);
        else assert_null(cc_table_find(&table, nodes[i].tid));
    }
    assert_int_equal(cc_table_remove(&table, &dup), -1);
}

/* The life of an asynchronous call's run: every edge the engine takes, in order. */
static void test_run_method_life(void **state)
{
    struct cc_run run;

    (void)state;
    cc_run_init(&run, CC_RUN_MARSHALING, CC_RUN_WATCH);
    assert_int_equal(cc_run_phase(&run), CC_RUN_MARSHALING);
    assert_true(cc_run_test(&run, CC_RUN_WATCH));
    assert_false(cc_run_test(&run, CC_RUN_REPLIED | CC_RUN_DISCARD));
    /* A SendReceive before the request was filled is not the run's. */
    assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_BUFFERED), CC_RUN_SENDING), -1);
    assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_MARSHALING), CC_RUN_BUFFERED), 0);
    assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_BUFFERED), CC_RUN_SENDING), 0);
    assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_SENDING), CC_RUN_PARKED), 0);
    /* Finish_ resumes it to wait itself; a cancel parks it again. */
    assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_PARKED), CC_RUN_WAITING), 0);
    assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_WAITING), CC_RUN_PARKED), 0);
    assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_PARKED), CC_RUN_RECEIVED), 0);
    assert_int_equal(cc_run_move(&run, ~0u, CC_RUN_DONE), 0);
    assert_int_equal(cc_run_phase(&run), CC_RUN_DONE);
    /* Nothing leaves DONE: a finished run is never resumed into its body again. */
    assert_int_equal(cc_run_move(&run, ~0u, CC_RUN_SENDING), -1);
    assert_int_equal(cc_run_move(&run, ~0u, CC_RUN_PARKED), -1);
    assert_true(cc_run_test(&run, CC_RUN_WATCH));
}

/* A task (a synchronous call) parks and resumes any number of times, then ends. */
static void test_run_task_life(void **state)
{
    struct cc_run run;
    int i;

    (void)state;
    cc_run_init(&run, CC_RUN_SENDING, 0);
    for (i = 0; i < 3; i++)
    {
        assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_SENDING), CC_RUN_PARKED), 0);
        assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_PARKED), CC_RUN_SENDING), 0);
    }
    assert_int_equal(cc_run_move(&run, ~0u, CC_RUN_DONE), 0);
}

/* Edges that do not exist are refused and change nothing, whatever 'from' allows. */
static void test_run_refuses_missing_edges(void **state)
{
    static const struct { enum cc_run_phase from, to; } missing[] =
    {
        { CC_RUN_MARSHALING, CC_RUN_SENDING },
        { CC_RUN_MARSHALING, CC_RUN_PARKED },
        { CC_RUN_BUFFERED, CC_RUN_PARKED },
        { CC_RUN_SENDING, CC_RUN_WAITING },
        { CC_RUN_PARKED, CC_RUN_DONE },
        { CC_RUN_WAITING, CC_RUN_DONE },
        { CC_RUN_WAITING, CC_RUN_SENDING },
        { CC_RUN_RECEIVED, CC_RUN_SENDING },
        { CC_RUN_DONE, CC_RUN_MARSHALING },
    };
    struct cc_run run;
    unsigned int i;

    (void)state;
    for (i = 0; i < sizeof(missing) / sizeof(missing[0]); i++)
    {
        cc_run_init(&run, missing[i].from, CC_RUN_SENT);
        assert_int_equal(cc_run_move(&run, ~0u, missing[i].to), -1);
        assert_int_equal(cc_run_phase(&run), missing[i].from);
        assert_true(cc_run_test(&run, CC_RUN_SENT));
    }
    /* An existing edge from a phase not in 'from' is refused too. */
    cc_run_init(&run, CC_RUN_SENDING, 0);
    assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_BUFFERED), CC_RUN_PARKED), -1);
    assert_int_equal(cc_run_phase(&run), CC_RUN_SENDING);
    assert_int_equal(cc_run_move(&run, ~0u, CC_RUN_PHASES), -1);
}

/* Flags set and cleared never touch the phase, and the phase never touches the flags. */
static void test_run_flags(void **state)
{
    struct cc_run run;

    (void)state;
    cc_run_init(&run, CC_RUN_SENDING, 0);
    cc_run_set(&run, CC_RUN_REPLIED | CC_RUN_DISCARD | CC_RUN_PHASE_MASK);
    assert_int_equal(cc_run_phase(&run), CC_RUN_SENDING);
    assert_true(cc_run_test(&run, CC_RUN_REPLIED));
    assert_true(cc_run_test(&run, CC_RUN_DISCARD));
    cc_run_clear(&run, CC_RUN_REPLIED | CC_RUN_PHASE_MASK);
    assert_int_equal(cc_run_phase(&run), CC_RUN_SENDING);
    assert_false(cc_run_test(&run, CC_RUN_REPLIED));
    assert_true(cc_run_test(&run, CC_RUN_DISCARD));
    assert_int_equal(cc_run_move(&run, CC_RUN_BIT(CC_RUN_SENDING), CC_RUN_RECEIVED), 0);
    assert_true(cc_run_test(&run, CC_RUN_DISCARD));
}

struct run_race
{
    struct cc_run run;
    pthread_barrier_t barrier;
};

static void *race_flags(void *arg)
{
    struct run_race *race = arg;
    int i;

    pthread_barrier_wait(&race->barrier);
    for (i = 0; i < 1000; i++)
    {
        cc_run_set(&race->run, CC_RUN_REPLIED);
        cc_run_clear(&race->run, CC_RUN_REPLIED);
    }
    cc_run_set(&race->run, CC_RUN_DISCARD);
    return NULL;
}

/* Another thread's flags (a reply noted by the pool, a cancel) are never lost to a phase move. */
static void test_run_race_flags_and_moves(void **state)
{
    struct run_race race;
    pthread_t other;
    int i;

    (void)state;
    cc_run_init(&race.run, CC_RUN_SENDING, 0);
    pthread_barrier_init(&race.barrier, NULL, 2);
    pthread_create(&other, NULL, race_flags, &race);
    pthread_barrier_wait(&race.barrier);
    for (i = 0; i < 1000; i++)
    {
        assert_int_equal(cc_run_move(&race.run, CC_RUN_BIT(CC_RUN_SENDING), CC_RUN_PARKED), 0);
        assert_int_equal(cc_run_move(&race.run, CC_RUN_BIT(CC_RUN_PARKED), CC_RUN_SENDING), 0);
    }
    pthread_join(other, NULL);
    pthread_barrier_destroy(&race.barrier);
    assert_int_equal(cc_run_phase(&race.run), CC_RUN_SENDING);
    assert_true(cc_run_test(&race.run, CC_RUN_DISCARD));
    assert_false(cc_run_test(&race.run, CC_RUN_REPLIED));
}

int main(void)
{
    const struct CMUnitTest tests[] =
    {
        cmocka_unit_test(test_call_completes_normally),
        cmocka_unit_test(test_call_idle_answers),
        cmocka_unit_test(test_call_cancel_at_once),
        cmocka_unit_test(test_call_cancel_disabled),
        cmocka_unit_test(test_call_grace_server_in_time),
        cmocka_unit_test(test_call_grace_expires),
        cmocka_unit_test(test_call_cancel_without_grace_cuts_grace),
        cmocka_unit_test(test_call_abort_ignores_flag),
        cmocka_unit_test(test_call_race_cancel_complete),
        cmocka_unit_test(test_seconds_to_ms),
        cmocka_unit_test(test_stack),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_run_method_life),
        cmocka_unit_test(test_run_task_life),
        cmocka_unit_test(test_run_refuses_missing_edges),
        cmocka_unit_test(test_run_flags),
        cmocka_unit_test(test_run_race_flags_and_moves),
    };

    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
