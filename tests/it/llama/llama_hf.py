"""Runs the real llama.cpp's `-hf` download (its `common` code, bundled in PyPI's
`xllamacpp`), then loads what it resolved and generates a few tokens.

usage: llama_hf.py [--resolve-only] LLAMA_ARGS...   (e.g. `-hf owner/name:Q4_K_M --offline`)

`xllamacpp`'s Python API does not expose the download, but its library exports
llama.cpp's `common_params_parse`: called on the `common_params` inside an
`xllamacpp.CommonParams` as `llama-server ARGS` would call it, it resolves `-hf`
(refs, tree, HEAD and GET of each file, the HF cache layout) exactly as
`llama-server -hf` does. The environment is llama.cpp's: MODEL_ENDPOINT,
HF_HUB_CACHE / HF_HOME / LLAMA_CACHE, HF_TOKEN.

Prints one JSON line: {"model": path, "mmproj": path or "", "text": ..., "tokens": n}
(`--resolve-only`: no generation, text "" and tokens 0). The text model alone is
loaded: an `mmproj` file is reported, not loaded (tests' ones are no real projectors).
Exits 2 when llama.cpp's parse fails (its log is on stderr), 3 when the model it
resolved does not generate.
"""

import ctypes
import json
import os
import sys

import xllamacpp
import xllamacpp.xllamacpp as native

# llama_example: LLAMA_EXAMPLE_MTMD (15 in this llama.cpp's enum). LLAMA_EXAMPLE_SERVER
# skips the download (the server does it itself later, with mmproj), and
# LLAMA_EXAMPLE_COMMON downloads without the mmproj (only the examples in arg.cpp's
# `mmproj_examples` fetch it): MTMD downloads as `llama-server -hf` does, mmproj
# included. `LLAMA_HF_EXAMPLE` overrides it (2: COMMON) should the enum move.
LLAMA_EXAMPLE = int(os.environ.get("LLAMA_HF_EXAMPLE", "15"))
PARSE = "_Z19common_params_parseiPPcR13common_params13llama_examplePFviS0_E"
LOG_MAIN = "_Z15common_log_mainv"
LOG_PAUSE = "_Z16common_log_pauseP10common_log"
MAGIC = (0x1234567, 0x7654321)


def params_address(p: "xllamacpp.CommonParams") -> int:
    """The address of the C++ `common_params` inside the Python object: its first two
    fields are `n_predict` and `n_ctx`, found by writing marks into them."""
    p.n_predict, p.n_ctx = MAGIC
    base = id(p)
    for off in range(8, 256, 8):
        a = ctypes.c_int32.from_address(base + off).value
        b = ctypes.c_int32.from_address(base + off + 4).value
        if (a, b) == MAGIC:
            p.n_predict, p.n_ctx = -1, 0
            return base + off
    raise SystemExit("llama_hf.py: common_params not found in xllamacpp.CommonParams")


LIB = ctypes.CDLL(native.__file__)


def leave(code: int) -> None:
    """Exits at once (the server's threads are not joined at interpreter exit), after
    llama.cpp's log thread wrote out what it holds (pausing it drains its queue)."""
    main_log = LIB[LOG_MAIN]
    main_log.restype = ctypes.c_void_p
    pause = LIB[LOG_PAUSE]
    pause.argtypes = [ctypes.c_void_p]
    pause(main_log())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def parse(args: list[str]) -> "xllamacpp.CommonParams":
    lib = LIB
    fn = lib[PARSE]
    fn.restype = ctypes.c_bool
    fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p,
                   ctypes.c_int, ctypes.c_void_p]
    p = xllamacpp.CommonParams()
    argv = ["llama-server"] + args
    c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[a.encode() for a in argv], None)
    if not fn(len(argv), c_argv, params_address(p), LLAMA_EXAMPLE, None):
        sys.stderr.write("llama_hf.py: llama.cpp's common_params_parse failed\n")
        leave(2)
    return p


def generate(p: "xllamacpp.CommonParams") -> dict:
    p.warmup = False
    p.n_predict = 8
    p.n_ctx = 128
    p.n_parallel = 1
    p.cpuparams.n_threads = 1
    p.cpuparams_batch.n_threads = 1
    p.cache_ram_mib = 0
    server = xllamacpp.Server(p)
    return server.handle_completions({"prompt": "hello world", "max_tokens": 8, "temperature": 0})


def main() -> None:
    args = sys.argv[1:]
    resolve_only = args[:1] == ["--resolve-only"]
    p = parse(args[1:] if resolve_only else args)
    model = p.model.path
    mmproj = p.mmproj.path
    if resolve_only:
        print(json.dumps({"model": model, "mmproj": mmproj, "text": "", "tokens": 0}))
        leave(0)
    p.mmproj.path = ""
    out = generate(p)
    tokens = out.get("usage", {}).get("completion_tokens", 0) if isinstance(out, dict) else 0
    if tokens <= 0:
        sys.stderr.write(f"llama_hf.py: no tokens generated from {model}: {out}\n")
        leave(3)
    text = out["choices"][0]["text"]
    print(json.dumps({"model": model, "mmproj": mmproj, "text": text, "tokens": tokens}))
    leave(0)


if __name__ == "__main__":
    main()
