/*
 * cocancel's conformance-test harness.
 *
 * This header gives conformance tests the dialect of Wine's test suite
 * (START_TEST, ok, todo_wine, todo_if, broken, skip, win_skip, trace,
 * winetest_push_context ...), so the very same test sources also build inside
 * a Wine tree against Wine's own harness.  It is written for this project; it
 * only mirrors the observable behaviour (output lines, exit code, options).
 *
 * One executable holds every test of a directory.  Its generated testlist.c
 * defines STANDALONE before including this header, which then provides the
 * implementation and main():
 *
 *   prog.exe              run every test
 *   prog.exe NAME [ARGS]  run one test (child processes use ARGS)
 *   prog.exe --list       list the tests
 *
 * The exit code is the number of failures (at most 255).
 */

#ifndef COCANCEL_WINE_TEST_H
#define COCANCEL_WINE_TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windef.h>
#include <winbase.h>

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif

#ifdef __GNUC__
#define WINETEST_PRINTF_ATTR(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define WINETEST_PRINTF_ATTR(fmt, args)
#endif

extern int winetest_debug;
extern int winetest_interactive;
extern int winetest_platform_is_wine;
extern const char *winetest_platform;

void winetest_set_location(const char *file, int line);
void winetest_ok(int condition, const char *msg, ...) WINETEST_PRINTF_ATTR(2, 3);
void winetest_skip(const char *msg, ...) WINETEST_PRINTF_ATTR(1, 2);
void winetest_win_skip(const char *msg, ...) WINETEST_PRINTF_ATTR(1, 2);
void winetest_trace(const char *msg, ...) WINETEST_PRINTF_ATTR(1, 2);
void winetest_start_todo(int is_todo);
int winetest_loop_todo(void);
void winetest_end_todo(void);
void winetest_push_context(const char *fmt, ...) WINETEST_PRINTF_ATTR(1, 2);
void winetest_pop_context(void);
int winetest_get_mainargs(char ***pargv);
void winetest_wait_child_process(HANDLE process);
const char *wine_dbgstr_guid(const GUID *guid);
const char *wine_dbgstr_wn(const WCHAR *str, int len);
const char *wine_dbgstr_an(const char *str, int len);
static inline const char *wine_dbgstr_w(const WCHAR *str) { return wine_dbgstr_wn(str, -1); }
static inline const char *wine_dbgstr_a(const char *str) { return wine_dbgstr_an(str, -1); }

#define START_TEST(name) void func_##name(void)

#define ok_(file, line)       (winetest_set_location(file, line), 0) ? (void)0 : winetest_ok
#define skip_(file, line)     (winetest_set_location(file, line), 0) ? (void)0 : winetest_skip
#define win_skip_(file, line) (winetest_set_location(file, line), 0) ? (void)0 : winetest_win_skip
#define trace_(file, line)    (winetest_set_location(file, line), 0) ? (void)0 : winetest_trace

#define ok       ok_(__FILE__, __LINE__)
#define skip     skip_(__FILE__, __LINE__)
#define win_skip win_skip_(__FILE__, __LINE__)
#define trace    trace_(__FILE__, __LINE__)

#define todo_if(is_todo) for (winetest_start_todo(is_todo); winetest_loop_todo(); winetest_end_todo())
#define todo_wine             todo_if(winetest_platform_is_wine)
#define todo_wine_if(is_todo) todo_if((is_todo) && winetest_platform_is_wine)

/* A result that Windows is allowed to give but Wine never is. */
#define broken(cond) (!winetest_platform_is_wine && (cond))

#ifdef STANDALONE

struct test
{
    const char *name;
    void (*func)(void);
};

extern const struct test winetest_testlist[];

int winetest_debug = 1;
int winetest_interactive = 0;
int winetest_platform_is_wine = 0;
const char *winetest_platform = "windows";

#define WINETEST_MAX_CONTEXT 8

struct winetest_thread_data
{
    const char *file;
    int line;
    unsigned int todo_level;   /* one bit per nested todo block, innermost lowest */
    int todo_do_loop;
    unsigned int context_count;
    char context[WINETEST_MAX_CONTEXT][128];
    char str_buffer[4][512];   /* rotating buffers for wine_dbgstr_* */
    unsigned int str_index;
};

static DWORD winetest_tls = TLS_OUT_OF_INDEXES;
static CRITICAL_SECTION winetest_print_cs;
static LONG winetest_successes, winetest_failures, winetest_todos, winetest_skips;
static int winetest_argc;
static char **winetest_argv;
static const char *winetest_current_test = "?";

