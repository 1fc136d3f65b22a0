"""A deployment: how many devices run a model, and how each part of it is spread over them.

    --devices 144 --plan attn=dp,moe=ep,mb=2

| key | values | meaning |
|---|---|---|
| `attn` | `dp`, `tpN` | attention and everything outside the FFNs: data parallel (replicated weights, each replica its own requests), or tensor parallel over groups of N devices (heads split) |
| `ffn` | `dp`, `tpN` | dense FFNs (and shared experts, unless `moe=ep`); default: as `attn` |
| `moe` | `ep`, `dp`, `tpN` | routed experts: expert parallel over all devices (dispatch and combine become all-to-all), replicated, or each expert split over N devices |
| `mb` | `1`, `2` | micro-batches: with 2, one half-batch's communication overlaps the other's compute |
| `overlap` | `alternate`, `five_stage` | how two micro-batches overlap: phase by phase, each all-to-all under the other half's next phase (default), or DeepSeek's five-stage decode pipeline, attention split in two and the second half a stage behind, so each all-to-all runs under half of the other's attention (compiler/passes/micro_batch.py) |
| `a2a` | `direct`, `node` | expert all-to-all: each token straight to every device it reaches (DeepEP's low-latency kernels), or once per remote node and forwarded there over NVLink (its normal kernels) |
| `load` | `uniform`, `zipf:S`, `FILE` | the share of routed tokens each expert receives: equal, a Zipf law of exponent S, or a histogram file (one count per expert) |
| `redundant` | `0`, `R` | redundant expert copies, placed with the experts by DeepSeek's load balancer (EPLB) |
| `comm_cores` | `0`, `N` | cores of each device held by communication kernels (DeepEP's normal kernels hold 20-24 SMs in prefill, its low-latency ones none): the compute kernels run on the others |
| `launch` | `stream`, `graph`, `dependent` | how kernels are launched: one by one on a stream, replayed from a captured graph, or as programmatic dependent launches whose launch overlaps the previous kernel's tail; each costs what the target says (`launch_overhead_us`, `[launch]`). Default: `graph` for a step that continues sequences (decode, as production serves it), `stream` otherwise |

The model's sizes describe one attention replica (`batch` requests on each data-parallel
replica); the devices of a tensor-parallel group share one replica's requests. Parts may mix
(`attn=tp4,moe=ep`, `attn=dp,ffn=tp8`) over one group size. The plan text
is the same on the command line, in a listing header and in a model's `deploy { ... }` block.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

_MODES = {"attn": ("dp", "tp"), "ffn": ("dp", "tp"), "moe": ("ep", "dp", "tp")}
LAUNCH_MODES = ("stream", "graph", "dependent")
OVERLAPS = ("alternate", "five_stage")


class DeploymentError(ValueError):
    """A plan or device count that cannot be used; the message says what was expected and
    `key` which item is wrong (devices, attn, ffn, moe, micro_batches, overlap, ...)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Deployment:
    devices: int = 1
    per_node: int = 1                 # devices joined by the intra-node link
    attn: str = "dp"
    ffn: str = "dp"
    moe: str = "ep"
    micro_batches: int = 1
    a2a: str = "direct"
    load: str = "uniform"             # expert load: uniform, zipf:S, or a histogram file
    redundant: int = 0                # redundant expert copies (EPLB)
    launch: str = "stream"            # LAUNCH_MODES
    overlap: str = "alternate"        # OVERLAPS: how two micro-batches interleave
    comm_cores: int = 0               # cores held by communication kernels

    def __post_init__(self):
        if self.devices < 1 or self.per_node < 1:
            raise DeploymentError(f"the device count must be a positive integer, got "
                                  f"{self.devices}", "devices")
        for part in ("attn", "ffn", "moe"):
            mode = getattr(self, part)
            if not re.fullmatch(rf"({'|'.join(_MODES[part])})(\d*)", mode) or (
                    mode[:2] != "tp" and mode[2:]) or mode[2:].startswith("0"):
                raise DeploymentError(f"plan {part}={mode}: expected one of "
                                      f"{', '.join(m + ('N' if m == 'tp' else '') for m in _MODES[part])}"
                                      " (N a positive integer)", part)
            if self.tp(part) > self.devices or self.devices % self.tp(part):
                raise DeploymentError(f"plan {part}={mode}: the tensor-parallel degree must divide "
                                      f"the {self.devices} devices", part)
        if self.a2a not in ("direct", "node"):
            raise DeploymentError(f"plan a2a={self.a2a}: expected direct or node", "a2a")
        if not self.load or any(c.isspace() or c in ',"' for c in self.load):
            raise DeploymentError(f"plan load={self.load}: expected uniform, zipf:S or the "
                                  "path of a histogram file (no spaces, commas or quotes)", "load")
        if self.redundant < 0:
            raise DeploymentError(f"plan redundant={self.redundant}: expected a number of "
                                  "redundant experts >= 0", "redundant")
        if self.comm_cores < 0:
            raise DeploymentError(f"plan comm_cores={self.comm_cores}: expected a number of "
                                  "cores >= 0", "comm_cores")
        if self.launch not in LAUNCH_MODES:
            raise DeploymentError(f"plan launch={self.launch}: expected one of "
                                  f"{', '.join(LAUNCH_MODES)}", "launch")
        if self.micro_batches not in (1, 2):
            raise DeploymentError(f"plan mb={self.micro_batches}: expected 1 or 2 micro-batches",
                                  "micro_batches")
        if self.overlap not in OVERLAPS:
            raise DeploymentError(f"plan overlap={self.overlap}: expected one of "
                                  f"{', '.join(OVERLAPS)}", "overlap")
        if self.overlap != "alternate" and self.micro_batches != 2:
            raise DeploymentError(f"plan overlap={self.overlap}: it interleaves two "
                                  "micro-batches; add mb=2", "overlap")

    # -- derived --

    def tp(self, part: str) -> int:
        """The tensor-parallel degree of a part (1 unless its mode is tpN; bare tp: all devices)."""
        mode = getattr(self, part)
        if not mode.startswith("tp"):
            return 1
        return int(mode[2:]) if mode[2:] else self.devices

    @property
    def group(self) -> int:
        """Devices of a tensor-parallel group (1: none)."""
        return max(self.tp(part) for part in ("attn", "ffn", "moe"))

    @property
    def shared_batch(self) -> int:
        """Devices whose own requests a group's graph holds: a tensor-parallel group with data
        parallel attention (attn=dp,ffn=tp8) runs its devices' requests together through the
        split parts; with tensor-parallel attention the group shares one replica's."""
        return self.group if self.tp("attn") == 1 else 1

    @property
    def replicas(self) -> int:
        """Data-parallel attention replicas: each runs the model's batch."""
        return self.devices // self.tp("attn")

    @property
    def nodes(self) -> int:
        return math.ceil(self.devices / self.per_node)

    @property
    def plan_text(self) -> str:
        """How the model is spread (the launch mode is not part of it)."""
        text = f"attn={self.attn},ffn={self.ffn},moe={self.moe}"
        text += f",mb={self.micro_batches}" if self.micro_batches > 1 else ""
        text += f",overlap={self.overlap}" if self.overlap != "alternate" else ""
        text += f",a2a={self.a2a}" if self.a2a != "direct" else ""
        text += f",load={self.load}" if self.load != "uniform" else ""
        text += f",redundant={self.redundant}" if self.redundant else ""
        return text + (f",comm_cores={self.comm_cores}" if self.comm_cores else "")

    def __str__(self) -> str:
        if self.devices == 1:
            return "1 device"
        nodes = f"{self.nodes} node{'s' if self.nodes > 1 else ''}"
        return (f"{self.devices} devices ({nodes} x {self.per_node}), "
                f"{self.plan_text.replace(',', ' ')}")


