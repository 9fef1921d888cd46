#!/usr/bin/env python3
"""The edits of the cocancel patch series, one step at a time, on a Wine tree.

Usage: edit_tree.py TREE STEP [FILE...]
  rpcproxy     include/rpcproxy.h: the async stub buffer vtable macros
  objbase      include/objbase.h: the call cancellation prototypes
  sources      dlls/ole32/tests/Makefile.in: add FILEs to SOURCES
  async-idl    dlls/ole32/tests/Makefile.in: rpcrt4 in IMPORTS and the
               widl mode of asynccall_ps.idl
Each step changes only what the tree lacks and prints "unchanged" when it
has it all already.  Written against Wine 8.0 and 10.0; a tree whose files
do not have the lines a step anchors on is refused (exit code 2).
"""
import os
import re
import sys


def read(tree, path):
    with open(os.path.join(tree, path)) as f:
        return f.read()


def write(tree, path, text, old):
    if text == old:
        print('unchanged: ' + path)
        return
    with open(os.path.join(tree, path), 'w') as f:
        f.write(text)


def refuse(message):
    sys.stderr.write('edit_tree: %s\n' % message)
    sys.exit(2)


def insert_after_line(text, anchor_re, lines, path):
    match = re.search(anchor_re, text, re.M)
    if not match:
        refuse('%s: no line matching %s' % (path, anchor_re))
    end = text.index('\n', match.end()) + 1
    return text[:end] + ''.join(line + '\n' for line in lines) + text[end:]


def step_rpcproxy(tree):
    path = 'include/rpcproxy.h'
    old = read(tree, path)
    lines = []
    for name in ('CStdAsyncStubBuffer_METHODS', 'CStdAsyncStubBuffer_DELEGATING_METHODS'):
        if not re.search(r'#define\s+%s\b' % name, old):
            lines.append('#define %s 0, 0, 0, 0, 0, 0, 0, 0, 0, 0' % name)
    text = old
    if lines:
        # The async stub vtables of a proxy file are all zeros, as in the
        # Windows SDK: rpcrt4 fills them in when it creates the stub.
        text = insert_after_line(old, r'^#define\s+CStdStubBuffer_DELEGATING_METHODS\b.*$', lines, path)
    write(tree, path, text, old)


PROTOTYPES = (
    ('CoCancelCall', 'WINOLE32API HRESULT WINAPI CoCancelCall(DWORD thread_id, ULONG timeout);'),
    ('CoGetCancelObject', 'WINOLE32API HRESULT WINAPI CoGetCancelObject(DWORD thread_id, REFIID riid, void **obj);'),
    ('CoSetCancelObject', 'WINOLE32API HRESULT WINAPI CoSetCancelObject(IUnknown *obj);'),
    ('CoTestCancel', 'WINOLE32API HRESULT WINAPI CoTestCancel(void);'),
)


def step_objbase(tree):
    path = 'include/objbase.h'
    old = read(tree, path)
    lines = [decl for name, decl in PROTOTYPES if not re.search(r'\b%s\s*\(' % name, old)]
    text = old
    if lines:
        text = insert_after_line(old, r'^WINOLE32API HRESULT WINAPI CoEnableCallCancellation\(.*$', lines, path)
    write(tree, path, text, old)


def makefile_lists(text):
    """The SOURCES list of a Makefile.in: (start, end, names)."""
    match = re.search(r'^SOURCES\s*=((?:[^\n]*\\\n)*[^\n]*)\n', text, re.M)
    if not match:
        refuse('dlls/ole32/tests/Makefile.in: no SOURCES list')
    names = match.group(1).replace('\\\n', ' ').split()
    return match.start(), match.end(), names


def step_sources(tree, files):
    path = 'dlls/ole32/tests/Makefile.in'
    old = read(tree, path)
    start, end, names = makefile_lists(old)
    for name in files:
        if name not in names:
            names.append(name)
    names.sort()
    text = old[:start] + 'SOURCES = \\\n' + ' \\\n'.join('\t' + n for n in names) + '\n' + old[end:]
    write(tree, path, text, old)


def step_async_idl(tree):
    path = 'dlls/ole32/tests/Makefile.in'
    old = read(tree, path)
    match = re.search(r'^IMPORTS\s*=(.*)$', old, re.M)
    if not match:
        refuse(path + ': no IMPORTS line')
    text = old
    if 'rpcrt4' not in match.group(1).split():
        text = text[:match.end()] + ' rpcrt4' + text[match.end():]
    if not re.search(r'^asynccall_ps_EXTRAIDLFLAGS\b', text, re.M):
        # Stubless (-Oicf) proxies: the format the call objects' Begin_ and
        # Finish_ methods are interpreted from.
        match = re.search(r'^IMPORTS\s*=.*$', text, re.M)
        end = match.end() + 1
        text = text[:end] + '\nasynccall_ps_EXTRAIDLFLAGS = -Oicf\n' + text[end:]
    write(tree, path, text, old)


def main():
    if len(sys.argv) < 3:
        refuse('usage: edit_tree.py TREE STEP [FILE...]')
    tree, step, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    if step == 'rpcproxy':
        step_rpcproxy(tree)
    elif step == 'objbase':
        step_objbase(tree)
    elif step == 'sources':
        step_sources(tree, files)
    elif step == 'async-idl':
        step_async_idl(tree)
    else:
        refuse('unknown step ' + step)


if __name__ == '__main__':
    main()
