"""A stand-in ``libcuda.so.1`` so that mxnet-cu112 imports on a machine without an NVIDIA driver.

Unlike PyTorch and TensorFlow, which ``dlopen`` the driver when a GPU is first used, ``libmxnet.so``
of the CUDA wheels *links* ``libcuda.so.1`` (DT_NEEDED) and Python's ctypes loads it with
RTLD_NOW, so without a driver ``import mxnet`` fails and the image could not even ``predict list``
on a CPU host (CI, a laptop). The driver must never be installed in an image (the NVIDIA Container
Toolkit mounts the host's at run time), so when ``libcuda.so.1`` cannot be loaded this module writes a
minimal ELF shared object, soname ``libcuda.so.1``, whose functions (the driver API functions
libmxnet.so references) all return CUDA_ERROR_NO_DEVICE (100), into an anonymous in-memory file
and loads it first: the dynamic loader then satisfies libmxnet.so's DT_NEEDED with it (it matches
loaded objects by soname). Nothing is written to disk; with a real driver nothing happens.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
import struct

SONAME = "libcuda.so.1"
CUDA_ERROR_NO_DEVICE = 100
# Every driver API function libmxnet.so (mxnet-cu112 1.9.1) references: readelf --dyn-syms, UND cu*.
SYMBOLS = ("cuDeviceGet", "cuDevicePrimaryCtxRetain", "cuGetErrorString", "cuGraphKernelNodeGetParams",
           "cuGraphNodeGetType", "cuLaunchKernel", "cuModuleGetFunction", "cuModuleLoadData",
           "cuModuleLoadDataEx", "cuModuleUnload", "cuInit", "cuDriverGetVersion", "cuDeviceGetCount")
PAGE = 0x1000


def _sysv_hash(name: bytes) -> int:
    h = 0
    for c in name:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def stub_elf(soname: str = SONAME, symbols: tuple[str, ...] = SYMBOLS, result: int = CUDA_ERROR_NO_DEVICE) -> bytes:
    """An x86-64 ELF shared object: ``soname``, each of ``symbols`` a function returning ``result``.

    Long because it is one file layout, laid out field by field: headers, code, the dynamic symbol,
    string and hash tables (page 0, read + execute), then the dynamic section (page 1, read + write)."""
    ehdr_size, phdr_size, phnum = 64, 56, 4
    code_off = ehdr_size + phnum * phdr_size
    code = b"\xb8" + struct.pack("<I", result) + b"\xc3"  # mov eax, result; ret
    strtab = b"\0" + soname.encode() + b"\0"
    name_offsets = []
    for sym in symbols:
        name_offsets.append(len(strtab))
        strtab += sym.encode() + b"\0"
    symtab_off = (code_off + len(code) + 7) & ~7
    symtab = b"\0" * 24  # the null symbol
    for offset in name_offsets:  # st_name, st_info GLOBAL|FUNC, st_other, st_shndx (any defined index)
        symtab += struct.pack("<IBBHQQ", offset, 0x12, 0, 1, code_off, len(code))
    nsyms = len(symbols) + 1
    nbucket = max(1, len(symbols))
    buckets, chains = [0] * nbucket, [0] * nsyms
    for index, sym in enumerate(symbols, start=1):
        slot = _sysv_hash(sym.encode()) % nbucket
        chains[index], buckets[slot] = buckets[slot], index
    hashtab = struct.pack(f"<II{nbucket}I{nsyms}I", nbucket, nsyms, *buckets, *chains)
    strtab_off = symtab_off + len(symtab)
    hash_off = (strtab_off + len(strtab) + 7) & ~7
    text_end = hash_off + len(hashtab)
    assert text_end <= PAGE, "the stub's tables outgrew one page"
    dt = {"HASH": 4, "STRTAB": 5, "SYMTAB": 6, "STRSZ": 10, "SYMENT": 11, "SONAME": 14}
    dynamic = b"".join(struct.pack("<qQ", tag, value) for tag, value in [
        (dt["HASH"], hash_off), (dt["STRTAB"], strtab_off), (dt["SYMTAB"], symtab_off),
        (dt["STRSZ"], len(strtab)), (dt["SYMENT"], 24), (dt["SONAME"], 1), (0, 0)])
    phdrs = b"".join([
        struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, text_end, text_end, PAGE),  # PT_LOAD r-x: page 0
        struct.pack("<IIQQQQQQ", 1, 6, PAGE, PAGE, PAGE, len(dynamic), len(dynamic), PAGE),  # PT_LOAD rw-
        struct.pack("<IIQQQQQQ", 2, 6, PAGE, PAGE, PAGE, len(dynamic), len(dynamic), 8),  # PT_DYNAMIC
        struct.pack("<IIQQQQQQ", 0x6474E551, 6, 0, 0, 0, 0, 0, 16),  # PT_GNU_STACK: not executable
    ])
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8  # 64-bit, little endian, SysV
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, ehdr_size, 0, 0, ehdr_size, phdr_size, phnum,
                               64, 0, 0)  # ET_DYN, EM_X86_64, no section headers
    image = bytearray(PAGE + len(dynamic))
    for offset, blob in [(0, ehdr), (ehdr_size, phdrs), (code_off, code), (symtab_off, symtab),
                         (strtab_off, strtab), (hash_off, hashtab), (PAGE, dynamic)]:
        image[offset:offset + len(blob)] = blob
    return bytes(image)


def cuda_of_distribution() -> str | None:
    """The CUDA an MXNet wheel was built for, from its distribution's name: mxnet-cu112 -> "11.2";
    None for the CPU wheel (mxnet)."""
    for name in importlib.metadata.packages_distributions().get("mxnet", []):
        match = re.fullmatch(r"mxnet[-_]cu(\d+)(\d)", name.lower())
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    return None


def driver_loadable() -> bool:
    try:
        ctypes.CDLL(SONAME)
        return True
    except OSError:
        return False


def preload_if_no_driver() -> bool:
    """Load the stand-in when no ``libcuda.so.1`` can be loaded; True when it was loaded."""
    if driver_loadable() or not hasattr(os, "memfd_create"):
        return False
    fd = os.memfd_create(SONAME)  # kept open for the process's life: the mapping needs no path after load
    os.write(fd, stub_elf())
    ctypes.CDLL(f"/proc/self/fd/{fd}", mode=ctypes.RTLD_GLOBAL)
    return True
