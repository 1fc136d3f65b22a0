"""What each Hugging Face `model_type` is built from: an attention block and an FFN block of
the standard library, and the config fields each reads or requires.

A family is data (STACKED); the pieces are small functions that read their fields from the
config into named constants (the config's own field names) and return the .ds call that uses
them. Fields that change nothing dsc models are listed in IGNORED with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from compiler.errors import DscError
from compiler.importer.config import MISSING, HFConfig

# Fields that change no size, no operation and no format of one inference step.
IGNORED = {
    "architectures": "a class name", "auto_map": "code location", "_name_or_path": "a path",
    "transformers_version": "library version", "bos_token_id": "token id",
    "eos_token_id": "token id", "pad_token_id": "token id", "use_cache": "a runtime switch",
    "initializer_range": "training only", "attention_dropout": "training only",
    "output_router_logits": "training only", "router_aux_loss_coef": "training only",
    "aux_loss_alpha": "training only", "seq_aux": "training only",
    "router_jitter_noise": "training only", "ep_size": "a training deployment",
    "pretraining_tp": "a training deployment",
    "max_position_embeddings": "the longest context, not the context of a step (size ctx)",
    "rope_scaling": "changes only the rotary frequency table and the softmax scale",
}


@dataclass
class Model:
    """What the writer turns into .ds text."""
    model_type: str
    constants: list[tuple[str, object]] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    precision: dict[str, str] = field(default_factory=dict)
    layers: list[tuple[str, list[str]]] = field(default_factory=list)   # (count expr, body)
    tied: bool = False
    notes: list[str] = field(default_factory=list)
    lists: list[tuple[str, list]] = field(default_factory=list)   # per-layer lists, file level
    inputs: list[str] = field(default_factory=list)        # declarations besides tokens
    sizes: list[str] = field(default_factory=list)         # sizes besides batch, seq, ctx
    stream: str = "h = embedding(tokens, embed)"           # the residual stream's first line
    tail: list[str] = field(default_factory=list)          # lines after the layers
    final: str = "norm(h, rms_norm_eps)"                   # what the head multiplies

    def const(self, name: str, value) -> str:
        if name not in (n for n, _ in self.constants):
            self.constants.append((name, value))
        return name

    def use(self, *libs: str) -> None:
        for lib in libs:
            if lib not in self.imports:
                self.imports.append(lib)


def read(cfg: HFConfig, m: Model, name: str, kind: type, default=MISSING) -> str:
    """A config field as a named constant of the model; its name is the field's. A count
    with a default (shared experts, dense layers) may be 0."""
    return m.const(name, cfg.get(name, kind, default, minimum=1 if default is MISSING else 0))


# -- attention -------------------------------------------------------------------------------

def _gqa_sizes(cfg: HFConfig, m: Model) -> list[str]:
    hidden = cfg.get("hidden_size", int)
    heads = cfg.get("num_attention_heads", int)
    m.const("num_attention_heads", heads)
    kv_heads = cfg.get("num_key_value_heads", int, heads)
    if heads % kv_heads:
        raise DscError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads "
                       f"{kv_heads}", cfg.loc("num_key_value_heads"))
    if not cfg.has("head_dim") and hidden % heads:
        raise DscError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads} "
                       "and no head_dim is given", cfg.loc("num_attention_heads"))
    m.const("num_key_value_heads", kv_heads)
    m.const("head_dim", cfg.get("head_dim", int, hidden // heads))
    m.const("rope_theta", cfg.get("rope_theta", float, 10000.0))
    return ["ctx", "num_attention_heads", "num_key_value_heads", "head_dim", "rope_theta"]


def gqa(cfg: HFConfig, m: Model) -> str:
    cfg.require("attention_bias", (False, None), "a bias on the projections")
    return f"gqa(norm(h, rms_norm_eps), {', '.join(_gqa_sizes(cfg, m))})"


def gqa_qk_norm(cfg: HFConfig, m: Model) -> str:
    cfg.require("attention_bias", (False, None), "a bias on the projections")
    return f"gqa_qk_norm(norm(h, rms_norm_eps), {', '.join(_gqa_sizes(cfg, m))}, rms_norm_eps)"


def gqa_bias(cfg: HFConfig, m: Model) -> str:
    return f"gqa_bias(norm(h, rms_norm_eps), {', '.join(_gqa_sizes(cfg, m))})"


def mla(cfg: HFConfig, m: Model) -> str:
    """Absorbed MLA; queries through q_lora_rank, or projected directly when it is null."""
    cfg.require("attention_bias", (False, None), "a bias on the projections")
    low_rank = cfg.has("q_lora_rank")
    cfg.ignore(["q_lora_rank", "num_key_value_heads"])   # MLA: every head reads one latent
    names = ["num_attention_heads", *(["q_lora_rank"] if low_rank else []), "kv_lora_rank",
             "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"]
    for name in names:
        read(cfg, m, name, int)
    m.const("rope_theta", cfg.get("rope_theta", float, 10000.0))
    args = ", ".join(["ctx", *names, "rope_theta", "rms_norm_eps"])
    block = "mla_absorbed" if low_rank else "mla_absorbed_direct"
    return f"{block}(norm(h, rms_norm_eps), {args})"


def mla_dsa(cfg: HFConfig, m: Model) -> str:
    """DeepSeek-V3.2: absorbed MLA over the index_topk cached tokens a lightning indexer of
    index_n_heads x index_head_dim picks. Its kernels keep the latent cache in FP8, one FP32
    scale per 128 values of a token (DeepSeek-V3.2's inference code, `kv_cache` 656 bytes per
    token and layer): the config does not say it, the model is built on it."""
    read(cfg, m, "q_lora_rank", int)              # its queries are always low-rank
    mla(cfg, m)                                    # reads and checks the MLA fields
    for name in ("index_n_heads", "index_head_dim", "index_topk"):
        read(cfg, m, name, int)
    m.precision.setdefault("kv_cache", "fp8_e4m3 scaled(fp32, 1x128)")
    m.notes.append("the FP8 latent cache (one FP32 scale per 128 values) is DeepSeek-V3.2's "
                   "inference code's, not a config field")
    args = ", ".join(["ctx", "num_attention_heads", "q_lora_rank", "kv_lora_rank",
                      "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_n_heads",
                      "index_head_dim", "index_topk", "rope_theta", "rms_norm_eps"])
    return f"mla_dsa(norm(h, rms_norm_eps), {args})"


# -- feed-forward ----------------------------------------------------------------------------

def swiglu(cfg: HFConfig, m: Model) -> list[str]:
    read(cfg, m, "intermediate_size", int)
    cfg.require("mlp_bias", (False, None), "a bias on the FFN")
    return ["h = h + swiglu(norm(h, rms_norm_eps), intermediate_size)"]


def _routed(m: Model, call: str) -> list[str]:
    m.use("moe")
    return ["tokens_in = reshape(norm(h, rms_norm_eps), [batch * seq, hidden_size])",
            f"ffn = {call}",
            "h = h + reshape(ffn, [batch, seq, hidden_size])"]


def _every_layer_moe(cfg: HFConfig) -> None:
    cfg.require("decoder_sparse_step", (1, None), "a mixture of experts in every layer")
    cfg.require("mlp_only_layers", ([], None), "a mixture of experts in every layer")
    cfg.ignore(["intermediate_size"])             # the dense FFN width no layer uses


def moe_softmax(experts: str) -> Callable[[HFConfig, Model], list[str]]:
    """Softmax router without bias (Mixtral: num_local_experts, Qwen-MoE: num_experts)."""
    def piece(cfg: HFConfig, m: Model) -> list[str]:
        read(cfg, m, experts, int)
        read(cfg, m, "num_experts_per_tok", int)
        inter = "intermediate_size" if experts == "num_local_experts" else "moe_intermediate_size"
        read(cfg, m, inter, int)
        args = [experts, "num_experts_per_tok", inter]
        if experts == "num_experts":
            _every_layer_moe(cfg)
            args.append(f"norm={read(cfg, m, 'norm_topk_prob', bool, False)}")
            if cfg.has("shared_expert_intermediate_size"):
                args.append(f"shared_inter={read(cfg, m, 'shared_expert_intermediate_size', int)}")
        return _routed(m, f"moe_softmax(tokens_in, {', '.join(args)})")
    return piece


def moe_deepseek(cfg: HFConfig, m: Model) -> list[str]:
    """DeepSeek-V3: sigmoid scores, bias-corrected group-limited top-k, shared experts."""
    cfg.require("scoring_func", ("sigmoid",), "DeepSeek-V3's sigmoid router")
    cfg.require("topk_method", ("noaux_tc",), "DeepSeek-V3's bias-corrected routing")
    cfg.require("norm_topk_prob", (True,), "the chosen weights renormalised")
    cfg.require("moe_layer_freq", (1, None), "a mixture of experts in every layer after the "
                "dense ones")
    names = ["n_routed_experts", "num_experts_per_tok", "moe_intermediate_size"]
    for name in names:
        read(cfg, m, name, int)
    groups = read(cfg, m, "n_group", int, 1)
    topk_groups = read(cfg, m, "topk_group", int, 1)
    scale = read(cfg, m, "routed_scaling_factor", float, 1.0)
    shared = read(cfg, m, "n_shared_experts", int, 0)
    return _routed(m, f"moe(tokens_in, {', '.join(names)}, groups={groups}, "
                   f"topk_groups={topk_groups}, scale={scale}, shared={shared})")


def moe_deepseek_v2(cfg: HFConfig, m: Model) -> list[str]:
    """DeepSeek-V2: softmax scores, greedy top-k, optionally renormalised, times
    routed_scaling_factor; shared experts. Group-limited greedy routing (DeepSeek-V2 itself:
    8 groups, the best 3 by their best expert) limits the top-k to the experts of the
    topk_group groups with the highest maximum score."""
    cfg.require("scoring_func", ("softmax", None), "DeepSeek-V2's softmax router")
    cfg.require("topk_method", ("greedy", "group_limited_greedy", None),
                "greedy or group-limited greedy routing")
    method = cfg.data.get("topk_method")
    cfg.require("moe_layer_freq", (1, None), "a mixture of experts in every layer after the "
                "dense ones")
    names = ["n_routed_experts", "num_experts_per_tok", "moe_intermediate_size"]
    for name in names:
        read(cfg, m, name, int)
    keywords = {"norm": read(cfg, m, "norm_topk_prob", bool, False),
                "scale": read(cfg, m, "routed_scaling_factor", float, 1.0),
                "shared": read(cfg, m, "n_shared_experts", int, 0)}
    if method == "group_limited_greedy":
        keywords["groups"] = read(cfg, m, "n_group", int)
        keywords["topk_groups"] = read(cfg, m, "topk_group", int)
    else:
        cfg.ignore(["n_group", "topk_group"])          # inert under greedy routing
    args = ", ".join([*names, *(f"{k}={v}" for k, v in keywords.items())])
    return _routed(m, f"moe_softmax(tokens_in, {args})")


# -- families --------------------------------------------------------------------------------

def stacked(cfg: HFConfig, m: Model, family: Family) -> None:
    """Pre-norm residual layers, attention then FFN; with a dense prefix, the first
    first_k_dense_replace layers have a SwiGLU FFN instead of the family's."""
    m.use("nn", "attention")
    attention = family.attention(cfg, m)
    ffn = family.ffn(cfg, m)
    if family.dense_prefix:
        dense = read(cfg, m, "first_k_dense_replace", int, 0)
        m.layers.append((dense, [f"h = h + {attention}", *swiglu(cfg, m)]))
        m.layers.append((f"num_hidden_layers - {dense}", [f"h = h + {attention}", *ffn]))
    else:
        m.layers.append(("num_hidden_layers", [f"h = h + {attention}", *ffn]))


