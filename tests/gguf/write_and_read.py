"""Writes GGUF files with llama.cpp's own `gguf` package (PyPI), reads them back with its
`GGUFReader`, and prints, as JSON, what that reader sees for every field our
`gguf::read_header` reports. Used by tests/gguf_compat.rs; usage: write_and_read.py DIR
"""

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import quant_shape_to_byte_shape

CHAT_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
)


def llama_metadata(w: GGUFWriter, name: str) -> None:
    """The keys convert_hf_to_gguf.py writes for a Llama 3.2 1B, with their types."""
    w.add_name(name)
    w.add_context_length(131072)
    w.add_embedding_length(2048)
    w.add_block_count(16)
    w.add_feed_forward_length(8192)
    w.add_rope_dimension_count(64)
    w.add_head_count(32)
    w.add_head_count_kv(8)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(15)  # MOSTLY_Q4_K_M
    w.add_quantization_version(2)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["<|begin_of_text|>", "<|eot_id|>", "hello", "wörld"])
    w.add_token_types([3, 3, 1, 1])
    w.add_token_merges(["h e", "l l"])
    w.add_bos_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template(CHAT_TEMPLATE)
    # Value types the writer above does not use, and an array of arrays.
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -5)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_int64("test.i64", -(1 << 40))
    w.add_uint64("test.u64", 1 << 50)
    w.add_float64("test.f64", 2.5)
    w.add_array("test.nested", [[1, 2, 3], [4], [5, 6]])
    w.add_array("test.strings_nested", [["a", "bc"], ["déf"]])


def quantized(w: GGUFWriter, name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType) -> None:
    """A tensor of `shape` (numpy order) stored as `qtype` (GGUFWriter takes its byte shape)."""
    byte_shape = quant_shape_to_byte_shape(shape, qtype)
    w.add_tensor(name, np.zeros(byte_shape, dtype=np.uint8), raw_shape=byte_shape, raw_dtype=qtype)


def llama_tensors(w: GGUFWriter) -> None:
    w.add_tensor("token_embd.weight", np.ones((256, 64), dtype=np.float16))
    w.add_tensor("output_norm.weight", np.ones((64,), dtype=np.float32))
    quantized(w, "blk.0.attn_q.weight", (64, 64), GGMLQuantizationType.Q8_0)
    quantized(w, "blk.0.ffn_up.weight", (128, 256), GGMLQuantizationType.Q4_K)
    w.add_tensor("blk.0.conv.weight", np.ones((2, 3, 4, 5), dtype=np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones((3, 7, 64), dtype=np.float16))


def write(w: GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_files(out: Path) -> list[Path]:
    v3 = out / "llama-v3.gguf"
    w = GGUFWriter(v3, "llama")
    llama_metadata(w, "Llama 3.2 1B Instruct")
    llama_tensors(w)
    write(w)

    # GGUFWriter writes only GGUF_VERSION (3). Version 2 differs from 3 only in that 3
    # allows big-endian files: a little-endian v3 file with its version field set to 2 is
    # a valid v2 file, and GGUFReader reads both.
    v2 = out / "llama-v2.gguf"
    data = bytearray(v3.read_bytes())
    assert data[4:8] == (3).to_bytes(4, "little")
    data[4:8] = (2).to_bytes(4, "little")
    v2.write_bytes(bytes(data))

    # A split model as llama.cpp's gguf-split lays it out: every part carries split.no
    # (u16), split.count (u16) and split.tensors.count (i32); only the first part carries
    # the model's metadata. GGUFWriter's split_max_tensors writes exactly that.
    w = GGUFWriter(out / "split.gguf", "llama", split_max_tensors=2)
    llama_metadata(w, "Split Llama")
    llama_tensors(w)
    write(w)

    # A vocabulary the size of Qwen2's or Llama 3's: 150,000 strings, with scores and types.
    w = GGUFWriter(out / "vocab-150k.gguf", "qwen2")
    w.add_name("Qwen Vocabulary")
    w.add_context_length(32768)
    w.add_block_count(24)
    w.add_embedding_length(896)
    w.add_file_type(1)
    w.add_token_list([f"token_{i}_\u0120x" for i in range(150_000)])
    w.add_token_scores([float(-i) for i in range(150_000)])
    w.add_token_types([1] * 150_000)
    w.add_token_merges([f"a{i} b{i}" for i in range(150_000)])
    w.add_tensor("token_embd.weight", np.zeros((16, 896), dtype=np.float16))
    write(w)
    return sorted(out.glob("*.gguf"))


def value(reader: GGUFReader, key: str):
    field = reader.get_field(key)
    return None if field is None else field.contents()


def seen(path: Path) -> dict:
    """What GGUFReader reads, in the shape of our `gguf` object."""
    r = GGUFReader(path)
    arch = value(r, "general.architecture")
    no, count = value(r, "split.no"), value(r, "split.count")
    return {
        "version": value(r, "GGUF.version"),
        "architecture": arch,
        "name": value(r, "general.name"),
        "context_length": value(r, f"{arch}.context_length") if arch else None,
        "block_count": value(r, f"{arch}.block_count") if arch else None,
        "embedding_length": value(r, f"{arch}.embedding_length") if arch else None,
        "file_type": value(r, "general.file_type"),
        "parameters": sum(int(t.n_elements) for t in r.tensors),
        "chat_template": r.get_field("tokenizer.chat_template") is not None,
        "split": None if no is None or count is None else {"no": no, "count": count},
        # Where the header ends: the test cuts the file at every byte before it.
        "_data_offset": r.data_offset,
    }


def main() -> None:
    out = Path(sys.argv[1])
    files = write_files(out)
    report = {p.name: seen(p) for p in files}
    report["_gguf_version"] = importlib.metadata.version("gguf")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
