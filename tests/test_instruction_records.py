"""One record per instruction: what the assembler, verifier, interpreter and functional run
need to know about an instruction is on its record, consistent with its operands."""
from __future__ import annotations

import pytest

from isa.instructions import INSTRUCTIONS, available, lookup, lookup_any
from isa.program import Attr, Box, Buf, Instr
from isa.target_loader import builtin_names, load_target
from isa.vector_ops import VECTOR_OPS
from runtime.functional import FunctionalError, semantics_of

KINDS = ("load", "store", "gather", "scatter", "mma", "vector", "quant", "order")


@pytest.mark.parametrize("name", builtin_names())
def test_every_instruction_a_target_offers_says_what_it_does(name):
    for d in available(load_target(name)):
        assert d.semantics in KINDS or d.kind == "send", d.mnemonic
        if d.semantics in ("vector", "quant"):
            assert d.computes_as in VECTOR_OPS and d.unit in ("vec", "fix"), d.mnemonic
        box_move = d.semantics in ("load", "store")
        assert box_move == ("box" in d.operands and d.kind in ("load", "store")), d.mnemonic
        assert semantics_of(d) if d.semantics else d.kind == "send"


def test_a_box_moves_between_its_buffer_and_its_tensor_whichever_way_round():
    load = Instr("vld.tile", (Buf("b"), Box("x", (0,), (4,))))
    store = Instr("fix.st", (Box("y", (0,), (4,)), Buf("c")))
    assert lookup_any("vld.tile").buffer_and_box(load) == (Buf("b"), Box("x", (0,), (4,)))
    assert lookup_any("fix.st").buffer_and_box(store) == (Buf("c"), Box("y", (0,), (4,)))
    add = Instr("vec.add", (Buf("a"), Buf("b"), Attr("n", 4), Attr("imm1", 1.0)))
    assert lookup_any("vec.add").buffer_and_box(add) is None


def test_what_a_target_must_offer():
    h800, ascend = load_target("h800"), load_target("ascend910b")
    for mnemonic in ("fix.st", "fix.cvt", "vld.tile", "vst.tile"):
        assert lookup(mnemonic, h800) is None and lookup(mnemonic, ascend) is not None
    assert lookup("fix.silu", ascend) is None                # its pipe does not list silu
    assert lookup("mm.mma", h800) is INSTRUCTIONS["mm.mma"]
    assert lookup("fix.st") is None and lookup_any("fix.st").offered_on(ascend)


def test_a_pipe_op_computes_as_its_vector_op():
    assert semantics_of(lookup_any("fix.bias")) is semantics_of(INSTRUCTIONS["vec.add"])
    assert semantics_of(lookup_any("fix.layout")) is semantics_of(INSTRUCTIONS["vec.cvt"])
    assert lookup_any("fix.quant").semantics == "quant"
    with pytest.raises(FunctionalError, match="'fix.frobnicate' has no functional semantics"):
        semantics_of(lookup_any("fix.frobnicate"))


def test_vector_operands_come_from_the_vector_op():
    assert INSTRUCTIONS["vec.add"].operands == ("buf", "buf", "buf?")      # or imm1
    assert INSTRUCTIONS["vec.topk"].operands == ("buf", "buf", "buf?")     # optional bias
    assert INSTRUCTIONS["vec.online_softmax"].operands == ("buf",) * 5
    assert INSTRUCTIONS["vec.rope"].optional_attrs == VECTOR_OPS["rope"].attrs
