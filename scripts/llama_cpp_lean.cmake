# Passed to llama-cpp-python's build (the `local` extra) as CMAKE_PROJECT_llama.cpp_INCLUDE by the Makefile:
# included right after llama.cpp's own project() call, in llama.cpp's directory scope.
#
# llama-cpp-python forces llama.cpp's "common" library on, yet its Python package never loads it: it loads
# libllama and libggml only. That library and the HTTP client it pulls in were 44% of the compile (409 s
# of CPU with them, 229 s without; ADR 0104). A directory variable shadows the forced cache entry here, so
# llama.cpp skips common (and its install rule); the libraries the package loads are built as before.
set(LLAMA_BUILD_COMMON OFF)
