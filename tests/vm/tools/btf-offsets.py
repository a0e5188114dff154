#!/usr/bin/env python3
"""Byte offsets of struct members from the running kernel's BTF, for kprobe
fetch arguments (no pahole or bpftool needed).

Usage: btf-offsets.py MODULE STRUCT.member[.member...] ...
  MODULE   a module with BTF under /sys/kernel/btf (e.g. rdma_rxe), or
           vmlinux; its types are resolved over vmlinux's (split BTF)
  dump:STRUCT lists every member of STRUCT.
Prints one "STRUCT.member.member OFFSET SIZE" line per path; exits 1 when a
path does not resolve.
"""
import struct
import sys

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION = 1, 2, 3, 4, 5
KIND_ENUM, KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST = 6, 7, 8, 9, 10
KIND_RESTRICT, KIND_FUNC, KIND_PROTO, KIND_VAR, KIND_DATASEC = 11, 12, 13, 14, 15
KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 16, 17, 18, 19
# Bytes after struct btf_type, per kind: fixed part and per-vlen entry.
EXTRA = {KIND_INT: (4, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12),
         KIND_UNION: (0, 12), KIND_ENUM: (0, 8), KIND_PROTO: (0, 8),
         KIND_VAR: (4, 0), KIND_DATASEC: (0, 12), KIND_DECL_TAG: (4, 0),
         KIND_ENUM64: (0, 12)}


class Btf:
    def __init__(self):
        self.types = [None]  # id 0 is void
        self.strings = b""

    def load(self, blob):
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = \
            struct.unpack_from("<HBBIIIII", blob, 0)
        if magic != 0xEB9F:
            raise SystemExit("not BTF (little-endian) data")
        base = hdr_len
        self.strings += blob[base + str_off:base + str_off + str_len]
        t, end = base + type_off, base + type_off + type_len
        while t < end:
            name_off, info, size_type = struct.unpack_from("<III", blob, t)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            kflag = info >> 31
            t += 12
            fixed, per = EXTRA.get(kind, (0, 0))
            members = []
            if kind in (KIND_STRUCT, KIND_UNION):
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", blob, t + 12 * i)
                    bit = m_off & 0xFFFFFF if kflag else m_off
                    members.append((m_name, m_type, bit))
            elif kind == KIND_ARRAY:
                members = struct.unpack_from("<III", blob, t)
            self.types.append((kind, name_off, size_type, members))
            t += fixed + per * vlen

    def name(self, off):
        return self.strings[off:self.strings.index(b"\0", off)].decode()

    def resolve(self, tid):
        """Follow typedefs and qualifiers to the underlying type id."""
        while self.types[tid][0] in (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST,
                                     KIND_RESTRICT, KIND_TYPE_TAG):
            tid = self.types[tid][2]
        return tid

    def size(self, tid):
        tid = self.resolve(tid)
        kind, _n, size_type, members = self.types[tid]
        if kind == KIND_PTR:
            return 8
        if kind == KIND_ARRAY:
            return self.size(members[0]) * members[2]
        return size_type

    def find_struct(self, name):
        for tid, t in enumerate(self.types):
            if t and t[0] in (KIND_STRUCT, KIND_UNION) and t[1] and \
                    self.name(t[1]) == name and t[2] > 0:
                return tid
        return None

    def member(self, tid, name):
        """(type id, bit offset) of member `name`, looking into anonymous
        members."""
        for m_name, m_type, bit in self.types[self.resolve(tid)][3]:
            if m_name and self.name(m_name) == name:
                return m_type, bit
            if not m_name:
                inner = self.resolve(m_type)
                if self.types[inner][0] in (KIND_STRUCT, KIND_UNION):
                    found = self.member(inner, name)
                    if found:
                        return found[0], bit + found[1]
        return None


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    btf = Btf()
    with open("/sys/kernel/btf/vmlinux", "rb") as f:
        btf.load(f.read())
    if sys.argv[1] != "vmlinux":
        with open("/sys/kernel/btf/" + sys.argv[1], "rb") as f:
            btf.load(f.read())
    rc = 0
    for path in sys.argv[2:]:
        if path.startswith("dump:"):
            tid = btf.find_struct(path[5:])
            for m_name, m_type, bit in btf.types[tid][3] if tid else []:
                print(f"{path[5:]}.{btf.name(m_name) if m_name else '(anon)'} "
                      f"{bit // 8} {btf.size(m_type)}")
            continue
        parts = path.split(".")
        tid = btf.find_struct(parts[0])
        bits = 0
        for p in parts[1:]:
            found = tid is not None and btf.member(tid, p)
            if not found:
                tid = None
                break
            tid, off = found
            bits += off
        if tid is None:
            print(f"{path} ? ?")
            rc = 1
        else:
            print(f"{path} {bits // 8} {btf.size(tid)}")
    sys.exit(rc)


if __name__ == "__main__":
    main()
