"""The compiled part of the package; everything else is declared in pyproject.toml.

``spgim._tst_reference`` wraps the C++ reference of the TST attention op (csrc/) for the ONNX Runtime
CPU twin of the TensorRT plugin. It uses only the CPython API, so it builds from ``pip install -e .`` or a
wheel with nothing but a C++17 compiler.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup

TST_DIR = "csrc/tst_attention"

if sys.platform == "win32":
    compile_args = ["/std:c++17", "/O2"]
    link_args: list[str] = []
else:
    # Portable -O3, no -march: the kernels are written so that the baseline vector ISA is used well.
    compile_args = ["-std=c++17", "-O3", "-pthread", "-fvisibility=hidden"]
    link_args = ["-pthread"]

setup(
    ext_modules=[
        Extension(
            "spgim._tst_reference",
            sources=["csrc/python/tst_reference_module.cpp", f"{TST_DIR}/tst_attention_reference.cpp"],
            include_dirs=[TST_DIR],
            depends=[
                f"{TST_DIR}/tst_attention_common.h",
                f"{TST_DIR}/tst_attention_reference.h",
                f"{TST_DIR}/half_bits.h",
                f"{TST_DIR}/parallel_for.h",
            ],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            language="c++",
        )
    ]
)
