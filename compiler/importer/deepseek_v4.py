"""DeepSeek-V4 (model_type deepseek_v4): every layer a mixture of experts wrapped, like its
attention, by hyper-connections (std/hyper.ds); each layer's attention chosen by its entry of
compress_ratios (std/compressed.ds: 0 the sliding window only, 4 plus an indexed compressed
memory, 128 plus a heavily compressed one); the first num_hash_layers layers route by token id
(moe_hash), the others by sqrt(softplus) scores (moe_sqrt_softplus), FP4 routed experts;
the MTP block (std/mtp.ds v4_mtp) behind `size n_mtp`, as examples/deepseek_v4_*.ds have it.

What the config does not state and the model takes from DeepSeek-V4's inference code, as the
imported file's notes say: the weights' block scales are UE8M0 bytes, and the KV cache is FP8
with a UE8M0 scale per 64 values (its rotary dims BF16).
"""
from __future__ import annotations

from compiler.errors import DscError
from compiler.importer.config import HFConfig
from compiler.importer.families import Family, Model, read

RATIOS = (0, 4, 128)          # the attentions std/compressed.ds builds: SWA, CSA, HCA

ATTENTION = ["num_attention_heads", "q_lora_rank", "head_dim", "qk_rope_head_dim", "o_groups",
             "o_lora_rank", "sliding_window", "index_n_heads", "index_head_dim", "index_topk"]
EXPERTS = ["n_routed_experts", "num_experts_per_tok", "moe_intermediate_size"]


def hyper_connected(cfg: HFConfig, m: Model, family: Family) -> None:
    m.use("nn", "compressed", "hyper", "moe")
    attention = _attention(cfg, m)
    hash_ffn, score_ffn = _moe(cfg, m)
    hc = read(cfg, m, "hc_mult", int)
    eps = m.const("hc_eps", cfg.get("hc_eps", float, 1e-6))
    cfg.ignore(["hc_sinkhorn_iters"])
    m.notes.append("hc_sinkhorn_iters: the Sinkhorn rounds on the 4 x 4 stream mixing are not "
                   "modelled (std/hyper.ds: a softmax stands for them); swiglu_limit: the "
                   "experts' clamp is not modelled")
    m.inputs.append("input tid2eid: i32[vocab_size, num_experts_per_tok]   "
                    "# the experts of each token id (hash layers)")
    m.stream = f"hs = hc_expand(embedding(tokens, embed), {hc})"
    m.final = f"norm(hc_head(hs, {eps}), rms_norm_eps)"

    def wrapped(ffn: str) -> list[str]:
        return [f"u, post, comb = hc_pre(hs, {eps})",
                f"a = {attention}",
                "hs = hc_post(a, hs, post, comb)",
                f"u, post, comb = hc_pre(hs, {eps})",
                f"ffn = {ffn}",
                "hs = hc_post(reshape(ffn, [batch, seq, hidden_size]), hs, post, comb)"]

    hashed = "min(num_hash_layers, num_hidden_layers)"
    m.layers.append((hashed, ["ids = reshape(tokens, [batch * seq])", *wrapped(hash_ffn)]))
    m.layers.append((f"num_hidden_layers - {hashed}", wrapped(score_ffn)))
    mtp_layers = cfg.get("num_nextn_predict_layers", int, 0, minimum=0)
    if mtp_layers:
        m.const("num_nextn_predict_layers", mtp_layers)
        _mtp(m)


def _mtp(m: Model) -> None:
    """The MTP block (std/mtp.ds v4_mtp), off unless --set n_mtp=1 (with seq=2): its
    attention takes compress_ratios' entry after the main layers'; the main model's embedding
    and head."""
    m.use("mtp")
    m.sizes.append("size n_mtp = 0              # 1: the MTP block drafts the token after next "
                   "(with seq = 2)")
    args = ", ".join(["slice(hs, 1, seq - 1, seq)", "slice(tokens, 1, seq - 1, seq)", "embed",
                      "transpose(embed)" if m.tied else "head", "ctx", "compress_ratios[num_hidden_layers + mtp]", *ATTENTION,
                      *EXPERTS, "scale=routed_scaling_factor", "shared=n_shared_experts",
                      "theta=rope_theta", "eps=rms_norm_eps"])
    m.tail += ["# The MTP block (--set n_mtp=1 --set seq=2); its attention's compression ratio",
               "# is compress_ratios' entry after the main layers'.",
               "repeat min(n_mtp, num_nextn_predict_layers) as mtp {",
               f"  draft_logits = v4_mtp({args})",
               "  output draft = draft_logits",
               "}"]


