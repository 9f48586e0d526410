"""Estimate the peak memory of a run from the layer shapes, and read the memory available."""

import os

from nst.config import VGG19_BLOCK_DEPTHS, VGG19_CONV_LAYERS, VGG19_WIDTHS


def vgg_widths(weights):
    """The 5 block widths (output channels of conv1_1, conv2_1, ..., conv5_1) of read weights.

    A block whose weights were not read (see layers_needed) counts as wide as the one before,
    which errs on the safe side for the memory estimate.
    """
    widths = []
    for block in range(1, 6):
        name = 'conv%d_1' % block
        widths.append(int(weights[name][0].shape[3]) if name in weights else widths[-1])
    return tuple(widths)


def vgg_conv_sizes(height, width, widths=VGG19_WIDTHS):
    """Elements of each of the 16 conv outputs for one height x width image, in graph order.

    Block b (0-based) works at ceil(height / 2^b) x ceil(width / 2^b): each 2x2 stride-2 SAME
    pool rounds up. Returns [(elements, in_channels, out_channels), ...].
    """
    sizes = []
    channels = 3
    for block, (depth, out) in enumerate(zip(VGG19_BLOCK_DEPTHS, widths)):
        h, w = -(-height // 2 ** block), -(-width // 2 ** block)
        for _ in range(depth):
            sizes.append((h * w * out, channels, out))
            channels = out
    return sizes


# Constants of estimate_run_memory, calibrated against ru_maxrss (see its docstring).
_MEMORY_RUNTIME = 640 * 2 ** 20       # TensorFlow's libraries, thread pools and Python
# Extra copies of the largest activation while back-propagating: 4 (the Winograd layers'
# temporaries at half resolution take about one; the Gram gradients, which took another, wait
# for the backward pass since nst.fast_ops.defer_gram_gradients).
_MEMORY_BACKWARD_COPIES = 4
_MEMORY_IMAGE_COPIES = 17             # float32 copies of the image, plus 2 per style
_MEMORY_LBFGS_IMAGE_COPIES = 90       # L-BFGS-B's history (10 pairs, float64) and work arrays
_MEMORY_WEIGHT_COPIES = 4             # the weights: file read, feed, session variables


def estimate_run_memory(height, width, widths=VGG19_WIDTHS, styles=1, optimizer='adam'):
    """Estimate in bytes the peak memory of a style-transfer run at height x width.

    widths: the 5 block widths of the weights (VGG19_WIDTHS for the real file; vgg_widths()).
    With A_l the elements of conv output l (vgg_conv_sizes), B the elements of one conv output
    of each block (the course's style layers conv1_1 ... conv5_1), X = 3 * height * width the
    elements of the image and K the elements of the conv kernels and biases, all float32 (4 B):

        bytes = 4 * (sum(A_l)                  forward activations, kept for the ReLU gradients
                     + 4 * max(A_l)            gradients and temporaries at the largest layer
                     + (17 + 2 * styles) * X   the input variable, Adam's m and v, its gradient,
                                               fetched copies, the float64 content/style/noise
                                               arrays of the set-up (+ 90 X for L-BFGS-B)
                     + (styles - 1) * B        each further style's activations at the style
                                               layers, fetched by its pass (the first's are in
                                               the constants)
                     + 4 * K)                  the weights: as read, as fed, as session variables
                + 640 MiB                      TensorFlow's runtime

    Calibrated on 2 CPUs (TensorFlow 2.21, oneDNN) from the peak ru_maxrss of whole CLI runs
    (`/usr/bin/time -v python art_generation.py --model M --iterations 3 --width W
    --start-width W`: 3 Adam iterations in one stage, 4:3 content, one style, weights as
    session variables), in MiB; measured again with the Gram gradients deferred (AVX2 EPYC),
    but the real widths at 16 and 200 (before them, and before the Winograd layers):

        tiny widths (4, 8, 8, 16, 16)      real widths (64, 128, 256, 512, 512)
        width  measured  estimated         width  measured  estimated
          400       672        681            16       925        946
          800       787        802           200       928       1015
         1600      1248       1287           400      1006       1225
         3200      2838       3226           800      1754       2061
         4800      5873       6458          1200      2969       3456
                                          1600      4463       5406

    i.e. +1 .. +22 %, erring on the safe side (1920x1080, real widths: 5.49 GB measured by
    benchmarks/print_size.py, 6.04 GB estimated). More styles: tiny 3200 with 3, 3599
    measured, 3977 estimated; real 1600 with 3, 5842 / 7281; real 800 with 5, 2517 / 2999
    (each further style 190-380 MiB there: its activations, which the image copies alone,
    as calibrated before, missed). L-BFGS-B: tiny 3200, 10503 / 11136.
    Per pixel that is about 2.4 KB with the real widths besides the runtime and the weights
    (1.2 KB of it the activations).
    """
    sizes = vgg_conv_sizes(height, width, widths)
    activations = sum(elements for elements, _, _ in sizes)
    largest = max(elements for elements, _, _ in sizes)
    kernels = sum(9 * cin * cout + cout for _, cin, cout in sizes)
    style_layers = sum(elements for name, (elements, _, _) in zip(VGG19_CONV_LAYERS, sizes)
                       if name.endswith('_1'))  # conv1_1 ... conv5_1
    image_copies = _MEMORY_IMAGE_COPIES + 2 * styles
    if optimizer == 'lbfgs':
        image_copies += _MEMORY_LBFGS_IMAGE_COPIES
    image = 3 * height * width
    return (4 * (activations + _MEMORY_BACKWARD_COPIES * largest + image_copies * image
                 + (styles - 1) * style_layers + _MEMORY_WEIGHT_COPIES * kernels)
            + _MEMORY_RUNTIME)


# Float32 full-size copies of the picture a tiled stage holds beside its one-tile graph: the
# image, Adam's m and v, the gradient, Adam's temporaries (3), the previous image, a
# checkpoint's copies of m and v, and the content as float64 (2); plus 2 per style (float64).
_TILED_IMAGE_COPIES = 12


def content_cells(height, width, content_layer, widths=VGG19_WIDTHS):
    """Elements of the activations at content_layer ('conv4_2', 'avgpool3', ...) for one
    height x width image."""
    block = int(content_layer[len('avgpool'):] if content_layer.startswith('avgpool')
                else content_layer[4])  # 'conv4_2' -> 4
    factor = 2 ** (block if content_layer.startswith('avgpool') else block - 1)
    return -(-height // factor) * -(-width // factor) * widths[block - 1]


def estimate_tiled_memory(height, width, tile_height, tile_width, tiles, widths=VGG19_WIDTHS,
                          styles=1, content_layer='conv4_2'):
    """Estimate in bytes the peak memory of a height x width stage optimised in tiles of
    tile_height x tile_width: a run on one tile (estimate_run_memory), the full-size picture
    and Adam's state (_TILED_IMAGE_COPIES + 2 per style, float32) and the content targets of
    the tiles (float32 activations at content_layer, one set per tile)."""
    image = 3 * height * width
    targets = tiles * content_cells(tile_height, tile_width, content_layer, widths)
    return (estimate_run_memory(tile_height, tile_width, widths, styles)
            + 4 * ((_TILED_IMAGE_COPIES + 2 * styles) * image + targets))


def available_memory():
    """Bytes this process can still allocate: MemAvailable from /proc/meminfo, lowered to the
    room left under a cgroup (container) memory limit; os.sysconf where there is no /proc.
    None when it cannot be told."""
    available = None
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
        except (AttributeError, ValueError, OSError):
            pass
    room = _cgroup_room()
    if room is not None:
        available = room if available is None else min(available, room)
    return available


def _cgroup_room():
    """The room under this process's cgroup memory limit (v2, then v1), or None.

    The usage counts the page cache; its inactive part can be reclaimed, so it counts as room.
    """
    for limit_file, usage_file, stat_file, reclaimable in (
            ('memory.max', 'memory.current', 'memory.stat', 'inactive_file'),
            ('memory/memory.limit_in_bytes', 'memory/memory.usage_in_bytes',
             'memory/memory.stat', 'total_inactive_file')):
        try:
            with open(os.path.join('/sys/fs/cgroup', limit_file)) as f:
                limit = f.read().strip()
            with open(os.path.join('/sys/fs/cgroup', usage_file)) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit == 'max' or not limit.isdigit() or int(limit) >= 1 << 60:
            return None  # no limit
        try:
            with open(os.path.join('/sys/fs/cgroup', stat_file)) as f:
                for line in f:
                    key, _, value = line.partition(' ')
                    if key == reclaimable:
                        usage -= min(usage, int(value))
        except (OSError, ValueError):
            pass
        return max(0, int(limit) - usage)
    return None


def format_bytes(count):
    """1536 -> '1.5 KiB'; 123456789 -> '117.7 MiB'."""
    value = float(count)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'):
        if value < 1024 or unit == 'PiB':
            return ('%d %s' % (value, unit)) if unit == 'B' else ('%.1f %s' % (value, unit))
        value /= 1024
