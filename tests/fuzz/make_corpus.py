#!/usr/bin/env python3
"""Writes the small regression corpus of the fuzzers (tests/fuzz/corpus/<target>/): a few valid
and invalid inputs per parser. Run with Debian's python3 (numpy for the .npy inputs):
/usr/bin/python3 tests/fuzz/make_corpus.py. The files are committed."""
import gzip
import io
import os
import shutil
import struct
import zipfile
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "npy")


def write(target, name, data):
    os.makedirs(os.path.join(HERE, "corpus", target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, "corpus", target, name), "wb") as f:
        f.write(data)


def idx(type_code, dims, payload):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def main():
    images = idx(0x08, [3, 2, 2], bytes(range(0, 240, 20)))
    labels = idx(0x08, [3], bytes([2, 0, 1]))
    write("idx", "images.idx", images)
    write("idx", "labels.idx", labels)
    write("idx", "images.idx.gz", gzip.compress(images, mtime=0))
    write("idx", "labels_int.idx", idx(0x0C, [2], struct.pack(">ii", 5, 0)))
    write("idx", "floats.idx", idx(0x0D, [2, 3], struct.pack(">6f", 0.5, -1, 2, 3, 4, 1e-3)))
    write("idx", "doubles_nan.idx", idx(0x0E, [2], struct.pack(">2d", 1.0, float("nan"))))
    write("idx", "bad_magic.idx", bytes([3, 8, 0, 0]) + images[4:])
    write("idx", "truncated.idx", images[:-3])
    write("idx", "truncated.gz", gzip.compress(images, mtime=0)[:-7])
    # A label of 1e9 (a billion classes) and a gzip file declaring 784 GB of images.
    write("idx", "labels_1e9.idx", idx(0x0C, [3], struct.pack(">3i", 0, 1000000000, 1)))
    write("idx", "huge_declared.idx.gz",
          gzip.compress(idx(0x08, [1000000000, 28, 28], bytes(16)), mtime=0))

    write("csv", "iris_head.csv",
          "sepal_length,sepal_width,petal_length,petal_width,species\n"
          "5.1,3.5,1.4,0.2,setosa\n4.9,3.0,1.4,0.2,setosa\n4.7,3.2,1.3,0.2,setosa\n"
          "7.0,3.2,4.7,1.4,versicolor\n6.4,3.2,4.5,1.5,versicolor\n6.9,3.1,4.9,1.5,versicolor\n"
          "6.3,3.3,6.0,2.5,virginica\n5.8,2.7,5.1,1.9,virginica\n7.1,3.0,5.9,2.1,virginica\n")
    write("csv", "numeric_noheader.csv", "1,2,0\n3,4,1\n5,6,2\n")
    write("csv", "quoted.csv", '"x, first","y""",label\n"1.5", 2 ,"1"\n3,4,0\n')
    write("csv", "crlf_blank.csv", "a,b,label\r\n1,2,0\r\n\r\n3,4,1\r\n")
    write("csv", "regression.csv", "x,y\n0,0.5\n1,-1.25\n2,1e3\n")
    write("csv", "ragged.csv", "a,b,label\n1,2,0\n1,2\n")
    write("csv", "nan.csv", "a,b,label\n1,nan,0\n")
    write("csv", "semicolon.csv", "a;b;label\n1;2;0\n")
    write("csv", "nan_inf.csv", "a,b,label\nnan,1,0\n2,inf,1\n-inf,3,0\n")
    write("csv", "label_1e9.csv", "a,b,label\n1,2,0\n3,4,1000000000\n")
    write("csv", "first_row_text.csv", "1,x,0\n2,3,1\n")

    for name in ["f8_2x3.npy", "fortran_i4_2x3x4.npy", "v2_f4_2x2.npy", "u1_2x2x2.npy",
                 "f8_scalar.npy", "savez.npz", "savez_compressed.npz", "bigendian_f8.npy"]:
        shutil.copy(os.path.join(FIXTURES, name), os.path.join(HERE, "corpus", "npy", name))
    buffer = io.BytesIO()
    np.save(buffer, np.arange(5, dtype="<i8"))
    write("npy", "truncated.npy", buffer.getvalue()[:-5])
    write("npy", "not_npy.bin", b"PK\x05\x06" + bytes(18))
    for name, values in [("f8_nan.npy", np.array([1.0, np.nan, np.inf])),
                         ("f4_inf_2x2.npy", np.array([[0, 1], [-np.inf, 2]], dtype="<f4")),
                         ("f8_overflows_f4.npy", np.array([1.0, 1e300]))]:
        buffer = io.BytesIO()
        np.save(buffer, values)
        write("npy", name, buffer.getvalue())
    # An inflation bomb in small: 64 KiB of zeros deflated behind a header for 3 values.
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        entry = zipfile.ZipInfo("a.npy", date_time=(1980, 1, 1, 0, 0, 0))
        z.writestr(entry, buffer.getvalue() + bytes(1 << 16), zipfile.ZIP_DEFLATED)
    write("npy", "inflation_bomb.npz", bomb.getvalue())

    # CIFAR: records of CIFAR-10 (3073 bytes) and CIFAR-100 (3074), a label out of range, a
    # truncated record.
    pixels = bytes((k * 7) % 256 for k in range(3072))
    write("cifar", "cifar10_two.bin", bytes([3]) + pixels + bytes([9]) + pixels)
    write("cifar", "cifar100_one.bin", bytes([19, 99]) + pixels)
    write("cifar", "label_out_of_range.bin", bytes([10]) + pixels)
    write("cifar", "truncated.bin", bytes([1]) + pixels[:100])


if __name__ == "__main__":
    main()
