#!/usr/bin/env python3
"""Lists the files a Debian "repack" Wine source lacks for makedep to run.

Debian's wine_*~repack.orig.tar.xz drops generated files (Unicode tables,
thunks, the test data generated.c files) and binary resources (icons,
bitmaps, media), and its build regenerates them with tools the project does
not need.  makedep still has to open every file that a Makefile.in lists and
every resource an .rc file names before it writes the top-level Makefile.
This prints those missing files, one per line, so that empty placeholders
can stand in for them.  None of them belongs to a module the cocancel check
builds (ole32's tests, the tools and the import libraries they link with);
a placeholder only lets makedep describe modules that are never built.

Usage: placeholders.py WINE_SRC
"""
import os
import re
import sys

# Resource types an .rc file takes from a file next to it.
RESOURCE_EXT = ('ico', 'bmp', 'cur', 'ani', 'avi', 'png', 'gif', 'jpg', 'wav', 'mid',
                'ttf', 'otf', 'emf', 'wmf', 'mp3', 'mpg', 'wmv', 'tif', 'tiff', 'ogg')
RESOURCE_RE = re.compile(r'([A-Za-z0-9_./-]+\.(?:%s))\b' % '|'.join(RESOURCE_EXT))
SOURCES_RE = re.compile(r'^([A-Z_]*SRCS|SOURCES)\s*=(.*)$', re.M)
PARENT_RE = re.compile(r'^PARENTSRC\s*=(.*)$', re.M)


def listed_sources(top, folder):
    text = open(os.path.join(folder, 'Makefile.in'), errors='replace').read()
    text = text.replace('\\\n', ' ')
    parent = PARENT_RE.search(text)
    roots = [folder] + [os.path.normpath(os.path.join(folder, p))
                        for p in (parent.group(1).split() if parent else [])]
    for match in SOURCES_RE.finditer(text):
        for name in match.group(2).split():
            if not any(os.path.exists(os.path.join(r, name)) for r in roots):
                yield os.path.join(folder, name)


def named_resources(folder, rc_name):
    for line in open(os.path.join(folder, rc_name), errors='replace'):
        line = line.split('/*')[0].split('//')[0]
        for match in RESOURCE_RE.finditer(line):
            name = match.group(1)
            if name.startswith('../'):
                continue
            path = os.path.join(folder, name)
            if not os.path.exists(path) and os.path.isdir(os.path.dirname(path)):
                yield path


def main():
    top = sys.argv[1]
    missing = set()
    for folder, _, files in os.walk(top):
        if 'Makefile.in' in files:
            missing.update(listed_sources(top, folder))
        for name in files:
            if name.endswith('.rc'):
                missing.update(named_resources(folder, name))
    for path in sorted(missing):
        print(path)


if __name__ == '__main__':
    main()
