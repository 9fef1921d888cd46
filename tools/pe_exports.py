#!/usr/bin/env python3
"""List the exports of a PE image: ordinal, name, RVA and forwarder target.

Used by the build to regenerate the carrier ole32.dll's export list from the
builtin ole32.dll of the Wine we build against (never from a copied list).

    pe_exports.py FILE            one line per export: ORD NAME RVA [FORWARDER]
"""

import struct
import sys


def read_exports(path):
    data = open(path, "rb").read()
    if data[:2] != b"MZ":
        raise ValueError("%s: not a PE image" % path)
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        raise ValueError("%s: no PE signature" % path)
    nsections = struct.unpack_from("<H", data, pe + 6)[0]
    opt_size = struct.unpack_from("<H", data, pe + 20)[0]
    opt = pe + 24
    magic = struct.unpack_from("<H", data, opt)[0]
    dirs = opt + (112 if magic == 0x20B else 96)
    exp_rva, exp_size = struct.unpack_from("<II", data, dirs)
    sections = []
    for i in range(nsections):
        off = opt + opt_size + 40 * i
        vsize, va, rsize, raw = struct.unpack_from("<IIII", data, off + 8)
        sections.append((va, max(vsize, rsize), raw))

    def file_offset(rva):
        for va, size, raw in sections:
            if va <= rva < va + size:
                return raw + rva - va
        raise ValueError("RVA %#x outside every section" % rva)

    def cstring(rva):
        off = file_offset(rva)
        return data[off:data.index(b"\0", off)].decode("ascii")

    if not exp_rva:
        return []
    d = file_offset(exp_rva)
    base, nfuncs, nnames, funcs, names, ords = struct.unpack_from("<IIIIII", data, d + 16)
    names_by_index = {}
    for i in range(nnames):
        name_rva = struct.unpack_from("<I", data, file_offset(names) + 4 * i)[0]
        index = struct.unpack_from("<H", data, file_offset(ords) + 2 * i)[0]
        names_by_index[index] = cstring(name_rva)
    result = []
    for i in range(nfuncs):
        rva = struct.unpack_from("<I", data, file_offset(funcs) + 4 * i)[0]
        if not rva:
            continue
        forward = cstring(rva) if exp_rva <= rva < exp_rva + exp_size else None
        result.append((base + i, names_by_index.get(i), rva, forward))
    return result


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: pe_exports.py FILE\n")
        return 2
    for ordinal, name, rva, forward in read_exports(argv[1]):
        print("%d %s %#x%s" % (ordinal, name or "-", rva, " " + forward if forward else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
