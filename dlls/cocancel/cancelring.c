/*
 * Cancelled call ids, published per client process.
 *
 * Owns the "cancel ring": a small named shared-memory table per client
 * process in which a cancelled call's id is stored (its slot is the id
 * modulo the table size), so that the server side, in this process or
 * another, can tell that the call it runs was cancelled (CoTestCancel).
 *
 * A client creates its ring before it sends its first call that can be
 * cancelled (cancelring_prepare), so a server that finds no ring for a
 * call's process knows that call can never be cancelled, and need not look
 * again.  A ring name still held open by a server when its process ends is
 * met again by the next process that gets the same id: that process clears
 * the old contents.  Servers keep read-only views of other processes' rings
 * in a small cache; the least recently used view is unmapped when the cache
 * is full, and a view is read only under the cache's lock.
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
    ULONGLONG used;             /* for least-recently-used eviction */
};

#define MAX_VIEWS 16

static SRWLOCK ring_lock = SRWLOCK_INIT;
static struct ring_view views[MAX_VIEWS];
static unsigned int view_count;
static LONG64 use_clock;
static struct cancel_ring *own_ring;    /* this process's, writable */
static HANDLE own_mapping;
static INIT_ONCE own_once = INIT_ONCE_STATIC_INIT;

static void ring_name(DWORD pid, WCHAR *name, size_t size)
{
    _snwprintf(name, size, L"Local\\cocancel-cancelled-%08lx", pid);
    name[size - 1] = 0;
}

/* Is the view at least a whole ring (a section created by someone else may be smaller)? */
static BOOL whole_ring(const void *view)
{
    MEMORY_BASIC_INFORMATION info;

    return VirtualQuery(view, &info, sizeof(info)) && info.RegionSize >= sizeof(struct cancel_ring);
}

static BOOL CALLBACK create_own_ring(INIT_ONCE *once, void *param, void **context)
{
    WCHAR name[64];
    BOOL existed;

    ring_name(GetCurrentProcessId(), name, ARRAY_SIZE(name));
    own_mapping = CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE, 0, sizeof(struct cancel_ring), name);
    existed = GetLastError() == ERROR_ALREADY_EXISTS;
    if (!own_mapping ||
        !(own_ring = MapViewOfFile(own_mapping, FILE_MAP_WRITE, 0, 0, sizeof(struct cancel_ring))) ||
        !whole_ring(own_ring))
    {
        WARN("cannot publish cancelled calls: the name of process %04lx's ring is taken by a section "
             "that is not cocancel's\n", GetCurrentProcessId());
        if (own_ring) UnmapViewOfFile(own_ring);
        if (own_mapping) CloseHandle(own_mapping);
        own_ring = NULL;
        own_mapping = NULL;
        return TRUE;
    }
    /* Left by an earlier process with the same id, still held open by a server: not ours. */
    if (existed) memset(own_ring, 0, sizeof(*own_ring));
    return TRUE;
}

/* This process's ring, created on first use (NULL if it cannot be). */
static struct cancel_ring *get_own_ring(void)
{
    InitOnceExecuteOnce(&own_once, create_own_ring, NULL, NULL);
    return own_ring;
}

/* Before the first call that can be cancelled: servers then find this process's ring. */
void cancelring_prepare(void)
{
    get_own_ring();
}

void cancelring_publish(ULONGLONG call_id)
{
    struct cancel_ring *ring = get_own_ring();

    TRACE("call %llx cancelled\n", (unsigned long long)call_id);
    if (ring) InterlockedExchange64(&ring->slots[call_id % RING_SLOTS], (LONG64)call_id);
}

static BOOL ring_holds(const struct cancel_ring *ring, ULONGLONG call_id)
{
    /* A read-only view: a plain aligned read (an interlocked one would write). */
    return (ULONGLONG)*(volatile const LONG64 *)&ring->slots[call_id % RING_SLOTS] == call_id;
}

/* Looks call_id up in a cached view of its process's ring: 1 found there, 0 not, -1 no view. */
static int lookup_cached(DWORD pid, ULONGLONG call_id)
{
    int found = -1;
    unsigned int i;

    AcquireSRWLockShared(&ring_lock);
    for (i = 0; i < view_count; i++)
    {
        if (views[i].pid != pid) continue;
        found = ring_holds(views[i].ring, call_id);
        InterlockedExchange64((LONG64 *)&views[i].used, InterlockedIncrement64(&use_clock));
        break;
    }
    ReleaseSRWLockShared(&ring_lock);
    return found;
}

/* Adds a view of pid's ring to the cache, evicting the least recently used one when it is full. */
static void cache_view(DWORD pid, HANDLE mapping, struct cancel_ring *ring)
{
    struct ring_view evicted = { 0 };
    unsigned int i, slot;

    AcquireSRWLockExclusive(&ring_lock);
    for (i = 0; i < view_count; i++)
        if (views[i].pid == pid) break;
    if (i < view_count)
    {
        /* Another thread mapped it first. */
        evicted.mapping = mapping;
        evicted.ring = ring;
    }
    else
    {
        if (view_count < MAX_VIEWS) slot = view_count++;
        else
        {
            for (slot = 0, i = 1; i < view_count; i++)
                if (views[i].used < views[slot].used) slot = i;
            evicted = views[slot];
        }
        views[slot].pid = pid;
        views[slot].mapping = mapping;
        views[slot].ring = ring;
        views[slot].used = InterlockedIncrement64(&use_clock);
    }
    ReleaseSRWLockExclusive(&ring_lock);
    if (evicted.ring) UnmapViewOfFile(evicted.ring);
    if (evicted.mapping) CloseHandle(evicted.mapping);
}

/*
 * Was call_id cancelled by its client?  1 yes, 0 no, -1 the client process
 * has no ring (it never made a call that can be cancelled: the caller need
 * not ask again for the same call).
 */
int cancelring_cancelled(ULONGLONG call_id)
{
    DWORD pid = (DWORD)(call_id >> 32);
    struct cancel_ring *ring;
    HANDLE mapping;
    WCHAR name[64];
    int found;

    if (pid == GetCurrentProcessId())
    {
        if (!(ring = InterlockedCompareExchangePointer((void **)&own_ring, NULL, NULL))) return -1;
        return ring_holds(ring, call_id);
    }
    if ((found = lookup_cached(pid, call_id)) >= 0) return found;

    ring_name(pid, name, ARRAY_SIZE(name));
    if (!(mapping = OpenFileMappingW(FILE_MAP_READ, FALSE, name))) return -1;
    if (!(ring = MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, sizeof(*ring))) || !whole_ring(ring))
    {
        if (ring) UnmapViewOfFile(ring);
        CloseHandle(mapping);
        return -1;
    }
    found = ring_holds(ring, call_id);
    cache_view(pid, mapping, ring);
    return found;
}