static struct winetest_thread_data *winetest_data(void)
{
    struct winetest_thread_data *data = TlsGetValue(winetest_tls);

    if (!data)
    {
        data = calloc(1, sizeof(*data));
        if (!data) abort();
        data->file = "?";
        TlsSetValue(winetest_tls, data);
    }
    return data;
}

static const char *winetest_basename(const char *file)
{
    const char *p, *base = file;

    for (p = file; *p; p++) if (*p == '/' || *p == '\\') base = p + 1;
    return base;
}

/* Prints one line: "file.c:line: [contexts: ]<kind><message>". */
static void winetest_vprint(const char *kind, const char *msg, va_list args)
{
    struct winetest_thread_data *data = winetest_data();
    unsigned int i;

    EnterCriticalSection(&winetest_print_cs);
    printf("%s:%d: ", winetest_basename(data->file), data->line);
    for (i = 0; i < data->context_count && i < WINETEST_MAX_CONTEXT; i++)
        printf("%s: ", data->context[i]);
    printf("%s", kind);
    vprintf(msg, args);
    fflush(stdout);
    LeaveCriticalSection(&winetest_print_cs);
}

void winetest_set_location(const char *file, int line)
{
    struct winetest_thread_data *data = winetest_data();

    data->file = file;
    data->line = line;
}

void winetest_ok(int condition, const char *msg, ...)
{
    struct winetest_thread_data *data = winetest_data();
    va_list args;

    va_start(args, msg);
    if (data->todo_level & 1)
    {
        if (condition)
        {
            winetest_vprint("Test succeeded inside todo block: ", msg, args);
            InterlockedIncrement(&winetest_failures);
        }
        else
        {
            if (winetest_debug > 0) winetest_vprint("Test marked todo: ", msg, args);
            InterlockedIncrement(&winetest_todos);
        }
    }
    else if (!condition)
    {
        winetest_vprint("Test failed: ", msg, args);
        InterlockedIncrement(&winetest_failures);
    }
    else
    {
        if (winetest_debug > 1) winetest_vprint("Test succeeded: ", msg, args);
        InterlockedIncrement(&winetest_successes);
    }
    va_end(args);
}

void winetest_skip(const char *msg, ...)
{
    va_list args;

    va_start(args, msg);
    winetest_vprint("Tests skipped: ", msg, args);
    va_end(args);
    InterlockedIncrement(&winetest_skips);
}

/* Skipping is only legitimate on old Windows versions; under Wine it is a failure. */
void winetest_win_skip(const char *msg, ...)
{
    va_list args;

    va_start(args, msg);
    if (winetest_platform_is_wine)
    {
        winetest_vprint("Test failed: skipped on Wine: ", msg, args);
        InterlockedIncrement(&winetest_failures);
    }
    else
    {
        winetest_vprint("Tests skipped: ", msg, args);
        InterlockedIncrement(&winetest_skips);
    }
    va_end(args);
}

void winetest_trace(const char *msg, ...)
{
    va_list args;

    if (winetest_debug <= 0) return;
    va_start(args, msg);
    winetest_vprint("", msg, args);
    va_end(args);
}

void winetest_start_todo(int is_todo)
{
    struct winetest_thread_data *data = winetest_data();

    data->todo_level = (data->todo_level << 1) | (is_todo != 0);
    data->todo_do_loop = 1;
}

int winetest_loop_todo(void)
{
    struct winetest_thread_data *data = winetest_data();
    int do_loop = data->todo_do_loop;

    data->todo_do_loop = 0;
    return do_loop;
}

void winetest_end_todo(void)
{
    winetest_data()->todo_level >>= 1;
}

void winetest_push_context(const char *fmt, ...)
{
    struct winetest_thread_data *data = winetest_data();
    va_list args;

    if (data->context_count < WINETEST_MAX_CONTEXT)
    {
        va_start(args, fmt);
        vsnprintf(data->context[data->context_count], sizeof(data->context[0]), fmt, args);
        va_end(args);
    }
    data->context_count++;
}

void winetest_pop_context(void)
{
    struct winetest_thread_data *data = winetest_data();

    if (data->context_count) data->context_count--;
}

int winetest_get_mainargs(char ***pargv)
{
    *pargv = winetest_argv;
    return winetest_argc;
}

