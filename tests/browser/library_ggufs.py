# The GGUF files of the Library tab test (tests/browser.rs), written by llama.cpp's own
# writer (the `gguf` package): real headers and tensor infos with the shapes of real
# models, and tensor data left as a hole, so that a "1.2 B" model costs no disk.
import os, numpy as np, gguf
from gguf import GGMLQuantizationType as Q, GGML_QUANT_SIZES

def write(out, arch, kv, tensors, split=None):
    # The header is real; the tensor data is a hole of the size the shapes need.
    os.makedirs(os.path.dirname(out), exist_ok=True)
    w = gguf.GGUFWriter(out, arch)
    if split:
        w.add_uint16("split.no", split[0]); w.add_uint16("split.count", split[1])
        w.add_int32("split.tensors.count", split[2])
    if kv:
        w.add_name(kv["name"]); w.add_context_length(kv["ctx"]); w.add_block_count(kv["blocks"])
        w.add_embedding_length(kv["emb"]); w.add_file_type(kv["ftype"]); w.add_chat_template("{{ messages }}")
    data = 0
    for name, shape, qt in tensors:
        block, size = GGML_QUANT_SIZES[qt]
        nbytes = int(np.prod(shape)) // block * size
        w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=qt)
        data += (nbytes + 31) // 32 * 32
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_ti_data_to_file(); w.close()
    with open(out, "r+b") as f:
        f.truncate((os.path.getsize(out) + 31) // 32 * 32 + data)

def blocks(r, q, kv, ff, e, qt, bias=False):
    for i in r:
        b = f"blk.{i}."
        yield from [(b + "attn_norm.weight", (e,), Q.F32), (b + "ffn_norm.weight", (e,), Q.F32),
                    (b + "attn_q.weight", (e, e), qt), (b + "attn_k.weight", (kv, e), qt),
                    (b + "attn_v.weight", (kv, e), qt), (b + "attn_output.weight", (e, e), qt),
                    (b + "ffn_gate.weight", (ff, e), qt), (b + "ffn_up.weight", (ff, e), qt),
                    (b + "ffn_down.weight", (e, ff), qt)]
        if bias:
            yield from [(b + "attn_q.bias", (e,), Q.F32), (b + "attn_k.bias", (kv,), Q.F32), (b + "attn_v.bias", (kv,), Q.F32)]

root = os.environ["DOWNLOADS"]
# Hand-placed, in a folder: Llama 3.2 1B's shapes, 1,235,814,400 parameters.
write(f"{root}/bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf", "llama",
      dict(name="Llama 3.2 1B Instruct", ctx=131072, blocks=16, emb=2048, ftype=15),
      [("token_embd.weight", (128256, 2048), Q.Q4_K), ("output_norm.weight", (2048,), Q.F32)]
      + list(blocks(range(16), 2048, 512, 8192, 2048, Q.Q4_K)))
# Hand-placed, split in two parts: Qwen2.5 0.5B's shapes, 494,032,768 parameters.
qwen = "Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q8_0"
first = [("token_embd.weight", (151936, 896), Q.Q8_0), ("output_norm.weight", (896,), Q.F32)] \
    + list(blocks(range(12), 896, 128, 4864, 896, Q.Q8_0, bias=True))
second = list(blocks(range(12, 24), 896, 128, 4864, 896, Q.Q8_0, bias=True))
write(f"{root}/{qwen}-00001-of-00002.gguf", "qwen2",
      dict(name="Qwen2.5 0.5B Instruct", ctx=32768, blocks=24, emb=896, ftype=7), first, (0, 2, len(first) + len(second)))
write(f"{root}/{qwen}-00002-of-00002.gguf", "qwen2", None, second, (1, 2, len(first) + len(second)))
# Damaged: a header that ends in the middle of its first count.
with open(f"{root}/old-model-Q5_K_M.gguf", "wb") as f:
    f.write(b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\x7f")
# For the Hub (real bytes, it serves them from memory): llama2.c's stories15M shapes.
write(os.environ["HUB_FILE"], "llama", dict(name="Stories 15M", ctx=4096, blocks=6, emb=288, ftype=7),
      [("token_embd.weight", (32000, 288), Q.Q8_0), ("output_norm.weight", (288,), Q.F32)]
      + list(blocks(range(6), 288, 288, 768, 288, Q.Q8_0)))
