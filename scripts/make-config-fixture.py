#!/usr/bin/env python3
"""Write t/data/config/hf-defaults.txt: the model values Hugging Face transformers gives for each
preset in share/configs, in our key names, as an independent oracle for t/test_config.c.

    pip install transformers        # no torch needed for the config classes
    scripts/make-config-fixture.py > t/data/config/hf-defaults.txt

gpt-oss-120b is GptOssConfig() (its defaults are the 120b model) except router_aux_loss_coef,
0.9 in both published config.json files (openai/gpt-oss-{20b,120b}) but 0.001 as a class default.
gpt-oss-20b also takes the two values in which its published config.json differs from the
120b: num_hidden_layers 24, num_local_experts 32. GPT-2 sizes are GPT2Config with the
n_embd/n_layer/n_head of the openai-community/gpt2{,-medium,-large,-xl} checkpoints.
Line format: PRESET KEY VALUE, with KEY a dotted gpt-config(5) key."""
import sys

import transformers
from transformers import GPT2Config, GptOssConfig

out = []


def emit(preset, key, value):
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, float):
        value = repr(value)
    out.append(f"{preset} {key} {value}")


def layer_pattern(layer_types):
    sliding = [i for i, t in enumerate(layer_types) if t == "sliding_attention"]
    n = len(layer_types)
    if not sliding:
        return "none"
    if len(sliding) == n:
        return "all"
    if sliding == list(range(0, n, 2)):
        return "even"
    if sliding == list(range(1, n, 2)):
        return "odd"
    return "[" + ",".join(map(str, sliding)) + "]"


def gpt_oss(preset, **overrides):
    c = GptOssConfig(**overrides)
    rope = getattr(c, "rope_parameters", None) or dict(getattr(c, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(c, "rope_theta", None))
    emit(preset, "model.vocab_size", c.vocab_size)
    emit(preset, "model.d_model", c.hidden_size)
    emit(preset, "model.n_layers", c.num_hidden_layers)
    emit(preset, "model.n_heads", c.num_attention_heads)
    emit(preset, "model.n_kv_heads", c.num_key_value_heads)
    emit(preset, "model.d_head", c.head_dim)
    emit(preset, "model.max_seq_len", c.max_position_embeddings)
    emit(preset, "model.norm", "rmsnorm")  # GptOssRMSNorm in every position
    emit(preset, "model.norm_eps", float(c.rms_norm_eps))
    emit(preset, "model.positions", "rope")
    emit(preset, "model.rope.theta", float(theta))
    emit(preset, "model.rope.scaling", rope.get("rope_type", "none"))
    emit(preset, "model.rope.factor", float(rope["factor"]))
    emit(preset, "model.rope.original_max_seq_len", rope["original_max_position_embeddings"])
    emit(preset, "model.rope.beta_fast", float(rope["beta_fast"]))
    emit(preset, "model.rope.beta_slow", float(rope["beta_slow"]))
    emit(preset, "model.rope.truncate", bool(rope.get("truncate", True)))
    emit(preset, "model.attention.bias", c.attention_bias)
    emit(preset, "model.attention.sinks", True)  # GptOssAttention always has per-head sinks
    emit(preset, "model.attention.sliding_window", c.sliding_window)
    emit(preset, "model.attention.sliding_window_layers", layer_pattern(c.layer_types))
    emit(preset, "model.mlp.type", "moe")
    emit(preset, "model.mlp.n_experts", c.num_local_experts)
    emit(preset, "model.mlp.experts_per_token", c.num_experts_per_tok)
    emit(preset, "model.mlp.d_expert", c.intermediate_size)
    emit(preset, "model.mlp.swiglu_alpha", float(getattr(c, "swiglu_alpha", 1.702)))
    emit(preset, "model.mlp.swiglu_limit", float(c.swiglu_limit))
    emit(preset, "model.mlp.router_aux_loss_coef", float(c.router_aux_loss_coef))
    emit(preset, "model.tie_embeddings", c.tie_word_embeddings)
    emit(preset, "model.init_std", float(c.initializer_range))


def gpt2(preset, **overrides):
    c = GPT2Config(**overrides)
    act = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}.get(c.activation_function, c.activation_function)
    emit(preset, "model.vocab_size", c.vocab_size)
    emit(preset, "model.d_model", c.n_embd)
    emit(preset, "model.n_layers", c.n_layer)
    emit(preset, "model.n_heads", c.n_head)
    emit(preset, "model.n_kv_heads", c.n_head)
    emit(preset, "model.d_head", c.n_embd // c.n_head)
    emit(preset, "model.max_seq_len", c.n_positions)
    emit(preset, "model.norm", "layernorm")
    emit(preset, "model.norm_eps", float(c.layer_norm_epsilon))
    emit(preset, "model.positions", "learned")
    emit(preset, "model.attention.bias", True)  # Conv1D c_attn/c_proj carry biases
    emit(preset, "model.attention.sinks", False)
    emit(preset, "model.attention.sliding_window_layers", "none")
    emit(preset, "model.mlp.type", "dense")
    emit(preset, "model.mlp.activation", act)
    emit(preset, "model.mlp.d_ff", c.n_inner if c.n_inner is not None else 4 * c.n_embd)
    emit(preset, "model.mlp.bias", True)
    emit(preset, "model.tie_embeddings", c.tie_word_embeddings)
    emit(preset, "model.init_std", float(c.initializer_range))


gpt_oss("gpt-oss-120b", router_aux_loss_coef=0.9)
gpt_oss("gpt-oss-20b", num_hidden_layers=24, num_local_experts=32, router_aux_loss_coef=0.9)
gpt2("gpt2-124m")
gpt2("gpt2-350m", n_embd=1024, n_layer=24, n_head=16)
gpt2("gpt2-774m", n_embd=1280, n_layer=36, n_head=20)
gpt2("gpt2-1558m", n_embd=1600, n_layer=48, n_head=25)

sys.stdout.write(f"# generated by scripts/make-config-fixture.py from transformers {transformers.__version__}\n")
sys.stdout.write("\n".join(out) + "\n")
