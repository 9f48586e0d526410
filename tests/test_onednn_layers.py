"""benchmarks/onednn_layers.py: oneDNN's verbose lines are read into per-shape calls, and each
VGG layer finds its forward pass whichever path it took (a forward convolution, or the
backward-data convolution of the rotated kernel, channels swapped)."""
import os
import sys

BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'benchmarks')
if BENCHMARKS_DIR not in sys.path:
    sys.path.insert(0, BENCHMARKS_DIR)

import onednn_layers  # noqa: E402

PREFIX = 'onednn_verbose,v1,primitive,exec,cpu,'


def conv_line(kind, implementation, c_in, c_out, height, width, ms):
    shape = ('mb1_ic%doc%d_ih%doh%dkh3sh1dh0ph1_iw%dow%dkw3sw1dw0pw1'
             % (c_in, c_out, height, height, width, width))
    return (PREFIX + 'convolution,%s,%s,src:f32 dst:f32,attr-scratchpad:user,'
            'alg:convolution_direct,%s,%s' % (implementation, kind, shape, ms))


def test_parse_verbose_groups_convolutions_by_direction_and_shape():
    text = '\n'.join([
        'some other output',
        conv_line('forward_training', 'jit:avx2', 3, 64, 300, 400, 2.5),
        conv_line('forward_training', 'jit:avx2', 3, 64, 300, 400, 3.5),
        conv_line('backward_data', 'brg', 64, 3, 300, 400, 7.0),
        PREFIX + 'reorder,jit:uni,undef,src:f32 dst:f32,,,64x3x3x3,0.25',
        PREFIX + 'reorder,jit:blk,undef,src:f32 dst:f32,,,1x64x300x400,1.5',
        PREFIX + 'gemm_api,,undef,src_f32 wei_f32 dst_f32,,,64x120000:120000x64,9.0',
        'onednn_verbose,v1,primitive,create:cache_miss,cpu,reorder,jit:uni,undef,,,,,0.1'])
    convolutions, others = onednn_layers.parse_verbose(text)
    assert convolutions == {('forward', 3, 64, 300, 400): [('jit:avx2', 2.5), ('jit:avx2', 3.5)],
                            ('backward_data', 64, 3, 300, 400): [('brg', 7.0)]}
    assert others == {'reorder': 1.75, 'gemm_api': 9.0}


def test_layer_table_finds_the_forward_pass_of_either_path():
    ours = {('forward', 3, 64, 300, 400): [('gemm', 4.0)],             # conv1_1 direct
            ('backward_data', 64, 64, 300, 400): [('brg', 50.0), ('brg', 60.0)],
            ('backward_data', 128, 64, 150, 200): [('brg', 30.0)],     # conv2_1 transposed
            ('backward_data', 64, 128, 150, 200): [('brg', 20.0)]}     # conv2_1 gradient
    torch = {('forward', 64, 128, 150, 200): [('jit', 25.0)]}
    rows, per_step = onednn_layers.layer_table(ours, torch, 300, 400)
    by_layer = {row[0]: row for row in rows}
    assert [row[0] for row in rows][-1] == 'conv5_1' and len(rows) == 13
    assert by_layer['conv1_1'][2:6] == ('4.0', '-', '-', '-')
    assert by_layer['conv1_2'][2:4] == ('55.0', '55.0')  # one shape for both directions
    assert by_layer['conv2_1'][1:6] == ('150x200 64->128', '30.0', '20.0', '25.0', '-')
    assert by_layer['conv3_1'][1] == '75x100 128->256'
    assert by_layer['conv4_1'][1] == '38x50 256->512'  # 75 rows pool to 38 (SAME)
    assert per_step == {'ours': 4.0 + 55.0 + 55.0 + 30.0 + 20.0, 'torch': 25.0}
