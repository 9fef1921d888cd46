/*
 * Checks of the test harness itself (include/wine/test.h), driven by
 * tools/run_tests.sh, which compares the output and exit codes with what
 * Wine's harness prints.  "passing" must pass; "failing" must report exactly
 * two failures (one failed ok, one success inside a todo block).
 */

#include <windows.h>
#include "wine/test.h"

START_TEST(passing)
{
    ok(1, "a passing check\n");
    todo_wine ok(!winetest_platform_is_wine, "a todo that fails on Wine\n");
    todo_if(0) ok(1, "todo_if(0) is an ordinary check\n");
    ok(!broken(1) || !winetest_platform_is_wine, "broken() is false on Wine\n");
    winetest_push_context("ctx %d", 1);
    ok(1, "inside a context\n");
    winetest_pop_context();
    skip("a skipped part\n");
    trace("a trace line\n");
}

START_TEST(failing)
{
    winetest_push_context("ctx %d", 2);
    ok(0, "an expected failure\n");
    winetest_pop_context();
    todo_if(1) ok(1, "an expected success inside todo\n");
}
