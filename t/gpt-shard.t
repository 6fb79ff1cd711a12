#!/bin/sh
# gpt-shard end to end: import (HF gpt_oss and gpt2, HF MXFP4 and OpenAI layouts), verify, info, convert,
# split/merge byte-identical round trips, export that transformers loads with equal logits, and clear
# errors on corrupt or hostile checkpoints.
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GPT_BIN:-$root/bin}
ref=$root/t/data/ref
cd "$root" || exit 1
GS="$bin/gpt-shard"
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
[ -x "$GS" ] || { echo "1..0 # SKIP gpt-shard not built"; exit 0; }
n=0
fails=0
ok() { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi; }
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
# The checks that need Python run at the end in one process (importing torch dominates the run time);
# have_np says whether the numpy ones can run at all.
have_np=1
python3 -c "import safetensors, numpy" 2>/dev/null || have_np=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpt-shard-t.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

for m in tiny-gpt-oss tiny-gpt2; do
    "$GS" import -q --from hf "$ref/$m" -o "$tmp/$m" 2>"$tmp/err"
    ok $? "import --from hf $m"
    "$GS" verify -q "$tmp/$m" 2>>"$tmp/err"
    ok $? "verify $m"
    "$GS" info "$tmp/$m" >"$tmp/info" 2>>"$tmp/err"
    grep -q '^parameters: [0-9]* total, [0-9]* active' "$tmp/info"
    ok $? "info $m shows parameter counts"
    # split / merge: byte-identical round trips
    case $m in
        tiny-gpt-oss) meshes="--tp=2,--pp=3,--ep=2 --tp=2,--pp=2 --pp=2,--ep=4 --tp=1" ;;
        *) meshes="--tp=4,--pp=2 --tp=2 --pp=2" ;;
    esac
    for mesh in $meshes; do
        mesh=$(echo "$mesh" | tr ',' ' ')
        rm -rf "$tmp/split" "$tmp/merged"
        # shellcheck disable=SC2086
        "$GS" split -q "$tmp/$m" -o "$tmp/split" $mesh 2>"$tmp/err" && "$GS" merge -q "$tmp/split" -o "$tmp/merged" 2>>"$tmp/err" &&
            diff -r "$tmp/$m" "$tmp/merged" >/dev/null
        ok $? "$m: split $mesh then merge is byte-identical"
    done
    # export -> import gives back the same checkpoint
    "$GS" export -q --to hf "$tmp/$m" -o "$tmp/$m-hf" 2>"$tmp/err" && "$GS" import -q --from hf "$tmp/$m-hf" -o "$tmp/$m-re" 2>>"$tmp/err" &&
        diff -r "$tmp/$m" "$tmp/$m-re" >/dev/null
    ok $? "$m: export --to hf then import is byte-identical"
    # convert: zstd + bf16, then back; every stage verifies
    "$GS" convert -q "$tmp/$m" -o "$tmp/$m-z" --compress zstd:5 --dtype bf16 2>"$tmp/err" && "$GS" verify -q "$tmp/$m-z" &&
        ls "$tmp/$m-z"/*.safetensors.zst >/dev/null
    ok $? "$m: convert --compress zstd:5 --dtype bf16 verifies"
    "$GS" convert -q "$tmp/$m-z" -o "$tmp/$m-z2" --compress none 2>"$tmp/err" && "$GS" convert -q "$tmp/$m-z2" -o "$tmp/$m-z3" --compress zstd:5 &&
        diff -r "$tmp/$m-z" "$tmp/$m-z3" >/dev/null
    ok $? "$m: decompress then recompress is byte-identical"
done

# Corruption: a flipped byte is found and the tensor named; exit status 1.
cp -r "$tmp/tiny-gpt2" "$tmp/bad"
printf 'X' | dd of="$tmp/bad/model.safetensors" bs=1 seek=100000 conv=notrunc 2>/dev/null
"$GS" verify -q "$tmp/bad" 2>"$tmp/err"
st=$?
[ $st -eq 1 ] && grep -q 'tensor .* is corrupt' "$tmp/err"
ok $? "verify names the corrupt tensor and exits 1 ($(cat "$tmp/err"))"
truncate -s 5000 "$tmp/bad/model.safetensors"
"$GS" verify -q "$tmp/bad" 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'truncated\|exceeds' "$tmp/err"
ok $? "a truncated shard: clear error, exit 1"
cp -r "$tmp/tiny-gpt2" "$tmp/bad2"
sed -i 's/"model.safetensors"/"..\/model.safetensors"/' "$tmp/bad2/manifest.json"
"$GS" info "$tmp/bad2" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'plain file name' "$tmp/err"
ok $? "a shard name with '..' or '/' is refused"
"$GS" split -q "$tmp/tiny-gpt-oss" -o "$tmp/s3" --tp 3 2>"$tmp/err"
[ $? -eq 1 ] && [ ! -e "$tmp/s3" ]
ok $? "split --tp 3 of 4 heads fails cleanly and leaves nothing"
"$GS" split -q "$tmp/tiny-gpt-oss" -o "$tmp/s3" --tp 4 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'n_kv_heads' "$tmp/err"
ok $? "split --tp 4 with 2 kv heads is refused"
"$GS" import -q --from hf "$ref/tiny-gpt2" -o "$tmp/tiny-gpt2" 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'already exists' "$tmp/err"
ok $? "an existing destination is not overwritten"

# MXFP4: an HF gpt_oss checkpoint with MXFP4 experts, and the same weights in OpenAI's original layout
# (block.N.attn.qkv, block.N.mlp.mlp1_weight.blocks, ...), made from the fixtures.
if [ $have_np -eq 1 ]; then
    python3 - "$ref" "$tmp" <<'PY'
import json, os, sys, numpy as np
from safetensors.numpy import load_file, save_file
ref, tmp = sys.argv[1], sys.argv[2]
w = load_file(f"{ref}/tiny-gpt-oss/model.safetensors")
q = load_file(f"{ref}/mxfp4/quantized.safetensors")
cfg = json.load(open(f"{ref}/tiny-gpt-oss/config.json"))
L, H, KV, D = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
hf = {}
for k, v in w.items():
    if k.endswith("experts.gate_up_proj") or k.endswith("experts.down_proj"):
        base = "model.layers.0." + k.split(".", 3)[3]  # the fixture's quantized tensors are named for layer 0
        hf[k + "_blocks"], hf[k + "_scales"] = q[base + "_blocks"], q[base + "_scales"]
    else:
        hf[k] = v
os.makedirs(f"{tmp}/hf-mxfp4")
save_file(hf, f"{tmp}/hf-mxfp4/model.safetensors", metadata={"format": "pt"})
json.dump(cfg, open(f"{tmp}/hf-mxfp4/config.json", "w"))
ren = {"input_layernorm.weight": "attn.norm.scale", "self_attn.sinks": "attn.sinks",
       "self_attn.o_proj.weight": "attn.out.weight", "self_attn.o_proj.bias": "attn.out.bias",
       "post_attention_layernorm.weight": "mlp.norm.scale", "mlp.router.weight": "mlp.gate.weight",
       "mlp.router.bias": "mlp.gate.bias", "mlp.experts.gate_up_proj_blocks": "mlp.mlp1_weight.blocks",
       "mlp.experts.gate_up_proj_scales": "mlp.mlp1_weight.scales", "mlp.experts.gate_up_proj_bias": "mlp.mlp1_bias",
       "mlp.experts.down_proj_blocks": "mlp.mlp2_weight.blocks", "mlp.experts.down_proj_scales": "mlp.mlp2_weight.scales",
       "mlp.experts.down_proj_bias": "mlp.mlp2_bias"}
oa = {"embedding.weight": hf["model.embed_tokens.weight"], "norm.scale": hf["model.norm.weight"],
      "unembedding.weight": hf["lm_head.weight"]}
for l in range(L):
    p = f"model.layers.{l}."
    for s in ("weight", "bias"):
        oa[f"block.{l}.attn.qkv.{s}"] = np.concatenate([hf[p + f"self_attn.{x}_proj.{s}"] for x in "qkv"], axis=0)
    for k, v in ren.items():
        oa[f"block.{l}.{v}"] = hf[p + k]
os.makedirs(f"{tmp}/openai")
save_file(oa, f"{tmp}/openai/model.safetensors")
# OpenAI's original config.json (ModelConfig keys of openai/gpt-oss gpt_oss/torch/model.py) for this model
rp = cfg.get("rope_parameters") or cfg["rope_scaling"]
assert cfg["layer_types"] == ["sliding_attention" if l % 2 == 0 else "full_attention" for l in range(L)]
assert cfg["max_position_embeddings"] == rp["original_max_position_embeddings"] * rp["factor"]
json.dump({"num_hidden_layers": L, "num_experts": cfg["num_local_experts"], "experts_per_token": cfg["num_experts_per_tok"],
           "vocab_size": cfg["vocab_size"], "hidden_size": cfg["hidden_size"], "intermediate_size": cfg["intermediate_size"],
           "swiglu_limit": cfg["swiglu_limit"], "head_dim": D, "num_attention_heads": H, "num_key_value_heads": KV,
           "sliding_window": cfg["sliding_window"], "initial_context_length": rp["original_max_position_embeddings"],
           "rope_theta": rp["rope_theta"], "rope_scaling_factor": rp["factor"], "rope_ntk_alpha": rp["beta_slow"],
           "rope_ntk_beta": rp["beta_fast"]}, open(f"{tmp}/openai/config.json", "w"))
PY
    ok $? "made HF-MXFP4 and OpenAI-layout checkpoints from the fixtures"
    "$GS" import -q --from hf "$tmp/hf-mxfp4" -o "$tmp/mx" 2>"$tmp/err" && "$GS" verify -q "$tmp/mx" &&
        "$GS" info "$tmp/mx" | grep -q 'experts.gate_up_proj_blocks  *U8'
    ok $? "import --from hf keeps MXFP4 experts as they are"
    "$GS" import -q --from openai --config "$ref/tiny-gpt-oss/model.yaml" "$tmp/openai" -o "$tmp/oa" 2>"$tmp/err" &&
        diff -r "$tmp/mx" "$tmp/oa" >/dev/null
    ok $? "import --from openai equals the HF import byte for byte $(cat "$tmp/err")"
    "$GS" import -q --from openai "$tmp/openai" -o "$tmp/oa2" 2>"$tmp/err" && diff -r "$tmp/mx" "$tmp/oa2" >/dev/null
    ok $? "import --from openai reads OpenAI's config.json (no --config) and equals the HF import $(cat "$tmp/err")"
    echo '{"num_hidden_layers": 3, "model_type": "gpt_oss"}' >"$tmp/openai/config.json"
    "$GS" import -q --from openai "$tmp/openai" -o "$tmp/oa3" 2>"$tmp/err"
    [ $? -eq 1 ] && grep -q 'unknown key "model_type"' "$tmp/err" && [ ! -e "$tmp/oa3" ]
    ok $? "an OpenAI config.json with a key ModelConfig does not have is refused"
    rm -rf "$tmp/split" "$tmp/merged"
    "$GS" split -q "$tmp/mx" -o "$tmp/split" --ep 4 --pp 3 2>"$tmp/err" && "$GS" merge -q "$tmp/split" -o "$tmp/merged" &&
        diff -r "$tmp/mx" "$tmp/merged" >/dev/null
    ok $? "MXFP4 checkpoint: split --ep 4 --pp 3 then merge is byte-identical"
    "$GS" split -q "$tmp/mx" -o "$tmp/s4" --tp 2 2>"$tmp/err"
    [ $? -eq 1 ] && grep -q 'down_proj_blocks.*does not divide' "$tmp/err"
    ok $? "MXFP4 down_proj with one block per row cannot be cut by --tp 2: clear error"
    "$GS" import -q --from hf --dtype f32 "$tmp/hf-mxfp4" -o "$tmp/mxf" 2>"$tmp/err" &&
        "$GS" convert -q --dtype f32 "$tmp/mx" -o "$tmp/mxf2" && diff -r "$tmp/mxf" "$tmp/mxf2" >/dev/null
    ok $? "import --dtype f32 dequantizes MXFP4 the same as convert --dtype f32"
    "$GS" export -q --to hf "$tmp/mx" -o "$tmp/mx-hf" 2>"$tmp/err"
    ok $? "export --to hf of the MXFP4 checkpoint"
else
    skip "python3 safetensors/numpy not installed: MXFP4 and OpenAI-layout checks"
fi

# ---- the Python checks, one process: numpy ones, then those that need torch/transformers ----
if [ $have_np -eq 1 ]; then
    python3 - "$tmp" "$ref" "$root" >"$tmp/py" 2>"$tmp/pyerr" <<'PY'
import importlib.util, os, sys
import numpy as np
from safetensors.numpy import load_file
tmp, ref, root = sys.argv[1:4]
def res(st, msg):
    print(f"R {st} {msg}", flush=True)
for m in ("tiny-gpt-oss", "tiny-gpt2"):
    a, b = load_file(f"{tmp}/{m}/model.safetensors"), load_file(f"{ref}/{m}/model.safetensors")
    res("ok" if all(k in a and np.array_equal(a[k], v) for k, v in b.items()) else "fail",
        f"{m}: Python safetensors reads our shard and every tensor equals the HF original")
try:
    import torch, transformers
except Exception as e:
    for _ in range(3):
        res("skip", f"torch/transformers not importable ({type(e).__name__}): export not checked against transformers")
    sys.exit(0)
spec = importlib.util.spec_from_file_location("export_check", f"{root}/scripts/make-export-check.py")
ec = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ec)
for m in ("tiny-gpt-oss", "tiny-gpt2"):
    lines = []
    try:
        f = ec.check(f"{tmp}/{m}-hf", f"{ref}/{m}", out=lines.append)
    except Exception as e:
        f, lines = 1, lines + [repr(e)]
    for l in lines[-5:] if f else []:
        print("# " + l)
    res("fail" if f else "ok", f"{m}: transformers loads our export and its logits equal expected.safetensors")
from safetensors.torch import load_file as tload
from transformers.integrations.mxfp4 import convert_moe_packed_tensors
if os.path.exists(f"{tmp}/mx-hf/model.safetensors"):
    ours, q = tload(f"{tmp}/mx-hf/model.safetensors"), tload(f"{ref}/mxfp4/quantized.safetensors")
    good = True
    for name in ("gate_up_proj", "down_proj"):
        want = convert_moe_packed_tensors(q[f"model.layers.0.mlp.experts.{name}_blocks"],
                                          q[f"model.layers.0.mlp.experts.{name}_scales"], dtype=torch.float32)
        good &= all(torch.equal(ours[f"model.layers.{l}.mlp.experts.{name}"], want) for l in range(3))
    res("ok" if good else "fail", "MXFP4 experts exported dequantized equal transformers' convert_moe_packed_tensors")
else:
    res("fail", "MXFP4 export missing: nothing to compare with transformers")
PY
    st=$?
    while read -r tag status msg; do
        if [ "$tag" = R ]; then
            case $status in
                ok) ok 0 "$msg" ;;
                skip) skip "$msg" ;;
                *) ok 1 "$msg" ;;
            esac
        else
            echo "# $tag $status $msg"
        fi
    done <"$tmp/py"
    [ $st -eq 0 ] || { ok 1 "the Python checks ran to the end (exit $st)"; sed 's/^/# /' "$tmp/pyerr" | tail -5; }
else
    skip "python3 safetensors/numpy not installed: Python-side checks"
fi

echo "1..$n"
[ $fails -eq 0 ]
