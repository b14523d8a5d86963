"""How llama.cpp is built, written once: the pinned source release and the compiler flags, used
by the engine build (keyed by them in the cache) and by `make bench` for llama-cpp-python.

`python -m hearth.engines.llama_cpp.flags` prints the CMAKE_ARGS for building llama-cpp-python
the same way, and `... flags --pin` its pinned requirement."""

from __future__ import annotations

import shlex
import sys

# llama.cpp comes from the sources this llama-cpp-python release vendors.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"

# AMX kernels are left out: on AMX-capable CPUs under virtualisation (as on our CI machines)
# ggml_backend_amx_mul_mat segfaults during the warm-up decode. GCC keeps explicit -mno-* flags
# even though ggml adds -march=native later. AVX2/AVX-512 kernels and weight repacking stay on.
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    f"-DCMAKE_C_FLAGS={NO_AMX_FLAGS}",
    f"-DCMAKE_CXX_FLAGS={NO_AMX_FLAGS}",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary: easy to cache and move
    "-DLLAMA_CURL=OFF",  # Hearth downloads models itself
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    # The RPC backend: `llama-server --rpc host:port,...` splits a model across machines that
    # run rpc-server (built alongside, see `hearth rpc-worker`). Unused without --rpc.
    "-DGGML_RPC=ON",
]


def llama_cpp_python_cmake_args() -> str:
    """CMAKE_ARGS for `pip install llama-cpp-python`: the same kernels as Hearth's llama-server."""
    return shlex.join([f"-DCMAKE_C_FLAGS={NO_AMX_FLAGS}", f"-DCMAKE_CXX_FLAGS={NO_AMX_FLAGS}"])


if __name__ == "__main__":
    if sys.argv[1:] == ["--pin"]:
        print(f"llama-cpp-python[server]=={LLAMA_CPP_PYTHON_VERSION}")
    else:
        print(llama_cpp_python_cmake_args())
