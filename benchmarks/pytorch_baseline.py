"""The same style-transfer iteration in PyTorch, for comparison with benchmark.py (issue 4).

A straightforward PyTorch loop with the course's costs on the same problem: the benchmark's
full-width VGG-19 with random weights (read with nst.weights.read_vgg_weights from the cached
file that benchmark.py writes), conv1_1 ... conv5_1 with average pooling, content at conv4_2,
the five style layers at 0.2, J = 10 J_content + 40 J_style, Adam with learning rate 2.0, at
400x300. It prints the median seconds per iteration over the timed iterations after warm-up.

PyTorch is not a dependency of the project: install it for this script only
(`pip install torch`; on our machines `pip install torch==2.13.0`, the CPU build on disk).

    python benchmarks/pytorch_baseline.py [--iterations 10] [--warmup 3]
"""

import argparse
import time

import numpy as np

from benchmark_problem import (DEFAULT_CACHE, WIDTH, art_generation, cli, config, initial_image,
                               load_images, read_weights, weights_file)

STYLE_LAYERS = art_generation.STYLE_LAYERS  # [(name, coefficient), ...]
CONTENT_LAYER = art_generation.CONTENT_LAYER


def vgg_activations(torch, image, weights, wanted):
    """Activations of the wanted layers for image (1, 3, H, W): relu(conv + b), 2x2 avg pools."""
    functional = torch.nn.functional
    found = {}
    current = image
    for name in config.VGG19_CONV_LAYERS:
        if name.endswith('_1') and name != 'conv1_1':
            # ceil_mode matches TensorFlow's SAME pooling on odd sizes (75 -> 38, 19 -> 10)
            current = functional.avg_pool2d(current, 2, ceil_mode=True)
        kernel, bias = weights[name]
        current = functional.relu(functional.conv2d(current, kernel, bias, padding=1))
        if name in wanted:
            found[name] = current
        if len(found) == len(wanted):
            return found
    return found


def gram(activations):
    _, channels, height, width = activations.shape
    unrolled = activations.reshape(channels, height * width)  # (1, C, H, W) -> (C, H*W)
    return unrolled @ unrolled.t()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--iterations', type=cli.positive_int, default=10,
                        help='timed iterations')
    parser.add_argument('--warmup', type=cli.non_negative_int, default=3,
                        help='untimed iterations first')
    parser.add_argument('--width', type=cli.positive_int, default=WIDTH,
                        help='image width; the height follows the content image')
    options = parser.parse_args()

    import torch

    style_names = {name for name, _ in STYLE_LAYERS}
    wanted = style_names | {CONTENT_LAYER}
    raw = read_weights(weights_file(DEFAULT_CACHE, with_fc=False))
    # MatConvNet (3, 3, in, out) -> PyTorch (out, in, 3, 3)
    weights = {name: (torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))),
                      torch.from_numpy(bias)) for name, (kernel, bias) in raw.items()}
    content_image, style_image = load_images(options.width)  # (1, H, W, 3), as benchmark.py
    _, height, width, _ = content_image.shape

    def to_torch(batch):  # (1, H, W, 3) -> (1, 3, H, W) float32
        return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2), np.float32))

    content, style = to_torch(content_image), to_torch(style_image)
    with torch.no_grad():
        a_C = vgg_activations(torch, content, weights, {CONTENT_LAYER})[CONTENT_LAYER]
        style_grams = {name: gram(a) for name, a in
                       vgg_activations(torch, style, weights, style_names).items()}

    image = to_torch(initial_image(content_image)).requires_grad_()
    optimizer = torch.optim.Adam([image], lr=2.0)

    def step():
        optimizer.zero_grad()
        layers = vgg_activations(torch, image, weights, wanted)
        a_G = layers[CONTENT_LAYER]
        _, channels, h, w = a_G.shape
        J_content = ((a_C - a_G) ** 2).sum() / (4.0 * h * w * channels)
        J_style = 0
        for name, coefficient in STYLE_LAYERS:
            _, channels, h, w = layers[name].shape
            residual = style_grams[name] - gram(layers[name])
            J_style = J_style + coefficient * (residual ** 2).sum() / (
                4.0 * channels ** 2 * float(h * w) ** 2)
        J = 10 * J_content + 40 * J_style
        J.backward()
        optimizer.step()
        return J.item()

    for _ in range(options.warmup):
        step()
    times = []
    for _ in range(options.iterations):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    print('PyTorch %s, %d threads, %dx%d: median %.3f s per iteration (min %.3f, max %.3f) '
          'over %d iterations' % (torch.__version__, torch.get_num_threads(), width, height,
                                  float(np.median(times)), min(times), max(times), len(times)))


if __name__ == '__main__':
    main()
