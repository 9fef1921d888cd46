/*
 * Cancelled call ids, published per client process.
 *
 * Owns the "cancel ring": a small named shared-memory table per client
 * process in which a cancelled call's id is stored (its slot is the id
 * modulo the table size), so that the server side, in this process or
 * another, can tell that the call it runs was cancelled (CoTestCancel).
 * The client maps its own ring writable; servers map other processes'
 * rings read-only, once, and keep the views.
 */

#include <stdio.h>
#include "cocancel_private.h"

#define RING_SLOTS 1024

struct cancel_ring
{
    LONG64 slots[RING_SLOTS];
};

struct ring_view
{
    DWORD pid;
    HANDLE mapping;
    struct cancel_ring *ring;
};

static SRWLOCK ring_lock = SRWLOCK_INIT;
static struct ring_view ring_views[16];
static unsigned int ring_view_count;

static void ring_name(DWORD pid, WCHAR *name, size_t size)
{
    _snwprintf(name, size, L"Local\\cocancel-cancelled-%08lx", pid);
    name[size - 1] = 0;
}

/* The ring of process pid, mapped on first use; create it for our own process only. */
static struct cancel_ring *get_ring(DWORD pid, BOOL create)
{
    struct cancel_ring *ring = NULL;
    HANDLE mapping;
    WCHAR name[64];
    unsigned int i;

    AcquireSRWLockShared(&ring_lock);
    for (i = 0; i < ring_view_count; i++)
        if (ring_views[i].pid == pid) ring = ring_views[i].ring;
    ReleaseSRWLockShared(&ring_lock);
    if (ring) return ring;

    /* Our own ring is always mapped writable: the view is cached for the
     * server side (which only reads) and the client side (which writes) alike. */
    if (pid == GetCurrentProcessId()) create = TRUE;
    ring_name(pid, name, ARRAY_SIZE(name));
    if (create)
        mapping = CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE, 0, sizeof(struct cancel_ring), name);
    else
        mapping = OpenFileMappingW(FILE_MAP_READ, FALSE, name);
    if (!mapping) return NULL;
    if (!(ring = MapViewOfFile(mapping, create ? FILE_MAP_WRITE : FILE_MAP_READ, 0, 0, sizeof(*ring))))
    {
        CloseHandle(mapping);
        return NULL;
    }

    AcquireSRWLockExclusive(&ring_lock);
    for (i = 0; i < ring_view_count; i++)
        if (ring_views[i].pid == pid) break;
    if (i < ring_view_count || ring_view_count == ARRAY_SIZE(ring_views))
    {
        /* Another thread mapped it first, or the cache is full: use a private view. */
        struct cancel_ring *cached = i < ring_view_count ? ring_views[i].ring : NULL;

        ReleaseSRWLockExclusive(&ring_lock);
        if (cached)
        {
            UnmapViewOfFile(ring);
            CloseHandle(mapping);
            return cached;
        }
        /* Kept mapped: the cache is full, and a view is small. */
        return ring;
    }
    ring_views[ring_view_count].pid = pid;
    ring_views[ring_view_count].mapping = mapping;
    ring_views[ring_view_count].ring = ring;
    ring_view_count++;
    ReleaseSRWLockExclusive(&ring_lock);
    return ring;
}

void cancelring_publish(ULONGLONG call_id)
{
    struct cancel_ring *ring = get_ring(GetCurrentProcessId(), TRUE);

    TRACE("call %llx cancelled\n", (unsigned long long)call_id);
    if (ring) InterlockedExchange64(&ring->slots[call_id % RING_SLOTS], (LONG64)call_id);
}

BOOL cancelring_cancelled(ULONGLONG call_id)
{
    struct cancel_ring *ring = get_ring((DWORD)(call_id >> 32), FALSE);

    /* The view is read-only: a plain aligned read (an interlocked one would write). */
    return ring && (ULONGLONG)*(volatile LONG64 *)&ring->slots[call_id % RING_SLOTS] == call_id;
}
