"""benchmarks/step_profile.py: each op of a traced training step is counted as the kind of
work it does, whichever path its layer took (direct, transposed, Winograd)."""
import os
import sys

import pytest

BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'benchmarks')
if BENCHMARKS_DIR not in sys.path:
    sys.path.insert(0, BENCHMARKS_DIR)

import step_profile  # noqa: E402

FORWARD, GRADIENT, GRAM, GRAM_GRADIENT, OTHER = step_profile.KINDS


@pytest.mark.parametrize('node_name, op_type, kind', [
    ('conv1_1/Relu', '_MklNativeFusedConv2D', FORWARD),          # fused conv, bias, ReLU
    ('conv3_2/Conv2DBackpropInput', '_MklNativeConv2DBackpropInput', FORWARD),  # transposed
    ('gradients/conv3_2/IdentityN_grad/Conv2DBackpropInput', '_MklNativeConv2DBackpropInput',
     GRADIENT),
    ('gradients/conv1_1/Conv2D_grad/MatMul', '_MklMatMul', GRADIENT),  # narrow matmul gradient
    ('conv4_2/GatherV2', 'GatherV2', FORWARD),   # Winograd
    ('conv4_2/MatMul_1', 'BatchMatMulV2', FORWARD),
    ('gradients/conv4_2/IdentityN_grad/transpose', 'Transpose', GRADIENT),
    ('conv4_2/add', 'AddV2', OTHER), ('conv4_2/Relu', 'Relu', OTHER),
    ('gradients/conv4_2/Relu_grad/ReluGrad', 'ReluGrad', OTHER),
    ('ArithmeticOptimizer/FoldTransposeIntoMatMul_MatMul_7', '_MklMatMul', GRAM),
    ('gradients/MatMul_3_grad/FoldTransposeIntoMatMul_MatMul', '_MklMatMul', GRAM_GRADIENT),
    ('AvgPool_2', '_MklNativeAvgPool', OTHER), ('Adam/update_input/ApplyAdam', 'ApplyAdam', OTHER)])
def test_kind_of(node_name, op_type, kind):
    assert step_profile.kind_of(node_name, op_type) == kind
