"""Source ops: values that come from outside the graph (inputs, weights, KV caches, constants).

Their shape and format come from the declaration; the reference values come from the caller.
"""
from isa.lazy_numpy import np

from compiler.ir.ops import OpDef, register


def _from_feed(inputs, attrs):
    raise RuntimeError("source ops take their values from the evaluation's feeds")


def _declared(inputs, attrs):
    raise RuntimeError("a source's type is its declaration's; there is nothing to infer")


for _name, _doc in [("input", "a run-time input (tokens, activations)"),
                    ("weight", "a trained parameter"),
                    ("cache", "a KV cache: [sequences, positions, features...]")]:
    register(OpDef(_name, "source", 0, infer=_declared, reference=_from_feed, doc=_doc,
                   result="declared"))

register(OpDef(
    "const", "source", 0, infer=lambda ins, a: (),
    reference=lambda ins, a: np.float32(a["value"]),
    doc="a scalar immediate; broadcasts against tensors and costs no bytes",
    attrs={"value": 0.0}, result="fp32"))
