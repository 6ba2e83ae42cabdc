// A GGUF file as a checkpoint: the `llama` architecture's metadata as a LlamaConfig, its tensors
// under transformers' names, and its tokenizer from the tokenizer.ggml.* metadata.
//
// Names: token_embd -> model.embed_tokens, blk.N.attn_{norm,q,k,v,output} ->
// model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj}, blk.N.ffn_{norm,gate,up,down} ->
// model.layers.N.{post_attention_layernorm, mlp.{gate,up,down}_proj}, output_norm ->
// model.norm, output -> lm_head (absent: tied embeddings).
//
// llama.cpp's converter stores each q and k weight with its rows permuted for its rotary layout
// (pairs of adjacent dims instead of halves): per weight of n_head heads (n_head_kv for k),
//   gguf = hf.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2).reshape(rows, cols)
// Loading undoes exactly that (gguf_unpermute_rope_rows).
#pragma once

#include <filesystem>
#include <memory>

#include "formats/checkpoint.h"
#include "formats/tokenizer.h"
#include "subq/tensor.h"

namespace subq::formats {

// True for a path whose extension is .gguf (any case).
bool is_gguf_path(const std::filesystem::path& path);

// The config and tensors of a GGUF file. Throws subq::Error naming the file and the key, the
// tensor or the architecture that is missing or not supported.
Checkpoint load_gguf_checkpoint(const std::filesystem::path& file);

// The tokenizer the file's metadata describes: tokenizer.ggml.model "gpt2" (byte-level BPE, with
// the split regex of its tokenizer.ggml.pre). Other models are an error naming them.
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::filesystem::path& file);

// The same from a parsed header (what the loaders above and the fuzz target use); errors start
// with `source`.
LlamaConfig gguf_llama_config(const GgufHeader& header, const std::string& source);
std::unique_ptr<Tokenizer> gguf_tokenizer(const GgufHeader& header, const std::string& source);

// Rows of t ([heads · head_dim, cols], f32) from llama.cpp's rotary order back to transformers'.
void gguf_unpermute_rope_rows(Tensor& t, int64_t heads);

}  // namespace subq::formats
