/*
 * cocancel-run.exe: runs a program with the cocancel engine loaded, without
 * any DLL override.
 *
 *   cocancel-run.exe [--engine PATH] PROGRAM [ARGS...]
 *
 * The program is created suspended, the engine is loaded into it with a
 * remote LoadLibraryW, and the program is resumed; the engine then repairs
 * the imports already bound and extends ole32's exports.  The exit code is
 * the program's, or 250-255 when the launcher itself fails.
 */

#include <windows.h>
#include <stdio.h>
#include <wchar.h>

#define EXIT_USAGE       250
#define EXIT_NO_ENGINE   251
#define EXIT_CREATE      252
#define EXIT_INJECT      253

/* Skips one argument of a command line, honouring the quoting rules of CommandLineToArgvW. */
static const WCHAR *skip_argument(const WCHAR *p)
{
    BOOL quoted = FALSE;

    while (*p == ' ' || *p == '\t') p++;
    while (*p && (quoted || (*p != ' ' && *p != '\t')))
    {
        if (*p == '\\')
        {
            while (*p == '\\') p++;
            if (*p == '"') p++;
            continue;
        }
        if (*p == '"') quoted = !quoted;
        p++;
    }
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

static BOOL default_engine(WCHAR *path, DWORD size)
{
    WCHAR *slash;
    DWORD len = GetModuleFileNameW(NULL, path, size);

    if (!len || len >= size - 16) return FALSE;
    if ((slash = wcsrchr(path, '\\'))) slash[1] = 0;
    wcscat(path, L"cocancel.dll");
    if (GetFileAttributesW(path) != INVALID_FILE_ATTRIBUTES) return TRUE;
    len = GetSystemDirectoryW(path, size);
    if (!len || len >= size - 16) return FALSE;
    wcscat(path, L"\\cocancel.dll");
    return GetFileAttributesW(path) != INVALID_FILE_ATTRIBUTES;
}

/* Loads the engine into the suspended process; TRUE once LoadLibraryW returned a module. */
static BOOL inject(HANDLE process, const WCHAR *engine)
{
    SIZE_T size = (wcslen(engine) + 1) * sizeof(WCHAR);
    DWORD exit_code = 0;
    HANDLE thread;
    void *remote;
    BOOL ok = FALSE;

    if (!(remote = VirtualAllocEx(process, NULL, size, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE))) return FALSE;
    if (WriteProcessMemory(process, remote, engine, size, NULL))
    {
        /* kernel32 sits at the same address in every process of a session. */
        LPTHREAD_START_ROUTINE load = (LPTHREAD_START_ROUTINE)(void *)GetProcAddress(GetModuleHandleW(L"kernel32.dll"), "LoadLibraryW");

        if ((thread = CreateRemoteThread(process, NULL, 0, load, remote, 0, NULL)))
        {
            if (WaitForSingleObject(thread, 30000) == WAIT_OBJECT_0 && GetExitCodeThread(thread, &exit_code))
                ok = exit_code != 0;
            CloseHandle(thread);
        }
    }
    VirtualFreeEx(process, remote, 0, MEM_RELEASE);
    return ok;
}

int wmain(int argc, WCHAR **argv)
{
    WCHAR engine[MAX_PATH], *cmdline;
    const WCHAR *p = skip_argument(GetCommandLineW());
    STARTUPINFOW si = { sizeof(si) };
    PROCESS_INFORMATION pi;
    DWORD exit_code = 0;
    int first = 1;

    if (argc > 2 && !wcscmp(argv[1], L"--engine"))
    {
        if (wcslen(argv[2]) >= MAX_PATH) return EXIT_USAGE;
        wcscpy(engine, argv[2]);
        p = skip_argument(skip_argument(p));
        first = 3;
    }
    else if (!default_engine(engine, MAX_PATH))
    {
        fprintf(stderr, "cocancel-run: cocancel.dll not found beside the launcher or in the system directory\n");
        return EXIT_NO_ENGINE;
    }
    if (argc <= first || !*p)
    {
        fprintf(stderr, "usage: cocancel-run.exe [--engine PATH] PROGRAM [ARGS...]\n");
        return EXIT_USAGE;
    }

    if (!(cmdline = _wcsdup(p))) return EXIT_CREATE;
    if (!CreateProcessW(NULL, cmdline, NULL, NULL, TRUE, CREATE_SUSPENDED, NULL, NULL, &si, &pi))
    {
        fprintf(stderr, "cocancel-run: cannot start %ls: error %lu\n", argv[first], GetLastError());
        return EXIT_CREATE;
    }
    if (!inject(pi.hProcess, engine))
    {
        fprintf(stderr, "cocancel-run: cannot load %ls into %ls\n", engine, argv[first]);
        TerminateProcess(pi.hProcess, EXIT_INJECT);
        WaitForSingleObject(pi.hProcess, 5000);
        return EXIT_INJECT;
    }
    ResumeThread(pi.hThread);
    WaitForSingleObject(pi.hProcess, INFINITE);
    GetExitCodeProcess(pi.hProcess, &exit_code);
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
    free(cmdline);
    return (int)exit_code;
}
