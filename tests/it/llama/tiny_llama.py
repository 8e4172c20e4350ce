"""Writes a tiny llama GGUF that the real llama.cpp loads and generates from in
milliseconds: llama architecture, tiny dimensions, a SentencePiece-style vocabulary
(the 256 byte tokens plus a few words, so any text tokenizes), random F32 weights.

usage: tiny_llama.py OUT [--seed N]

Different seeds give different files (and digests): a test's "quantizations" are
files of the same tiny model, told apart by the tag in their names.
"""

import argparse

import numpy as np
from gguf import GGUFWriter, LlamaFileType, TokenType

N_EMBD = 16
N_HEAD = 2
N_HEAD_KV = 2
N_FF = 32
N_LAYER = 1
N_CTX = 128
WORDS = ["▁the", "▁a", "▁model", "▁hello", "▁world", "e", "t", "a", "o", "▁"]


def vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    tokens += WORDS
    types += [TokenType.NORMAL] * len(WORDS)
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(WORDS))]
    return tokens, scores, [int(t) for t in types]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    tokens, scores, types = vocab()

    w = GGUFWriter(args.out, "llama")
    w.add_name(f"tiny-llama-{args.seed}")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)

    def t(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))

    n_vocab = len(tokens)
    t("token_embd.weight", n_vocab, N_EMBD)
    t("output_norm.weight", N_EMBD)
    t("output.weight", n_vocab, N_EMBD)
    kv = N_EMBD // N_HEAD * N_HEAD_KV
    for i in range(N_LAYER):
        t(f"blk.{i}.attn_norm.weight", N_EMBD)
        t(f"blk.{i}.attn_q.weight", N_EMBD, N_EMBD)
        t(f"blk.{i}.attn_k.weight", kv, N_EMBD)
        t(f"blk.{i}.attn_v.weight", kv, N_EMBD)
        t(f"blk.{i}.attn_output.weight", N_EMBD, N_EMBD)
        t(f"blk.{i}.ffn_norm.weight", N_EMBD)
        t(f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD)
        t(f"blk.{i}.ffn_up.weight", N_FF, N_EMBD)
        t(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