def _attention(cfg: HFConfig, m: Model) -> str:
    cfg.require("num_key_value_heads", (1,), "one KV head every query head reads, K = V")
    cfg.require("attention_bias", (False, None), "no bias on the projections")
    for name in ATTENTION:
        read(cfg, m, name, int)
    m.const("rope_theta", cfg.get("rope_theta", float, 10000.0))
    m.const("compress_rope_theta", cfg.get("compress_rope_theta", float, 160000.0))
    m.notes.append("every main layer is built with compress_rope_theta, the window-only ones "
                   "too, whose rotary base is rope_theta: it changes only their rotary tables")
    _ratios(cfg, m)
    m.precision["weights"] = "fp8_e4m3 scaled(ue8m0, 128x128)"
    m.precision["kv_cache"] = "fp8_e4m3 scaled(ue8m0, 1x64)"
    m.notes.append("the UE8M0 weight scales and the FP8 KV cache (one UE8M0 scale per 64 "
                   "values, rotary dims in BF16) are DeepSeek-V4's inference code's, not config "
                   "fields")
    args = ", ".join(["ctx", "compress_ratios[layer]", *ATTENTION, "compress_rope_theta",
                      "rms_norm_eps"])
    return f"v4_attention(norm(u, rms_norm_eps), {args})"


def _ratios(cfg: HFConfig, m: Model) -> None:
    """compress_ratios: one entry per layer, then one per MTP layer."""
    ratios = cfg.get("compress_ratios", list)
    layers = cfg.get("num_hidden_layers", int)
    cfg.require("num_nextn_predict_layers", (0, 1, None), "at most one MTP layer (std/mtp.ds)")
    mtp = cfg.get("num_nextn_predict_layers", int, 0, minimum=0)
    if len(ratios) != layers + mtp or any(r not in RATIOS for r in ratios):
        raise DscError(f"config field 'compress_ratios' must list {layers + mtp} entries "
                       f"(num_hidden_layers + num_nextn_predict_layers), each one of "
                       f"{', '.join(map(str, RATIOS))}; got {len(ratios)} entries",
                       cfg.loc("compress_ratios"))
    m.lists.append(("compress_ratios", ratios))


def _moe(cfg: HFConfig, m: Model) -> tuple[str, str]:
    cfg.require("scoring_func", ("sqrtsoftplus",), "DeepSeek-V4's sqrt(softplus) router")
    cfg.require("topk_method", ("noaux_tc",), "bias-corrected top-k routing")
    cfg.require("norm_topk_prob", (True,), "the chosen weights renormalised")
    cfg.require("n_group", (1, None), "no expert groups")
    cfg.require("topk_group", (1, None), "no expert groups")
    cfg.require("expert_dtype", ("fp4",), "FP4 (MXFP4) routed experts, std/moe.ds fp4_experts")
    cfg.ignore(["swiglu_limit"])
    for name in EXPERTS:
        read(cfg, m, name, int)
    read(cfg, m, "num_hash_layers", int, 0)
    scale = read(cfg, m, "routed_scaling_factor", float, 1.0)
    shared = read(cfg, m, "n_shared_experts", int, 0)
    tokens = "reshape(norm(u, rms_norm_eps), [batch * seq, hidden_size])"
    keywords = f"scale={scale}, shared={shared}"
    return (f"moe_hash({tokens}, ids, tid2eid, n_routed_experts, moe_intermediate_size, "
            f"{keywords})",
            f"moe_sqrt_softplus({tokens}, {', '.join(EXPERTS)}, {keywords})")
