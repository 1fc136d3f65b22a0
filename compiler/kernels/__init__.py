"""What the passes and the lowering both know about kernels before any instruction exists.

    groups         which nodes run as one kernel (the fuse pass's tags), in launch order
    rows           the rows a row-wise kernel works on, and the reshapes that keep them
    operand_plan   how a GEMM's operands reach the matrix unit (formats, scales, conversions)
    epilogue       the ops fused after a GEMM, and the tiles they need
    gemm_estimate  the GEMM problem a group poses, and its estimated cycles
    gemm_tiles     the tiles a GEMM may take, and the cost estimate that ranks them
    schedule       launches into a schedule: equal kernels merged, repeated layers folded

The fuse and tile passes decide with these, the templates in compiler/lower/ lower by them,
and the micro-batch pass folds its schedule with them: one model of a kernel for all.
"""