def parse_plan(text: str) -> dict[str, str | int]:
    """`attn=dp,moe=ep,mb=2` -> {"attn": "dp", "moe": "ep", "micro_batches": 2}."""
    out: dict[str, str | int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise DeploymentError(f"plan item '{item}': expected KEY=VALUE, e.g. attn=dp,moe=ep")
        if ("micro_batches" if key == "mb" else key) in out:
            raise DeploymentError(f"plan key '{key}' is given twice")
        if key in ("mb", "redundant", "comm_cores"):
            if not value.isdigit():
                raise DeploymentError(f"plan {key}={value}: expected "
                                      + {"mb": "1 or 2 micro-batches",
                                         "redundant": "a number of redundant experts",
                                         "comm_cores": "a number of cores"}[key])
            out["micro_batches" if key == "mb" else key] = int(value)
        elif key in _MODES or key in ("a2a", "load", "launch", "overlap"):
            out[key] = value
        else:
            raise DeploymentError(f"unknown plan key '{key}' (expected attn, ffn, moe, mb, "
                                  "overlap, a2a, load, redundant, comm_cores or launch)")
    return out


def make_deployment(devices: int, per_node: int, plan: dict[str, str | int]) -> Deployment:
    """A deployment from a device count and parsed plan items; `ffn` follows `attn` unless
    given."""
    items = {k: ("dp" if v == "tp1" else v) for k, v in plan.items()}   # a group of one
    items.setdefault("ffn", items.get("attn", "dp"))
    return Deployment(devices, min(per_node, devices), **items)


def reserve_cores(target, deployment: Deployment):
    """The target the compute kernels see: `comm_cores` fewer cores, taken evenly from each
    die (the communication kernels hold them; their own cost is the links')."""
    held = deployment.comm_cores
    if not held:
        return target
    dies, per_die = target.chip.dies, target.chip.cores_per_die
    if held % dies or held // dies >= per_die:
        raise DeploymentError(f"plan comm_cores={held}: {target.name} has {dies} "
                              f"die{'s' if dies > 1 else ''} of {per_die} cores; the held cores "
                              "are taken evenly from each die and leave at least one",
                              "comm_cores")
    return replace(target, chip=replace(target.chip, cores_per_die=per_die - held // dies))