/* Waits for a child started with winetest_get_mainargs(); its failures become ours. */
void winetest_wait_child_process(HANDLE process)
{
    DWORD exit_code = 1;

    if (WaitForSingleObject(process, 60000) == WAIT_TIMEOUT)
    {
        winetest_ok(0, "child process did not finish within 60 s\n");
        TerminateProcess(process, 1);
        WaitForSingleObject(process, 5000);
        return;
    }
    GetExitCodeProcess(process, &exit_code);
    winetest_ok(exit_code == 0, "child process reported %lu failures\n", exit_code);
}

static char *winetest_str_buffer(void)
{
    struct winetest_thread_data *data = winetest_data();

    return data->str_buffer[data->str_index++ % 4];
}

const char *wine_dbgstr_guid(const GUID *guid)
{
    char *buf;

    if (!guid) return "(null)";
    buf = winetest_str_buffer();
    snprintf(buf, 512, "{%08lx-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x}",
             (unsigned long)guid->Data1, guid->Data2, guid->Data3, guid->Data4[0], guid->Data4[1],
             guid->Data4[2], guid->Data4[3], guid->Data4[4], guid->Data4[5], guid->Data4[6],
             guid->Data4[7]);
    return buf;
}

const char *wine_dbgstr_wn(const WCHAR *str, int len)
{
    char *buf, *p;
    int i;

    if (!str) return "(null)";
    buf = p = winetest_str_buffer();
    *p++ = '"';
    for (i = 0; (len < 0 ? str[i] != 0 : i < len) && p < buf + 500; i++)
        *p++ = (str[i] >= 0x20 && str[i] < 0x7f) ? (char)str[i] : '?';
    *p++ = '"';
    *p = 0;
    return buf;
}

const char *wine_dbgstr_an(const char *str, int len)
{
    char *buf;

    if (!str) return "(null)";
    buf = winetest_str_buffer();
    snprintf(buf, 512, "\"%.*s\"", len < 0 ? 500 : (len > 500 ? 500 : len), str);
    return buf;
}

static void winetest_run(const struct test *test)
{
    winetest_successes = winetest_failures = winetest_todos = winetest_skips = 0;
    winetest_current_test = test->name;
    test->func();
    EnterCriticalSection(&winetest_print_cs);
    printf("%04lx:%s: %ld tests executed (%ld marked as todo, 0 as flaky, %ld failures), %ld skipped.\n",
           GetCurrentProcessId(), winetest_current_test,
           winetest_successes + winetest_failures + winetest_todos, winetest_todos,
           winetest_failures, winetest_skips);
    fflush(stdout);
    LeaveCriticalSection(&winetest_print_cs);
}

int main(int argc, char **argv)
{
    const struct test *test;
    const char *env;
    LONG total_failures = 0;

    winetest_argc = argc;
    winetest_argv = argv;
    winetest_tls = TlsAlloc();
    InitializeCriticalSection(&winetest_print_cs);
    setvbuf(stdout, NULL, _IONBF, 0);
    if ((env = getenv("WINETEST_DEBUG"))) winetest_debug = atoi(env);
    if ((env = getenv("WINETEST_INTERACTIVE"))) winetest_interactive = atoi(env);
    if (GetProcAddress(GetModuleHandleA("ntdll.dll"), "wine_get_version"))
    {
        winetest_platform_is_wine = 1;
        winetest_platform = "wine";
    }
    if ((env = getenv("WINETEST_PLATFORM")))
    {
        winetest_platform = env;
        winetest_platform_is_wine = !strcmp(env, "wine");
    }

    if (argc > 1 && !strcmp(argv[1], "--list"))
    {
        for (test = winetest_testlist; test->name; test++) printf("    %s\n", test->name);
        return 0;
    }
    if (argc > 1)
    {
        for (test = winetest_testlist; test->name; test++)
            if (!strcmp(test->name, argv[1])) break;
        if (!test->name)
        {
            fprintf(stderr, "%s: no test named '%s' (try --list)\n", argv[0], argv[1]);
            return 1;
        }
        winetest_run(test);
        return winetest_failures > 255 ? 255 : (int)winetest_failures;
    }
    for (test = winetest_testlist; test->name; test++)
    {
        winetest_run(test);
        total_failures += winetest_failures;
    }
    return total_failures > 255 ? 255 : (int)total_failures;
}

#endif /* STANDALONE */

#endif /* COCANCEL_WINE_TEST_H */