@dataclass(frozen=True)
class Family:
    attention: Callable[[HFConfig, Model], str] | None
    ffn: Callable[[HFConfig, Model], list[str]] | None
    dense_prefix: bool = False        # first_k_dense_replace dense layers before the MoE ones
    sliding: str = "none"             # "none": sliding_window must be null; "switch": only
                                      # with use_sliding_window true (Qwen), which is refused;
                                      # "window": the family's layers read it
    layers: Callable[[HFConfig, Model, "Family"], None] = stacked   # builds m.layers
    drafts: bool = False              # builds the MTP block (num_nextn_predict_layers)


# The families whose layers are pre-norm residual attention + FFN (DeepSeek-V4 is in
# deepseek_v4.py); compiler/importer/__init__.py holds the registry of all.
STACKED: dict[str, Family] = {
    "llama": Family(gqa, swiglu),
    "mistral": Family(gqa, swiglu),
    "qwen2": Family(gqa_bias, swiglu, sliding="switch"),
    "qwen3": Family(gqa_qk_norm, swiglu, sliding="switch"),
    "mixtral": Family(gqa, moe_softmax("num_local_experts")),
    "qwen2_moe": Family(gqa_bias, moe_softmax("num_experts"), sliding="switch"),
    "qwen3_moe": Family(gqa_qk_norm, moe_softmax("num_experts"), sliding="switch"),
    "deepseek_v2": Family(mla, moe_deepseek_v2, dense_prefix=True),
    "deepseek_v3": Family(mla, moe_deepseek, dense_prefix=True),
    "deepseek_v32": Family(mla_dsa, moe_deepseek, dense_prefix=True),
}
